"""The classify worker: consume -> validate -> micro-batch -> classify -> deliver -> commit.

Uses `streams.kafka` and the `serving` backends; knows nothing of alerts or learning."""
