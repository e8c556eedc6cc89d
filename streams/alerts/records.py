"""What the alert app reads, validated once where it enters (pydantic v2).

Three kinds of input, none of them trusted: labeled documents from `feeds.labeled` (any
producer can write there), events on the app's own keyed topic (an internal topic is still
a topic anyone with access can write to), and key states read back from the table after a
restart (the changelog is a topic too). A record that fails is a reason and an error text,
never an exception in an agent: the app dead-letters it and goes on.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal, NotRequired

from faust.serializers.codecs import Codec
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)

# pydantic reads TypedDicts from typing_extensions only, before Python 3.12.
from typing_extensions import TypedDict

from streams.label_pairs import LEGACY_TASK, MAX_PAIRS, WatchPair
from streams.messages import MAX_ID_CHARS

# Dead-letter reasons of the alert app (stable strings: metric labels, DLQ headers).
INVALID_LABELED_RECORD = "invalid_labeled_record"
INVALID_ALERT_EVENT = "invalid_alert_event"
INVALID_ALERT_STATE = "invalid_alert_state"
ALERT_REASONS = (INVALID_LABELED_RECORD, INVALID_ALERT_EVENT, INVALID_ALERT_STATE)

# A table value whose changelog bytes were not JSON: kept (base64) so it can be dead-lettered.
UNREADABLE_STATE = "unreadable_state"
MAX_ERROR_CHARS = 1000
MAX_TOPIC_CHARS = 249  # Kafka's limit on a topic name

# Strict: "12" is not a number and 1 is not a string. Unknown fields are ignored: the
# labeled document carries much the alert app does not read (text, scores, embedding).
_STRICT = ConfigDict(strict=True, extra="ignore")
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Name = Annotated[str, StringConstraints(max_length=200)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


LabelName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TaskName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_TASK_LABELS = 1000  # labels one multi-label task may give an item (bounds the work)
MAX_TASKS = 64
SlotName = Annotated[str, StringConstraints(min_length=1, max_length=2 * 64 + 1)]


class _TaskLabels(BaseModel):
    """One task's part of `labels`, in either shape serving writes (TaskPrediction.document)."""

    model_config = _STRICT
    label: LabelName | None = None  # a multi-class task: its one label
    # A multi-label task: the labels over their thresholds (possibly none).
    labels: Annotated[list[LabelName], Field(max_length=MAX_TASK_LABELS)] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> _TaskLabels:
        if (self.label is None) == (self.labels is None):
            raise ValueError("a task gives either `label` (multi-class) or `labels` (multi-label)")
        return self

    def carries(self, label: str) -> bool:
        """Whether the task gave the item `label`."""
        return self.label == label if self.labels is None else label in self.labels


class _Input(BaseModel):
    model_config = _STRICT
    # Any number, NaN and out-of-range included: an unusable time is not a reason to drop
    # the item; the app counts it at its arrival time instead (see `trusted_event_time`).
    timestamp_ms: float
    # Where the item was read from: the source whose pace holds the watermark back. Read
    # leniently: a document without a usable position still counts, as one unknown source.
    topic: Any = None
    partition: Any = None


class _Model(BaseModel):
    model_config = _STRICT
    version: Name | None = None


class LabeledRecord(BaseModel):
    """The part of a `feeds.labeled` document the alert app reads."""

    model_config = _STRICT
    id: Id
    # Per task. A task may be missing (a model without that head): the item still counts in
    # its keys' volume, for none of that task's labels.
    labels: Annotated[dict[TaskName, _TaskLabels], Field(max_length=MAX_TASKS)]
    input: _Input
    source: Name | None = None
    meta: dict[str, Any] | None = None
    model: _Model | None = None

    @property
    def sentiment(self) -> str | None:
        """The sentiment label the classifier gave the item (None: no multi-class sentiment)."""
        part = self.labels.get(LEGACY_TASK)
        return part.label if part is not None else None

    def carried(self, pairs: Iterable[WatchPair]) -> list[WatchPair]:
        """The watched pairs this item counts toward (none for a task it lacks)."""
        found = []
        for pair in pairs:
            part = self.labels.get(pair.task)
            if part is not None and part.carries(pair.label):
                found.append(pair)
        return found

    @property
    def source_name(self) -> str | None:
        """The input partition the item was read from ("topic:partition"), if stated."""
        topic, partition = self.input.topic, self.input.partition
        if not isinstance(topic, str) or len(topic) > MAX_TOPIC_CHARS:
            return None
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            return None
        return f"{topic}:{partition}"

    @property
    def model_version(self) -> str | None:
        """The model version that labeled the item, if the document says."""
        return self.model.version if self.model is not None else None

    def key_fields(self) -> dict[str, Any]:
        """The fields alert keys are derived from, shaped as `item_keys` reads them."""
        topic = self.labels.get("topic")
        label = topic.label if topic is not None else None
        return {
            "source": self.source,
            "labels": {"topic": {"label": label}} if label is not None else {},
            "meta": self.meta,
        }


class Tick(BaseModel):
    """A timer tick on one partition of the keyed topic: close that partition's due windows."""

    model_config = ConfigDict(strict=True, extra="forbid")
    tick: Literal[True]


class KeyedItem(BaseModel):
    """One labeled item for one alert key on the keyed topic."""

    model_config = ConfigDict(strict=True, extra="forbid")
    key: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    ts: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    # The watched pairs the item counts toward, by their slots (streams.label_pairs); none:
    # it counts in its key's volume only.
    w: Annotated[list[SlotName], Field(max_length=MAX_PAIRS)] = []
    # Events written before the pairs were configurable name the item's sentiment here.
    s: SlotName | None = None
    id: Id
    v: Name | None = None
    # True when `ts` is the arrival time that stands in for an untrusted record timestamp:
    # the item is counted, but moves neither the key's clock nor the partition's watermark.
    arrival: bool = False
    # The input partition it was read from (see streams.alerts.watermarks); None: unknown.
    src: Annotated[str, StringConstraints(max_length=MAX_TOPIC_CHARS + 12)] | None = None

    @property
    def slots(self) -> list[str]:
        """The slots the item counts toward, whichever way its event names them."""
        return list(self.w) if self.s is None else [*self.w, self.s]


def _event_kind(value: Any) -> str:
    return "tick" if isinstance(value, dict) and "tick" in value else "item"


# Told apart by the `tick` field, so an item's error text is about items only.
_EVENT: TypeAdapter[Tick | KeyedItem] = TypeAdapter(
    Annotated[
        Annotated[Tick, Tag("tick")] | Annotated[KeyedItem, Tag("item")],
        Discriminator(_event_kind),
    ]
)

Count = Annotated[int, Field(ge=0)]
Samples = dict[str, list[Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]]]
SlotKey = Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,20}$")]


@with_config(ConfigDict(strict=True))
class _Slot(TypedDict):
    counts: dict[str, Count]
    samples: Samples
    # Items in the slot; a state written before pairs were configurable has none (its
    # counts then hold every sentiment class, so their sum is the volume).
    volume: NotRequired[Count]


@with_config(ConfigDict(strict=True))
class _History(TypedDict):
    slot: int
    counts: dict[str, Count]
    samples: Samples
    volume: NotRequired[Count]


@with_config(ConfigDict(strict=True))
class _Baseline(TypedDict):
    mean: FiniteFloat
    var: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    n: Count


@with_config(ConfigDict(strict=True))
class KeyState(TypedDict):
    """A key's detector state as the table holds it (see `spike_detector.new_state`)."""

    open: dict[SlotKey, _Slot]
    last: int | None
    max_ts: FiniteFloat | None
    history: list[_History]
    model_version: str | None
    baseline: dict[str, _Baseline]
    cooldown_until: int
    partition: NotRequired[int]


_STATE: TypeAdapter[KeyState] = TypeAdapter(KeyState)


def describe(exc: ValidationError) -> str:
    """A short error text for a dead letter: where and what, never the (untrusted) input."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)[:5]
    ]
    more = exc.error_count() - len(parts)
    text = "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    return text[:MAX_ERROR_CHARS]


def parse_labeled(value: bytes | None, max_bytes: int) -> LabeledRecord | str:
    """The labeled record in `value`, or why it cannot be read (an error text)."""
    if value is None:
        return "null value (a tombstone is not a labeled record)"
    if len(value) > max_bytes:
        return f"{len(value)} bytes exceeds the {max_bytes}-byte limit"
    try:
        return LabeledRecord.model_validate_json(value)
    except ValidationError as exc:
        return describe(exc)


def parse_event(value: bytes | None) -> Tick | KeyedItem | str:
    """A tick or an item of the keyed topic, or why it cannot be read (an error text)."""
    if value is None:
        return "null value"
    try:
        return _EVENT.validate_json(value)
    except ValidationError as exc:
        return describe(exc)


def encode_item(item: KeyedItem) -> bytes:
    """The keyed topic's value for one item (compact JSON; `arrival` only when set)."""
    return item.model_dump_json(exclude_defaults=True).encode()


def state_error(value: Any) -> str | None:
    """None when `value` is a well-formed key state, else what is wrong with it."""
    if isinstance(value, dict) and UNREADABLE_STATE in value:
        return "changelog value is not JSON"
    try:
        _STATE.validate_python(value)
    except ValidationError as exc:
        return describe(exc)
    return None


def state_bytes(value: Any) -> bytes:
    """A dropped state as bytes for its dead letter: the changelog bytes if it had any."""
    if isinstance(value, dict) and isinstance(value.get(UNREADABLE_STATE), str):
        try:
            return base64.b64decode(value[UNREADABLE_STATE])
        except ValueError:
            pass
    return json.dumps(value, default=repr).encode()


def trusted_event_time(timestamp_ms: float, now: float, max_skew_s: float) -> float | None:
    """The record's event time in seconds if it can be trusted, else None.

    Not trusted: NaN or infinite, before 1970, or more than `max_skew_s` ahead of `now`.
    One such record must not move a key's clock or a partition's watermark: a year-2100
    stamp would close every open window and make every later item late.
    """
    ts = timestamp_ms / 1000.0
    if not math.isfinite(ts) or ts < 0 or ts > now + max_skew_s:
        return None
    return ts


class StateCodec(Codec):
    """JSON for the key-state table that never raises when reading the changelog back.

    faust decodes changelog records while recovering a table; a value that is not JSON
    would raise there and stop the worker from starting, over and over. Such a value is
    read as a marker instead, which fails validation like any malformed state, so it is
    dropped and dead-lettered where the app reads it.
    """

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        try:
            return json.loads(s)
        except (ValueError, RecursionError):
            return {UNREADABLE_STATE: base64.b64encode(s).decode()}
