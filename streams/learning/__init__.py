"""The Kafka side of online learning: the model-watch and trainer workers, training runs.

Wraps `online` (drift, jobs, trainer logic) and `serving.training` in consumers and producers."""
