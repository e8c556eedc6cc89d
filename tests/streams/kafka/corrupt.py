"""Put a batch no client can decode onto a real broker, sent raw in a ProduceRequest:
- "crc": a v2 record batch built with aiokafka's own builder, one payload byte flipped
  after the CRC was computed (a batch corrupted on disk or on the wire);
- "zstd": a batch whose attributes say zstd but whose payload is garbage, with a correct
  CRC (a producer's codec bug): the consumer fails to decompress it.
Tansu 0.6 stores both as sent (measured: error_code 0 for each)."""

from __future__ import annotations

import struct
from typing import Literal

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from streams.kafka.clients import kafka_client_options
from streams.settings import Settings

Kind = Literal["crc", "zstd"]
ZSTD = 4
RECORDS_AT = 61  # v2 batch header size: the records (or compressed payload) follow


def built_batch(codec: int, records: int) -> bytearray:
    """A well-formed v2 record batch of `records` JSON values in `codec` (0: none)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(records):
        value = b'{"id": "corrupt-%d", "text": "never readable"}' % i
        builder.append(i, timestamp=1_700_000_000_000 + i, key=None, value=value, headers=[])
    return bytearray(builder.build())


def corrupt_batch(kind: Kind = "crc", records: int = 3) -> bytes:
    """A record batch of `records` records that no client can decode."""
    if kind == "crc":
        data = built_batch(0, records)
        data[-5] ^= 0xFF  # inside the last record's value: covered by the CRC
        return bytes(data)
    data = built_batch(ZSTD, records)[:RECORDS_AT] + bytes(range(7, 71))  # no zstd frame
    struct.pack_into(">i", data, 8, len(data) - 12)  # batch length
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))  # a correct CRC
    return bytes(data)


async def produce_corrupt_batch(
    settings: Settings, topic: str, partition: int, kind: Kind = "crc"
) -> int:
    """Append a corrupt batch to `topic`/`partition`; returns its base offset.

    Raises AssertionError with the broker's answer if it refuses the batch.
    """
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        await producer.partitions_for(topic)  # metadata: who leads the partition
        node = producer.client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(
            transactional_id=None,
            required_acks=-1,
            timeout=10_000,
            topics=[(topic, [(partition, corrupt_batch(kind))])],
        )
        response = await producer.client.send(node, request)
    finally:
        await producer.stop()
    ((_, partitions),) = response.topics
    (answer,) = partitions
    _, error_code, offset, *_ = answer
    assert error_code == 0, f"broker refused the corrupt batch: {response}"
    return int(offset)
