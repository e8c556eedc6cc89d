"""The campaign's knobs and the loop's settings and model repository they make."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from serving.model_store import MANIFEST, list_versions, next_version
from streams.kafka.broker import free_port
from streams.settings import Settings
from streams.testing.faults.schedule import Plan


@dataclass
class CampaignConfig:
    """The campaign's knobs: the plan, the stream, the alert windows, the trainer's jobs."""

    plan: Plan
    seed: int = 20261202
    rate: float = 25.0
    burst_every_s: float = 30.0
    burst_s: float = 12.0
    # Every item of the key negative-leaning: at 0.9 the scores of bursts were 4.6-7.5
    # against a threshold of 4 (baseline ~0.52 negative), so a burst could miss on noise
    # alone, and the campaign is about faults, not the detector's power.
    burst_share: float = 1.0
    alert_window_s: float = 4.0
    session_timeout_ms: int = 6000
    model_watch_s: float = 1.0
    # A Triton worker stamps what Triton reports; Triton polls its repository every 2 s
    # and loads a version in seconds on a busy machine.
    version_slack_s: float = 20.0
    finetune_every_rows: int = 1000


def campaign_settings(
    base: Settings, config: CampaignConfig, grpc_url: str, work: Path
) -> Settings:
    """The loop's settings: Triton backend, short sessions, small fast fine-tuning jobs that
    always promote (so promotions happen mid-stream), alert windows of seconds."""
    return base.model_copy(
        update={
            "backend": "triton",
            "triton_url": grpc_url,
            "session_timeout_ms": config.session_timeout_ms,
            "model_repository": work / "models",
            "model_watch_s": config.model_watch_s,
            "watch_state_dir": work / "watch-state",
            "watch_snapshot_s": 2.0,
            "watch_metrics_port": free_port(),
            "alert_metrics_port": free_port(),
            "alert_window_s": config.alert_window_s,
            "alert_min_volume": 15,
            "alert_warmup_windows": 5,
            "alert_cooldown_windows": 3,
            # Windows wait for the slowest input partition (a killed worker's, until its
            # session expires and a replacement catches up: ~25 s at the longest here) for
            # up to alert_source_idle_s; the grace covers the order within a partition.
            "alert_grace_s": 10.0,
            "alert_source_idle_s": 60.0,
            "alert_tick_s": 0.5,
            "alert_key_fields": ["ticker"],
            # Two cores run a broker, Triton, three workers, the watch, the trainer and the
            # alert worker: the drift test's permutations are kept light.
            "mmd_permutations": 50,
            "mmd_check_every": 200,
            "finetune_volume_trigger": config.finetune_every_rows,
            "finetune_min_feedback": config.finetune_every_rows,
            "finetune_max_rows": 300,
            "finetune_cooldown_s": 20.0,
            "finetune_retry_backoff_s": 5.0,
            "finetune_replay_rows": 0,
            "finetune_old_eval_rows": 40,
            "finetune_epochs": 1,
            "finetune_max_steps": 2,
            "finetune_batch_size": 8,
            "promote_margin": -1.0,
            "promote_max_drop": 1.0,
        }
    )


def add_served_copy(repository: Path, name: str) -> int:
    """Serve a copy of the newest version as the next one, so a rollback is possible from
    the first second; returns its number."""
    newest = max(list_versions(repository, name))
    target = repository / name / str(next_version(repository, name))
    shutil.copytree(repository / name / str(newest), target)
    manifest = target / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["version"] = int(target.name)
    manifest.write_text(json.dumps(doc, indent=2))
    return int(target.name)
