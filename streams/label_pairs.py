"""The (task, label) pairs the alert workers watch, as `alert_watch` names them.

Each pair is written "task:label" (the task's name, then everything after the first colon
is the label), e.g. "sentiment:negative" or "emotion:anger". Pure Python, no I/O, so the
settings object can validate the pairs with the same rule the app reads them by.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# The task alerts watched before tasks were configurable. Its pairs keep the names they had
# then: key states restored from that time, alert ids and the sentiment metrics stay the same.
LEGACY_TASK = "sentiment"
# As long as the labeled documents' labels may be (streams.alerts.records).
MAX_NAME_CHARS = 64
MAX_PAIRS = 64


@dataclass(frozen=True)
class WatchPair:
    """One watched (task, label): an item counts toward it if its `task` gave it `label`."""

    task: str
    label: str

    @property
    def name(self) -> str:
        """The pair as `alert_watch` writes it: "task:label"."""
        return f"{self.task}:{self.label}"

    @property
    def slot(self) -> str:
        """The pair's name in key states, keyed events and alert ids.

        The bare label for sentiment (what those held before tasks were configurable, so a
        restored state and an alert id stay the same), "task:label" for any other task.
        """
        return self.label if self.task == LEGACY_TASK else self.name

    @property
    def sentiment(self) -> str | None:
        """The label if this is a sentiment pair (for the fields and metrics named so)."""
        return self.label if self.task == LEGACY_TASK else None


def parse_pair(text: str) -> WatchPair:
    """The pair "task:label" names; ValueError with the reason if it names none."""
    task, colon, label = text.partition(":")
    example = 'write "task:label", e.g. "sentiment:negative" or "emotion:anger"'
    if not colon or not task or not label:
        raise ValueError(f"{text!r} is not a task:label pair: {example}")
    for part, what in ((task, "task"), (label, "label")):
        if part != part.strip():
            raise ValueError(f"{text!r}: the {what} has spaces around it")
        if len(part) > MAX_NAME_CHARS:
            raise ValueError(f"{text!r}: the {what} is longer than {MAX_NAME_CHARS} characters")
    return WatchPair(task, label)


def parse_pairs(texts: Iterable[str]) -> tuple[WatchPair, ...]:
    """Every pair of `texts`, in order; ValueError naming the first bad one or a repeat."""
    pairs = tuple(parse_pair(text) for text in texts)
    if not pairs:
        raise ValueError('watch at least one task:label pair, e.g. "sentiment:negative"')
    if len(pairs) > MAX_PAIRS:
        raise ValueError(f"{len(pairs)} pairs: at most {MAX_PAIRS} can be watched")
    seen: dict[str, WatchPair] = {}
    for pair in pairs:
        other = seen.setdefault(pair.slot, pair)
        if other == pair and other is not pair:
            raise ValueError(f"{pair.name!r} is watched twice")
        if other != pair:  # "sentiment:emotion:anger" against "emotion:anger"
            raise ValueError(f"{other.name!r} and {pair.name!r} cannot both be watched")
    return pairs
