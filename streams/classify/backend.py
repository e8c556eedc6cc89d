"""The inference backend a worker classifies with, chosen by the settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from serving.backends.contract import Classifier
from serving.backends.hot_swap import FollowingClassifier
from serving.backends.onnx import OnnxClassifier
from serving.model_store import load_version, serving_version
from streams.settings import Settings

if TYPE_CHECKING:
    from serving.triton.server import TritonServer


def local_triton(settings: Settings, log_path: Path | None = None) -> TritonServer:
    """A local Triton server on the settings' model repository and ports (not started)."""
    from serving.triton.server import TritonServer

    return TritonServer(
        settings.model_repository,
        http_port=settings.triton_http_port,
        grpc_port=settings.triton_grpc_port,
        metrics_port=settings.triton_metrics_port,
        host=settings.triton_bind_host,
        python_env=settings.triton_python_env,
        log_path=log_path,
    )


def open_classifier(settings: Settings) -> Classifier:
    """The inference backend the settings ask for (the in-process ONNX model by default).

    Unless `model_version` pins one, it follows the served version: promotions and
    rollbacks take effect without a restart. The Triton backend reads the tokenizer and
    task labels from the local model repository; outputs are stamped with the version
    Triton reports it served.
    """
    if settings.model_version is not None:
        return open_version(settings, settings.model_version)
    repo, name = settings.model_repository, settings.model_name
    if serving_version(repo, name) is None:
        load_version(repo, name)  # raises the error that says what to run
    return FollowingClassifier(
        lambda version: open_version(settings, version),
        lambda: serving_version(repo, name),
        check_s=settings.model_watch_s,
        warmup_batch=settings.max_batch,
        warmup_batches=settings.warmup_batches,
    )


def open_version(settings: Settings, version: int) -> Classifier:
    """The backend for one version of the model."""
    model = load_version(settings.model_repository, settings.model_name, version)
    if settings.backend == "triton":
        from serving.backends.triton_client import TritonClassifier

        return TritonClassifier(
            settings.triton_url,
            model,
            timeout_s=settings.triton_timeout_s,
            chunk_size=settings.inference_chunk,
            ssl=settings.triton_ssl,
            root_certificates=settings.triton_root_certificates,
            private_key=settings.triton_private_key,
            certificate_chain=settings.triton_certificate_chain,
        )
    return OnnxClassifier(
        model,
        variant=settings.model_variant,
        threads=settings.inference_threads,
        chunk_size=settings.inference_chunk,
    )
