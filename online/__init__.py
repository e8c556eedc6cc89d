"""Watching and improving the model, nothing about Kafka: drift detectors, the feedback
join, the hybrid head, job policy, jobs, the trainer's logic and the model watch that
combines them. May import `serving`, never `streams`."""
