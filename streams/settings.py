"""The one settings object: built from `FEEDPULSE_*` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.label_pairs import parse_pairs


class Settings(BaseSettings):
    """Every knob of feedpulse. Nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix="FEEDPULSE_", frozen=True, extra="forbid")

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # TLS (SSL, SASL_SSL): CA bundle, and a client certificate and key for mutual TLS.
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    input_topic: str = "feeds.raw"
    output_topic: str = "feeds.labeled"
    dlq_topic: str = "feeds.dlq"
    group_id: str = "feedpulse-classify"
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(10_000, ge=1000)
    # How long the broker may hold an empty fetch; bounds idle-to-first-item latency.
    fetch_max_wait_ms: int = Field(50, ge=0)
    # Exactly-once: outputs and input offsets in one Kafka transaction per batch. Needs a
    # broker with transactions (Apache Kafka >= 0.11; not the embedded Tansu) and
    # read_committed consumers of the outputs.
    exactly_once: bool = False
    transactional_id_prefix: str = "feedpulse-classify"

    # Micro-batching
    # 64 over 32: +12% end to end (length-sorted chunks of 16 pad less), p99 still within
    # 2 x (max_wait + one batch); 128 gave +21% but tripled p99 at half load (`make bench`).
    max_batch: int = Field(64, ge=1)
    max_wait_ms: int = Field(50, ge=0)

    # Input limits (checked before any expensive parsing)
    max_message_bytes: int = Field(1_048_576, ge=1)
    max_text_chars: int = Field(20_000, ge=1)
    max_json_depth: int = Field(16, ge=1)
    # A partition whose fetched batch no codec can decode (corrupt on the wire or on disk)
    # is paused, reported, and fetched again after this many seconds.
    stuck_retry_s: float = Field(30.0, gt=0)

    # Model
    model_repository: Path = Path("triton_models")
    model_name: str = "feedpulse_classifier"
    model_version: int | None = None
    model_variant: Literal["int8", "fp32"] = "int8"
    base_model: str | None = None
    max_length: int = Field(128, ge=8)
    # Training: labeled data sets (see ../shared/data/README.md) and resumable checkpoints.
    data_dir: Path = Path("../shared/data")
    # The declared tasks (TOML, see serving.training.declaration); unset: sentiment + topic.
    tasks_file: Path | None = None
    checkpoint_dir: Path = Path(".feedpulse/checkpoints")
    inference_threads: int = Field(0, ge=0)
    # Texts per ONNX run inside a micro-batch (length-sorted); small chunks pad less.
    inference_chunk: int = Field(16, ge=1)

    # Inference backend: the in-process ONNX model, or any Triton server over gRPC.
    backend: Literal["onnx", "triton"] = "onnx"
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = Field(10.0, gt=0)
    triton_ssl: bool = False
    triton_root_certificates: str | None = None
    # Mutual TLS to Triton: the client's private key and certificate chain (PEM files).
    triton_private_key: str | None = None
    triton_certificate_chain: str | None = None
    # The local Triton server (`feedpulse triton serve`): the address it binds (loopback
    # unless widened on purpose), ports, and the Python environment its python-backend
    # stubs import numpy (< 2) and onnxruntime from.
    triton_bind_host: str = "127.0.0.1"
    triton_http_port: int = Field(8000, ge=1, le=65535)
    triton_grpc_port: int = Field(8001, ge=1, le=65535)
    triton_metrics_port: int = Field(8002, ge=1, le=65535)
    triton_python_env: Path = Path(".venv/triton-env")

    # Alert workers (faust): spikes of watched labels per key in hopping event-time windows.
    alerts_topic: str = "alerts.sentiment"
    alert_app_id: str = "feedpulse-alerts"
    alert_window_s: float = Field(60.0, gt=0)
    # Slots per window: 2 = windows hop by half their length (earlier detection); 1 = tumbling.
    alert_hops: int = Field(2, ge=1, le=12)
    alert_threshold: float = Field(4.0, gt=0)
    alert_critical: float = Field(8.0, gt=0)
    alert_min_volume: int = Field(20, ge=1)
    alert_warmup_windows: int = Field(5, ge=1)
    alert_cooldown_windows: int = Field(5, ge=0)
    # `meta` fields that are alert keys besides the source and the topic label.
    alert_key_fields: list[str] = ["entity", "ticker", "hashtag"]
    alert_grace_s: float = Field(5.0, ge=0)
    # A partition's windows wait for its slowest input partition (a stalled worker's) for
    # up to this long without an item from it; then that source stops holding them back.
    alert_source_idle_s: float = Field(60.0, gt=0)
    alert_tick_s: float = Field(1.0, gt=0)
    # Keys with a series of their own in the metrics; the rest report as key="other".
    alert_metric_keys: int = Field(50, ge=1)
    alert_metrics_port: int = Field(9401, ge=0, le=65535)
    # A record timestamp more than this far ahead of the alert worker's clock is not
    # trusted: the item counts at its arrival time (and in a metric), so one future-dated
    # record cannot move a key's clock or a partition's watermark.
    alert_max_skew_s: float = Field(300.0, ge=0)
    # Keys with no item for this many windows are dropped from the state (with a
    # changelog tombstone), so the table holds the keys that are live, not every key ever seen.
    alert_idle_windows: int = Field(10, ge=1)
    # The (task, label) pairs whose share per key is watched, as "task:label": a multi-class
    # task's item counts when its label is that label, a multi-label task's when that label
    # is among its labels. The environment gives a JSON list:
    # FEEDPULSE_ALERT_WATCH='["sentiment:negative","emotion:anger"]'.
    alert_watch: list[str] = ["sentiment:negative", "sentiment:positive"]

    # Workers follow the served version (the newest numbered one) unless `model_version`
    # pins one: promotions and rollbacks reach them within this many seconds.
    model_watch_s: float = Field(2.0, gt=0)
    # Labeled outputs carry the pooled embedding (float16, base64) for the model watch.
    output_embedding: bool = True
    # Compression of the worker's output batches (labeled documents and dead letters); every
    # feedpulse consumer reads all four codecs, whatever this says.
    output_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"

    # Online learning: the model watch (`feedpulse watch`) and the trainer.
    feedback_topic: str = "feeds.feedback"
    drift_topic: str = "model.drift"
    jobs_topic: str = "model.finetune.jobs"
    decisions_topic: str = "model.decisions"
    watch_group_id: str = "feedpulse-watch"
    trainer_group_id: str = "feedpulse-trainer"
    # Predictions wait this long (at most this many) for their feedback, and feedback as
    # long for its prediction; then it is kept for training if it has text, else
    # dead-lettered as unmatched.
    feedback_window_s: float = Field(3600.0, gt=0)
    feedback_max_items: int = Field(100_000, ge=1)
    # Byte budgets of the join: predictions kept (text + embedding) and feedback waiting;
    # the oldest prediction goes first, waiting feedback over budget is dead-lettered.
    feedback_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    feedback_waiting_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Feedback rows kept per task for fine-tuning jobs (the newest).
    feedback_keep_rows: int = Field(20_000, ge=1)
    # ADWIN confidence for the confidence, label-mix and error-rate detectors.
    drift_delta: float = Field(1e-5, gt=0, lt=1)
    drift_grace: int = Field(100, ge=1)
    # MMD two-sample test on embeddings: reference and recent windows, test cadence.
    mmd_reference: int = Field(500, ge=10)
    mmd_window: int = Field(200, ge=10)
    mmd_check_every: int = Field(50, ge=1)
    mmd_z: float = Field(6.0, gt=0)
    mmd_permutations: int = Field(200, ge=20)
    hybrid_learning_rate: float = Field(0.5, gt=0)
    hybrid_window: int = Field(500, ge=10)
    # The fine-tuning policy: feedback rows after a drift before a job, rows per job,
    # the cooldown after a job, and an optional volume trigger (0 = off).
    finetune_min_feedback: int = Field(1000, ge=1)
    finetune_max_rows: int = Field(5000, ge=1)
    finetune_cooldown_s: float = Field(1800.0, ge=0)
    finetune_volume_trigger: int = Field(0, ge=0)
    # After a rejected or failed job the same drift may ask again, after this back-off
    # (doubling per consecutive rejection, capped at 8x).
    finetune_retry_backoff_s: float = Field(3600.0, ge=0)
    # The largest fine-tuning job record: the watch keeps a job's newest rows that fit, its
    # producer and the jobs topic (`max.message.bytes`) accept this size, the trainer reads it.
    jobs_max_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    # Trainer: replay rows of the original data, old-domain test rows checked, steps.
    finetune_replay_rows: int = Field(4000, ge=0)
    finetune_old_eval_rows: int = Field(1000, ge=0)
    finetune_epochs: int = Field(3, ge=1)
    finetune_lr: float = Field(3e-5, gt=0)
    finetune_head_lr: float = Field(3e-4, gt=0)
    finetune_max_steps: int | None = Field(None, ge=1)
    finetune_batch_size: int = Field(32, ge=1)
    # Where the trainer fine-tunes: auto (a GPU where torch sees one, else the CPU), cpu,
    # cuda or cuda:N.
    finetune_device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    # "lora": the encoder learns through LoRA adapters merged at export; "full": all of it.
    # Full by default: on the domain-switch scenario (2 CPU cores) it reached promotion
    # sooner (394-487 s against LoRA's 755 s), the same new-domain gain at equal length.
    finetune_adapter: Literal["full", "lora"] = "full"
    # Promotion: new-domain accuracy gain required, old-domain macro-recall drop allowed.
    promote_margin: float = 0.05
    promote_max_drop: float = Field(0.02, ge=0)
    watch_metrics_port: int = Field(9402, ge=0, le=65535)
    # The watch's state (join, training rows, policy, detectors, hybrid head) is saved here
    # with the offsets it covers, at least every `watch_snapshot_s`; a restart resumes from it.
    watch_state_dir: Path = Path(".feedpulse/watch")
    watch_snapshot_s: float = Field(30.0, gt=0)
    # The trainer removes leftover `.staging-*` directories on start and keeps only the
    # newest `trainer_keep_rejected` rejected candidates.
    trainer_keep_rejected: int = Field(3, ge=0)

    # Embedded broker
    broker_listen: str = "127.0.0.1:9092"

    # Prometheus metrics endpoint; port 0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9400, ge=0, le=65535)
    # A classify worker warms its model on this many representative batches (shortest to
    # longest) before it joins the group; /ready answers 200 only once warmed and assigned.
    warmup_batches: int = Field(3, ge=0)

    @field_validator("alert_watch")
    @classmethod
    def _watch_pairs(cls, value: list[str]) -> list[str]:
        parse_pairs(value)  # a ValueError says which pair is wrong and how to write one
        return value

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> Settings:
        # A key without its certificate (or either without TLS) would silently not be used.
        pair = (self.triton_private_key, self.triton_certificate_chain)
        if any(pair) and not all(pair):
            raise ValueError("triton_private_key and triton_certificate_chain go together")
        if all(pair) and not self.triton_ssl:
            raise ValueError("a Triton client certificate needs triton_ssl")
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, with explicit (non-None) overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
