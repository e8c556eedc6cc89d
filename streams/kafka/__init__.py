"""Kafka plumbing every worker shares: client options, group consumers, topics, records,
the embedded broker, publish and tail. Imports the settings and message schemas, and from
`serving` only the backend contract and the process helper."""
