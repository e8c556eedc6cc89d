"""Everything model-side and nothing about Kafka: the classifier contract, backends, export."""
