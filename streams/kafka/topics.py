"""Topic administration: create the pipeline's topics when they are missing."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.kafka.clients import kafka_client_options
from streams.settings import Settings

log = logging.getLogger(__name__)
TOPIC_EXISTS = TopicAlreadyExistsError.errno
# Room for the JSON envelope and headers on top of the largest accepted input.
OUTPUT_OVERHEAD_BYTES = 64 * 1024


def output_max_bytes(settings: Settings) -> int:
    """The largest record feedpulse writes: an input at the size limit plus its envelope."""
    return settings.max_message_bytes + OUTPUT_OVERHEAD_BYTES


def jobs_record_limit(settings: Settings) -> int:
    """The largest fine-tuning job record: the watch's jobs plus their envelope."""
    return settings.jobs_max_bytes + OUTPUT_OVERHEAD_BYTES


def topic_limits(settings: Settings) -> dict[str, int]:
    """`max.message.bytes` of the topics feedpulse writes records larger than Kafka's default to."""
    out = output_max_bytes(settings)
    return {
        settings.output_topic: out,
        settings.dlq_topic: out,
        settings.jobs_topic: jobs_record_limit(settings),
    }


def pipeline_topics(settings: Settings) -> list[str]:
    """The topics the classify path reads and writes."""
    return [settings.input_topic, settings.output_topic, settings.dlq_topic]


async def ensure_topics(settings: Settings, topics: Iterable[str]) -> list[str]:
    """Create each missing topic with the configured partitions; return the ones created."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        if not wanted:
            return []
        # Topics we write large records to must take them (Kafka's default limit is ~1 MB).
        limits = topic_limits(settings)
        response = await admin.create_topics(
            [
                NewTopic(
                    t,
                    settings.topic_partitions,
                    settings.topic_replication,
                    topic_configs={"max.message.bytes": str(limits[t])} if t in limits else {},
                )
                for t in wanted
            ]
        )
        created = []
        for topic, code, message in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TOPIC_EXISTS:  # a concurrent worker may have won the race
                raise RuntimeError(f"cannot create topic {topic!r}: error {code} {message}")
        if created:
            log.info("created topics %s (%d partitions)", created, settings.topic_partitions)
        return created
    finally:
        await admin.close()
