"""What the deploy tests share: where the manifests are, the validators of this environment,
and the manifests loaded and looked up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
SCHEMAS = K8S / "schemas"
# The validators come from the dev extras of this environment, never from PATH.
VENV_BIN = Path(sys.executable).parent
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): SCHEMAS / "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "monitoring-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): SCHEMAS / "monitoring-podmonitor.json",
}


def tool(name: str) -> str:
    """A validator from the venv's bin directory; its absence is a failure, not a skip."""
    path = VENV_BIN / name
    assert path.is_file(), f"{name} is not installed in {VENV_BIN}: pip install -e '.[dev]'"
    return str(path)


def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """A command's exit status and output, captured."""
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def load(path: Path) -> dict[str, Any]:
    """A single-document YAML file that holds a mapping."""
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def k8s_files() -> list[Path]:
    """The Kubernetes manifests, without the kustomization."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of every manifest, with its file."""
    return [
        (path, doc)
        for path in k8s_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` named `name`."""
    found = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def split(docs: list[dict[str, Any]], tmp_path: Path, prefix: str) -> list[str]:
    """One file per document, so that every validator sees single-document files."""
    paths = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"{prefix}-{i}-{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(str(path))
    return paths


def kubernetes_validate(files: list[str], version: str | None) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate, strict, for `version` (None: its newest)."""
    args = [tool("kubernetes-validate"), "--strict"]
    if version:
        args += ["-k", version]
    return run(*args, *files)


def check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with `args`."""
    return run(tool("check-jsonschema"), *args)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The single container of a Deployment."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def settings_data() -> dict[str, str]:
    """The data of the `feedpulse-settings` ConfigMap, the settings the pods share."""
    return k8s_object("ConfigMap", "feedpulse-settings")["data"]


def feedpulse_deployments() -> list[dict[str, Any]]:
    """Every Deployment that runs the feedpulse image (all but Triton)."""
    found = [
        d
        for _, d in k8s_documents()
        if d["kind"] == "Deployment" and container(d)["image"].startswith("feedpulse:")
    ]
    assert {d["metadata"]["name"] for d in found} == {
        "feedpulse-classify",
        "feedpulse-alerts",
        "feedpulse-watch",
        "feedpulse-trainer",
    }
    return found


def feedpulse_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The long-running compose services that run the feedpulse image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == "feedpulse:local" and "profiles" not in service
    }
