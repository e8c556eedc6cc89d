"""Watching and improving the model (drift, online learning, fine-tuning jobs).

Nothing about Kafka lives here. The spine ships no online component yet; the
online-learning issue fills this package.
"""
