"""Sentiment spike alerts: the faust app on `feeds.labeled` and the detector it runs.

Imports the settings and metrics only; faust talks to Kafka itself."""
