"""Spike alerts on watched labels: the faust app on `feeds.labeled` and its detector.

Imports the settings and metrics only; faust talks to Kafka itself."""
