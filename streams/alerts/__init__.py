"""Sentiment spike alerts: the faust app on `feeds.labeled` and the detector it runs.

Uses `streams.kafka` and the settings; nothing here imports `serving` or `online`."""
