"""Kafka plumbing every worker shares: client options, group consumers, topics, records,
the embedded broker, publish and tail. Imports only `streams.settings` and `serving`'s contract."""
