"""Everything model-side and nothing about Kafka: backends, Triton, training, export.

Imports neither `streams` nor `online`."""
