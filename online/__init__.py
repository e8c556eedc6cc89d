"""Watching and improving the model, nothing about Kafka: drift detectors, the feedback
join, the hybrid head, job policy, jobs and the trainer's logic. May import `serving`."""
