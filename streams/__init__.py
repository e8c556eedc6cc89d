"""Everything that touches Kafka: the classify, alert and learning workers, the CLI.

May import `serving` and `online`; neither of them ever imports `streams`."""
