"""What a campaign measured, and its JSON summary."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from streams.testing.audit import Audit
from streams.testing.faults.schedule import Fault
from streams.testing.faults.stream import Position


@dataclass
class CampaignResult:
    """Everything the campaign measured."""

    faults: list[Fault]
    published: int
    labeled: int
    dead_lettered: int
    lost: list[Position]
    wrong: list[str]
    outage_dead_letters: dict[str, int]
    duplicates: int
    duplicates_by_kind: dict[str, int]
    unattributed: int
    stale: list[tuple[float, int]]
    versions: list[tuple[float, int | None]]
    bursts: int
    bursts_missed: int
    spurious_alerts: int
    alerts: int
    feedback_sent: int
    feedback_waiting: float | None
    other_dead_letters: dict[str, int]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The figures, JSON-able."""
        kinds: dict[str, int] = defaultdict(int)
        for f in self.faults:
            kinds[f.kind] += 1
        return {
            "faults": len(self.faults),
            "faults_by_kind": dict(kinds),
            "published": self.published,
            "labeled": self.labeled,
            "dead_lettered": self.dead_lettered,
            "lost": len(self.lost),
            "wrong_outcomes": len(self.wrong),
            "dead_letters_from_outages": self.outage_dead_letters,
            "duplicates": self.duplicates,
            "duplicates_by_kind": self.duplicates_by_kind,
            "duplicates_unattributed": self.unattributed,
            "outputs_with_a_stale_version": len(self.stale),
            "version_changes": len(self.versions) - 1,
            "bursts": self.bursts,
            "bursts_alerted": self.bursts - self.bursts_missed,
            "alerts_without_a_burst": self.spurious_alerts,
            "feedback_sent": self.feedback_sent,
            "feedback_still_waiting": self.feedback_waiting,
            "other_dead_letters": self.other_dead_letters,
            "decisions": [d.get("action") for d in self.decisions],
            "seconds": self.seconds,
        }


def audit_reasons(audit: Audit) -> dict[str, int]:
    """Dead letters of inputs, by reason."""
    out: dict[str, int] = defaultdict(int)
    for reason in audit.reasons_at.values():
        out[reason] += 1
    return dict(out)


def other_reasons(audit: Audit) -> dict[str, int]:
    """Dead letters of the other topics, by reason."""
    out: dict[str, int] = defaultdict(int)
    for (_, reason), n in audit.other_dead_letters.items():
        out[reason] += n
    return dict(out)
