"""Everything that touches Kafka: settings, schemas, topics, the classify worker, the CLI."""
