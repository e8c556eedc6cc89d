"""The alert workers: spikes of the `alert_watch` labels from `feeds.labeled` to `alerts.sentiment`.

Two agents. `fan_out` reads labeled items and re-keys one small event per alert key (source,
topic label, configured `meta` fields) onto an internal topic, so every key's events land
on one partition. `detect` keeps each key's window counts and baseline in a changelogged
table (restored after a restart) and publishes alerts. A timer sends a tick to every
partition so windows of keys that went quiet still close, and keys idle for
`alert_idle_windows` are dropped from the table, so it holds the live keys only.

Nothing read is trusted: every labeled record, keyed event and restored state is validated
once (streams.alerts.records); what fails goes to the dead-letter topic with its original
bytes and the reason in headers. A record stamped more than `alert_max_skew_s` ahead of the
clock (or with no usable time) counts at its arrival time and moves no clock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import Message, TopicT
from prometheus_client import CollectorRegistry

from streams.alerts.records import (
    INVALID_ALERT_EVENT,
    INVALID_ALERT_STATE,
    INVALID_LABELED_RECORD,
    KeyedItem,
    StateCodec,
    Tick,
    encode_item,
    parse_event,
    parse_labeled,
    state_bytes,
    state_error,
    trusted_event_time,
)
from streams.alerts.spike_detector import (
    SENTIMENTS,
    SpikeDetector,
    SpikeSettings,
    WindowResult,
    item_keys,
    new_state,
)
from streams.alerts.watermarks import SourceWatermarks
from streams.kafka.records import (
    DLQ_HEADER_PREFIX,
    Headers,
    dead_letter_headers,
    dead_letter_record,
)
from streams.kafka.topics import output_max_bytes
from streams.label_pairs import parse_pairs
from streams.messages import MAX_ID_CHARS, Origin, Rejection
from streams.metrics import AlertMetrics, KeyLabels
from streams.settings import Settings

log = logging.getLogger(__name__)

STAGE = "alerts"  # the `stage` header of this app's dead letters
TICK = b'{"tick":true}'
STATE_TABLE = "spike-state"


@dataclass(frozen=True)
class _Topics:
    """Where the handlers write, and the changelog their state is restored from."""

    keyed: TopicT
    alerts: TopicT
    dlq: TopicT
    state: str = STATE_TABLE


def spike_settings(settings: Settings) -> SpikeSettings:
    """The detector's knobs from the settings object."""
    return SpikeSettings(
        window_s=settings.alert_window_s,
        hops=settings.alert_hops,
        threshold=settings.alert_threshold,
        critical=settings.alert_critical,
        min_volume=settings.alert_min_volume,
        warmup_windows=settings.alert_warmup_windows,
        cooldown_windows=settings.alert_cooldown_windows,
        watch=parse_pairs(settings.alert_watch),
    )


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Broker URL and credentials for faust, from the same settings every client uses."""
    urls = [f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")]
    options: dict[str, Any] = {"broker": urls}
    ssl_context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context,
        )
    elif ssl_context is not None:
        options["broker_credentials"] = faust.SSLCredentials(ssl_context)
    return options


def _new_app(settings: Settings, datadir: str | Path | None) -> faust.App:
    # faust reads APP_DATADIR from the environment before this argument (tests point it at
    # a temporary folder); without either it writes `<app id>-data` in the working folder.
    extra: dict[str, Any] = {} if datadir is None else {"datadir": str(datadir)}
    return faust.App(
        settings.alert_app_id,
        **faust_broker_options(settings),
        **extra,
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        # faust's 30 s defaults make every group join slow; Kafka-protocol brokers accept 10 s.
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        producer_acks=-1,
        # A dead letter carries a labeled record's bytes: as large as feedpulse writes one.
        producer_max_request_size=output_max_bytes(settings),
        web_enabled=False,
    )


class _AlertHandlers:
    """What the agents and the timer do per message, over the state they share.

    Every input is validated here, once (streams.alerts.records): a record that fails goes
    to the dead-letter topic with its original bytes and is never raised into an agent.
    """

    def __init__(
        self,
        settings: Settings,
        detector: SpikeDetector,
        metrics: AlertMetrics,
        topics: _Topics,
        state: MutableMapping[str, Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.metrics = metrics
        self.keyed, self.alerts, self.dlq = topics.keyed, topics.alerts, topics.dlq
        self.state_topic = topics.state
        self.state = state
        self.clock = clock
        self.meta_fields = tuple(settings.alert_key_fields)
        self.max_bytes = output_max_bytes(settings)
        self.idle_s = settings.alert_idle_windows * settings.alert_window_s
        # Event time per partition of the keyed topic, held back by its slowest input
        # partition (streams.alerts.watermarks). A partition's keys are closed by its own
        # watermark, never by another partition's time or one fast source's.
        self.clocks = SourceWatermarks(settings.alert_source_idle_s, clock)
        self.watermarks = self.clocks.values
        # The state objects this process validated or wrote, by key: a state is validated
        # once, when first read back from the table, not on every item.
        self.checked: dict[str, Any] = {}
        self._bad_state_logged = False

    def forget_checked(self) -> None:
        """After a rebalance the table may hold values restored from the changelog again."""
        self.checked.clear()

    async def fan_out(self, message: Message) -> None:
        """Re-key one labeled record as one event per alert key; dead-letter it if invalid."""
        metrics = self.metrics
        metrics.records.inc()
        record = parse_labeled(message.value, self.max_bytes)
        if isinstance(record, str):
            metrics.unreadable.inc()
            await self._dead_letter(message, INVALID_LABELED_RECORD, record)
            return
        now = self.clock()
        ts = trusted_event_time(record.input.timestamp_ms, now, self.settings.alert_max_skew_s)
        if ts is None:
            metrics.future_timestamps.inc()
        sentiment = record.sentiment
        if sentiment is not None and sentiment not in SENTIMENTS:
            sentiment = "other"  # bounded label values
        pairs = record.carried(self.detector.settings.watch)
        for key in item_keys(record.key_fields(), self.meta_fields):
            metrics.watched.item(metrics.keys.label(key), sentiment, pairs)
            item = KeyedItem(
                key=key,
                ts=now if ts is None else ts,
                w=[pair.slot for pair in pairs],
                id=record.id,
                v=record.model_version,
                arrival=ts is None,
                src=record.source_name,
            )
            await self.keyed.send(key=key.encode(), value=encode_item(item))

    async def detect(self, message: Message) -> None:
        """One event of the keyed topic: a tick closes due windows, an item is counted."""
        event = parse_event(message.value)
        if isinstance(event, KeyedItem) and (
            not event.arrival and event.ts > self.clock() + self.settings.alert_max_skew_s
        ):
            # fan_out never writes such a time; whoever did must not move the watermark.
            event = f"ts {event.ts} is more than alert_max_skew_s ahead of the clock"
        if isinstance(event, str):
            await self._dead_letter(message, INVALID_ALERT_EVENT, event)
        elif isinstance(event, Tick):
            await self._close_due_windows(message.partition)
        else:
            await self._count(message.partition, event)

    async def tick(self) -> None:
        """Send a tick to every partition of the keyed topic."""
        for partition in range(self.settings.topic_partitions):
            await self.keyed.send(value=TICK, partition=partition)

    async def _close_due_windows(self, partition: int) -> None:
        """Close the due windows of the partition's keys, then evict its idle keys.

        Runs on every tick and walks the whole table: eviction is what keeps that cheap.
        """
        watermark = self.clocks.current(partition)
        if watermark is None:
            return
        cutoff = watermark - self.settings.alert_grace_s
        # Idle keys have every window closed first: their newest slot ended before `cutoff`.
        idle_before = min(watermark - self.idle_s, cutoff - self.detector.hop_s)
        for key, value in list(self.state.items()):
            key_state = await self._valid_state(key, value)  # drops it if malformed
            if key_state is None or key_state.get("partition") != partition:
                continue
            results = self.detector.close_if_before(key_state, key, cutoff)
            for result in results:
                await self._publish(result)
            newest = self.detector.newest_time(key_state)
            if newest is None or newest < idle_before:
                self._delete(key)
                self.metrics.keys_evicted.inc()
            elif results:
                self.state[key] = key_state
        self.metrics.keys_held.set(len(self.state))

    async def _count(self, partition: int, item: KeyedItem) -> None:
        metrics = self.metrics
        key = item.key
        key_state = await self._valid_state(key, self.state.get(key)) or new_state()
        key_state["partition"] = partition
        watermark = None
        if not item.arrival:
            watermark = self.clocks.observe(partition, item.src or "", item.ts)
            metrics.watermark.set(self.clocks.lowest() or watermark)
        args = (key_state, key, item.ts, item.slots, item.id, item.v)
        closed, counted = self.detector.add(*args, advance=not item.arrival, watermark=watermark)
        metrics.key_updates.inc()
        if not counted:
            metrics.late.inc()
        self.state[key] = key_state
        self.checked[key] = key_state
        for result in closed:
            await self._publish(result)

    async def _valid_state(self, key: str, value: Any) -> dict[str, Any] | None:
        """The key's state if well-formed; a malformed one is dropped and dead-lettered."""
        if value is None or self.checked.get(key) is value:
            return value  # type: ignore[no-any-return]
        error = state_error(value)
        if error is None:
            self.checked[key] = value
            return value  # type: ignore[no-any-return]
        # Once in the log, every time in the metric: a corrupt changelog can hold many.
        if not self._bad_state_logged:
            log.warning("dropping a malformed alert state (key %.200r): %s", key, error)
            self._bad_state_logged = True
        partition = value.get("partition") if isinstance(value, dict) else None
        origin = Origin(self.state_topic, partition if isinstance(partition, int) else -1, -1)
        # The key came back from the changelog too: whatever it is, it must not raise here.
        name = str(key).encode(errors="backslashreplace")
        rejection = Rejection(
            name[:MAX_ID_CHARS].decode(errors="replace"), INVALID_ALERT_STATE, error, origin
        )
        headers = [*dead_letter_headers(rejection, STAGE), (DLQ_HEADER_PREFIX + "rebuilt", b"true")]
        await self._send_dead_letter(name, state_bytes(value), headers, rejection.reason)
        self._delete(key)
        return None

    def _delete(self, key: str) -> None:
        del self.state[key]  # on the faust table: a tombstone on the changelog
        self.checked.pop(key, None)

    async def _dead_letter(self, message: Message, reason: str, error: str) -> None:
        ts_ms = int(message.timestamp * 1000) if message.timestamp else None
        origin = Origin(message.topic, message.partition, message.offset, message.key, ts_ms)
        rejection = Rejection(origin.derived_id, reason, error, origin)
        key, value, headers = dead_letter_record(
            rejection, message.key, message.value, STAGE, self.settings.max_message_bytes
        )
        await self._send_dead_letter(key, value, headers, reason)

    async def _send_dead_letter(
        self, key: bytes | None, value: bytes | None, headers: Headers, reason: str
    ) -> None:
        await self.dlq.send(key=key, value=value, headers=headers)
        self.metrics.dead_lettered.labels(reason=reason).inc()

    async def _publish(self, result: WindowResult) -> None:
        metrics = self.metrics
        metrics.windows_closed.inc()
        label = metrics.keys.current(result.key)
        for pair, score in result.scores.items():
            metrics.watched.scored(label, pair, round(score, 3))
        for alert in result.alerts:
            doc = alert.to_json()
            await self.alerts.send(key=alert.key.encode(), value=json.dumps(doc).encode())
            metrics.watched.fired(alert.severity, alert.pair)
            log.warning("%s spike: %s", alert.pair.task, json.dumps(doc))


def build_alert_app(
    settings: Settings, registry: CollectorRegistry, datadir: str | Path | None = None
) -> faust.App:
    """The faust app with its topics, table, agents and timer, wired to `settings`."""
    detector = SpikeDetector(spike_settings(settings), grace_s=settings.alert_grace_s)
    metrics = AlertMetrics(registry, KeyLabels(settings.alert_metric_keys))
    metrics.threshold.set(settings.alert_threshold)
    app = _new_app(settings, datadir)
    labeled = app.topic(
        settings.output_topic, key_serializer="raw", value_serializer="raw", allow_empty=True
    )
    # Raw, parsed by the handlers: with faust's json serializer a value that is not JSON
    # raises inside faust, which acks the record and throws into the agent - dropped
    # without a trace, and the agent restarted.
    keyed = app.topic(
        f"{settings.alert_app_id}-keyed",
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        internal=True,
        allow_empty=True,
    )
    alerts = app.topic(settings.alerts_topic, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    state = app.Table(
        STATE_TABLE,
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer=StateCodec()),
    )
    topics = _Topics(keyed, alerts, dlq, f"{settings.alert_app_id}-{STATE_TABLE}-changelog")
    handlers = _AlertHandlers(settings, detector, metrics, topics, state)

    # Closures, as faust names agents after them; events, not values: a dead letter needs
    # the original bytes, key and position.
    @app.agent(labeled)
    async def fan_out(stream: Any) -> None:
        async for event in stream.events():
            await handlers.fan_out(event.message)

    @app.agent(keyed)
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            await handlers.detect(event.message)

    @app.timer(interval=settings.alert_tick_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        await handlers.tick()

    # The CLI creates the topics it reads; the dead-letter topic is created here, at start,
    # so that the first dead letter does not wait on a topic that does not exist yet.
    @app.task  # type: ignore[untyped-decorator]
    async def declare_dead_letters() -> None:
        await dlq.maybe_declare()

    def forget_checked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        handlers.forget_checked()

    # Partitions that come back are restored from the changelog: validate their states again.
    app.on_partitions_revoked.connect(forget_checked)
    app.on_partitions_assigned.connect(forget_checked)
    return app
