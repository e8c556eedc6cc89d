"""The campaign's report: the schedule, faults by kind with their duplicates, the totals."""

from __future__ import annotations

from collections.abc import Callable

from streams.testing.faults.results import CampaignResult
from streams.testing.faults.schedule import KINDS


def print_report(result: CampaignResult, out: Callable[[str], None] = print) -> None:
    """Print the schedule, the per-kind table and the totals."""
    start = result.faults[0].at if result.faults else 0.0
    out("\nfault schedule:")
    for n, f in enumerate(result.faults, 1):
        out(
            f"  {n:3d}  t+{f.at - start:6.1f}s  {f.kind:11s}  {f.detail[:40]:40s}  dups {f.duplicates}"
        )
    out(f"\n  {'fault kind':68s} {'count':>5s} {'duplicates':>10s}")
    for kind, name in KINDS.items():
        mine = [f for f in result.faults if f.kind == kind]
        out(f"  {name:68s} {len(mine):5d} {sum(f.duplicates for f in mine):10d}")
    out(f"  {'unattributed':68s} {'-':>5s} {result.unattributed:10d}")
    out(
        f"\npublished {result.published}, labeled {result.labeled}, dead-lettered"
        f" {result.dead_lettered}, lost {len(result.lost)}, duplicates {result.duplicates};"
        f" dead letters from outages {sum(result.outage_dead_letters.values())}"
    )
    out(
        f"bursts {result.bursts}, alerted {result.bursts - result.bursts_missed}; alerts"
        f" {result.alerts} ({result.spurious_alerts} without a burst); version changes"
        f" {len(result.versions) - 1}, outputs with a stale version {len(result.stale)}"
    )
    out(
        f"feedback sent {result.feedback_sent}, still waiting {result.feedback_waiting};"
        f" other dead letters {result.other_dead_letters}; decisions"
        f" {[d.get('action') for d in result.decisions]}; seconds {result.seconds}"
    )
