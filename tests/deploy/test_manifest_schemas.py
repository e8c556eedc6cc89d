"""The deployment manifests (deploy/compose, deploy/k8s) checked offline against their
schemas, with the validators installed in this environment: compose files against the
Compose Specification, built-in objects against the Kubernetes API, custom resources against
the CRD subsets in deploy/k8s/schemas; and each validator rejects a broken copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifest_support import (
    COMPOSE,
    CRD_SCHEMAS,
    check_jsonschema,
    k8s_documents,
    k8s_object,
    kubernetes_validate,
    load,
    split,
)

# Oldest Kubernetes the manifests target, and the validator's newest bundled version.
KUBERNETES_VERSIONS = ("1.30.0", None)


def test_compose_files_follow_the_compose_spec() -> None:
    done = check_jsonschema(
        "--builtin-schema",
        "vendor.compose-spec",
        str(COMPOSE / "compose.yaml"),
        str(COMPOSE / "compose.sasl.yaml"),
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("worker", "deploy", {"replicas": ["3"]}),  # wrong type
        ("triton", "stop_grace_periodd", "60s"),  # misspelt field
    ],
)
def test_compose_schema_rejects_a_broken_file(
    tmp_path: Path, service: str, key: str, value: Any
) -> None:
    compose = load(COMPOSE / "compose.yaml")
    compose["services"][service][key] = value
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(compose))
    done = check_jsonschema("--builtin-schema", "vendor.compose-spec", str(broken))
    assert done.returncode == 1, done.stdout + done.stderr
    assert key in done.stdout + done.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_objects_match_the_api_schemas(tmp_path: Path, version: str | None) -> None:
    builtin = [
        doc for _, doc in k8s_documents() if (doc["apiVersion"], doc["kind"]) not in CRD_SCHEMAS
    ]
    assert {d["kind"] for d in builtin} >= {"Deployment", "Service", "PodDisruptionBudget"}
    done = kubernetes_validate(split(builtin, tmp_path, "k8s"), version)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    # Unknown kinds only warn: every object must have been checked against a real schema.
    assert "Couldn't find schema" not in out, out
    assert out.count(" passed for resource ") == len(builtin), out


def test_custom_resources_match_their_crd_schemas(tmp_path: Path) -> None:
    custom = [doc for _, doc in k8s_documents() if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS]
    assert {d["kind"] for d in custom} == {k for _, k in CRD_SCHEMAS}
    done = check_jsonschema("--check-metaschema", *map(str, CRD_SCHEMAS.values()))
    assert done.returncode == 0, done.stdout + done.stderr
    for (api_version, kind), schema in CRD_SCHEMAS.items():
        docs = [d for d in custom if (d["apiVersion"], d["kind"]) == (api_version, kind)]
        done = check_jsonschema("--schemafile", str(schema), *split(docs, tmp_path, kind))
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_object_kind_has_a_validator() -> None:
    """A new custom resource needs a schema here; kubernetes-validate would only warn."""
    for path, doc in k8s_documents():
        group = doc["apiVersion"].rpartition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):
            assert (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS, (path.name, doc["kind"])


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = doc
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("Deployment", "feedpulse-classify", "spec.replicas", "two"),
        ("Deployment", "feedpulse-classify", "spec.template.spec.terminationGracePeriod", 60),
        ("Deployment", "triton", "spec.template.spec.containers.0.ports.1.containerPort", "8001"),
        (
            "Deployment",
            "feedpulse-trainer",
            "spec.template.spec.volumes.1.persistentVolumeClaim.readOnlyy",
            True,
        ),
        ("ScaledObject", "feedpulse-classify", "spec.maxReplicaCount", "12"),
        ("ScaledObject", "feedpulse-classify", "spec.triggers.0.metadata.lagThreshold", 1000),
        ("ScaledObject", "feedpulse-classify", "spec.minReplicas", 1),
        ("PodMonitor", "feedpulse-workers", "spec.podMetricsEndpoints.0.intervall", "15s"),
        ("ServiceMonitor", "triton", "spec.endpoints.0.interval", "15 seconds"),
        ("TriggerAuthentication", "feedpulse-kafka", "spec.secretTargetRef.0.key", None),
    ],
)
def test_validators_reject_broken_manifests(
    tmp_path: Path, kind: str, name: str, path: str, value: Any
) -> None:
    doc = _set(k8s_object(kind, name), path, value)
    (file,) = split([doc], tmp_path, "broken")
    schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        done = kubernetes_validate([file], None)
    else:
        done = check_jsonschema("--schemafile", str(schema), file)
    out = done.stdout + done.stderr
    assert done.returncode == 1, f"{kind} with {path}={value!r}: exit {done.returncode}\n{out}"
    # Rejected for this field, not for something else.
    assert path.rpartition(".")[2] in out, out
