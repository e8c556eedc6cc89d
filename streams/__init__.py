"""Everything that touches Kafka: the classify, alert and learning workers, the CLI.

May import `serving` and `online`; nothing else in feedpulse imports `streams`."""
