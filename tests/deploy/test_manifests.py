"""The deployment manifests (deploy/compose, deploy/k8s) checked offline: every file against
its schema with the validators installed in this environment, custom resources against the
CRD subsets in deploy/k8s/schemas, and the values that must agree across files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
SCHEMAS = K8S / "schemas"
# The validators come from the dev extras of this environment, never from PATH.
VENV_BIN = Path(sys.executable).parent
# Oldest Kubernetes the manifests target, and the validator's newest bundled version.
KUBERNETES_VERSIONS = ("1.30.0", None)
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): SCHEMAS / "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "monitoring-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): SCHEMAS / "monitoring-podmonitor.json",
}
# Job names the alert rules select on (deploy/prometheus/rules.yml).
JOBS = {"feedpulse-classify", "feedpulse-alerts", "feedpulse-watch", "triton"}


def tool(name: str) -> str:
    """A validator from the venv's bin directory; its absence is a failure, not a skip."""
    path = VENV_BIN / name
    assert path.is_file(), f"{name} is not installed in {VENV_BIN}: pip install -e '.[dev]'"
    return str(path)


def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in k8s_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
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
    args = [tool("kubernetes-validate"), "--strict"]
    if version:
        args += ["-k", version]
    return run(*args, *files)


def check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("check-jsonschema"), *args)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def settings_data() -> dict[str, str]:
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


# ---------------------------------------------------------------- schema validation


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


# ---------------------------------------------------------------- values that must agree


def test_autoscaling_is_bounded_by_the_input_partitions() -> None:
    data = settings_data()
    scaled = k8s_object("ScaledObject", "feedpulse-classify")
    trigger = scaled["spec"]["triggers"][0]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "feedpulse-classify"
    assert scaled["spec"]["maxReplicaCount"] == int(data["FEEDPULSE_TOPIC_PARTITIONS"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert meta["consumerGroup"] == data["FEEDPULSE_GROUP_ID"] == "feedpulse-classify"
    assert meta["topic"] == data["FEEDPULSE_INPUT_TOPIC"] == "feeds.raw"
    assert meta["bootstrapServers"] == data["FEEDPULSE_BOOTSTRAP_SERVERS"]
    assert meta["allowIdleConsumers"] == "false"
    # KEDA talks to the same cluster the same way the workers do.
    keda_sasl = {
        "PLAIN": "plaintext",
        "SCRAM-SHA-256": "scram_sha256",
        "SCRAM-SHA-512": "scram_sha512",
    }
    assert meta["sasl"] == keda_sasl[data["FEEDPULSE_SASL_MECHANISM"]]
    assert meta["tls"] == (
        "enable" if data["FEEDPULSE_SECURITY_PROTOCOL"].endswith("SSL") else "disable"
    )
    assert (
        trigger["authenticationRef"]["name"]
        == k8s_object("TriggerAuthentication", "feedpulse-kafka")["metadata"]["name"]
    )

    compose = load(COMPOSE / "compose.yaml")
    env = compose["services"]["worker"]["environment"]
    partitions = int(env["FEEDPULSE_TOPIC_PARTITIONS"])
    assert compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"] == partitions
    assert compose["services"]["worker"]["deploy"]["replicas"] <= partitions


def test_workers_expose_metrics_where_probes_and_monitors_look() -> None:
    data = settings_data()
    # Loopback is the default; containers bind wider on purpose (see the comments there).
    assert data["FEEDPULSE_METRICS_HOST"] == "0.0.0.0"
    ports = {
        "feedpulse-classify": int(data["FEEDPULSE_METRICS_PORT"]),
        "feedpulse-alerts": int(data["FEEDPULSE_ALERT_METRICS_PORT"]),
        "feedpulse-watch": int(data["FEEDPULSE_WATCH_METRICS_PORT"]),
    }
    # Single-replica Recreate deployments have none (see model-watch.yaml).
    with_pdb = {"feedpulse-classify", "feedpulse-alerts"}
    for name, port in ports.items():
        deployment = k8s_object("Deployment", name)
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        c = container(deployment)
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == name
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, (name, probe)
        # Room to finish the batch in flight, wait for acknowledgements and commit.
        assert spec["terminationGracePeriodSeconds"] >= 30
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        if name in with_pdb:
            pdb = k8s_object("PodDisruptionBudget", name)
            assert (
                pdb["spec"]["selector"]["matchLabels"]
                == deployment["spec"]["selector"]["matchLabels"]
            )

    monitor = k8s_object("PodMonitor", "feedpulse-workers")["spec"]
    assert monitor["jobLabel"] == "app.kubernetes.io/name"
    assert set(monitor["selector"]["matchExpressions"][0]["values"]) == set(ports)
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"]

    compose = load(COMPOSE / "compose.yaml")["services"]
    for service, port, setting in (
        ("worker", 9400, "FEEDPULSE_METRICS_PORT"),
        ("alerts", 9401, "FEEDPULSE_ALERT_METRICS_PORT"),
        ("watch", 9402, "FEEDPULSE_WATCH_METRICS_PORT"),
    ):
        env = compose[service]["environment"]
        assert env["FEEDPULSE_METRICS_HOST"] == "0.0.0.0"
        assert f":{port}/metrics" in " ".join(compose[service]["healthcheck"]["test"])
        assert int(env[setting]) == port
        assert compose[service]["stop_grace_period"] == "60s"
        # Worker metrics are never published on the host.
        assert "ports" not in compose[service]


def test_triton_has_a_gpu_polls_its_repository_and_is_scraped_on_8002() -> None:
    deployment = k8s_object("Deployment", "triton")
    c = container(deployment)
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-control-mode=poll" in c["args"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"] == 8002
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "feedpulse-models"
    service = k8s_object("Service", "triton")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 8001
    assert settings_data()["FEEDPULSE_TRITON_URL"].endswith(":8001")
    monitor = k8s_object("ServiceMonitor", "triton")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "triton"
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]

    triton = load(COMPOSE / "compose.yaml")["services"]["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-control-mode=poll" in triton["command"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    for variant in ("onnxruntime_gpu", "tensorrt_fp16"):
        for volume in triton["volumes"]:
            host = volume.replace("${TRITON_CONFIG:-onnxruntime_gpu}", variant).split(":")[0]
            assert (COMPOSE / host).exists(), volume


def test_watch_and_trainer_run_once_and_only_the_trainer_writes_models() -> None:
    data = settings_data()
    assert data["FEEDPULSE_WATCH_GROUP_ID"] == "feedpulse-watch"
    assert data["FEEDPULSE_TRAINER_GROUP_ID"] == "feedpulse-trainer"
    pdbs = {d["metadata"]["name"] for _, d in k8s_documents() if d["kind"] == "PodDisruptionBudget"}
    for name in ("feedpulse-watch", "feedpulse-trainer"):
        deployment = k8s_object("Deployment", name)
        # In-memory joins and windows (watch), one promoter at a time (trainer).
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        assert name not in pdbs
    for deployment in feedpulse_deployments():
        spec = deployment["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
        if "models" not in mounts:
            continue
        claim = {v["name"]: v for v in spec["volumes"]}["models"]["persistentVolumeClaim"]
        assert claim["claimName"] == "feedpulse-models"
        writer = deployment["metadata"]["name"] == "feedpulse-trainer"
        assert mounts["models"].get("readOnly", False) is not writer
        assert claim.get("readOnly", False) is not writer
    # Many pods on many nodes, one of them writing.
    assert k8s_object("PersistentVolumeClaim", "feedpulse-models")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]

    trainer = k8s_object("Deployment", "feedpulse-trainer")
    spec = trainer["spec"]["template"]["spec"]
    c = container(trainer)
    assert "ports" not in c and "livenessProbe" not in c
    # It finishes the job in hand (minutes) on SIGTERM.
    assert spec["terminationGracePeriodSeconds"] >= 900
    requests = c["resources"]["requests"]
    assert float(requests["cpu"]) >= 2 and requests["memory"] == "4Gi"
    assert c["resources"]["limits"]["memory"] == "6Gi"
    env = {e["name"]: e for e in c["env"]}
    assert env["FEEDPULSE_DATA_DIR"]["value"] == "/data"
    assert env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == "feedpulse-training-data" and claim["readOnly"] is True
    k8s_object("PersistentVolumeClaim", "feedpulse-training-data")

    compose = load(COMPOSE / "compose.yaml")
    services = compose["services"]
    assert services["watch"]["deploy"]["replicas"] == 1
    assert "../../triton_models:/models:ro" in services["watch"]["volumes"]
    trainer_c = services["trainer"]
    assert trainer_c["deploy"]["replicas"] == 1
    assert "../../triton_models:/models" in trainer_c["volumes"]
    assert any(v.endswith(":/data:ro") for v in trainer_c["volumes"])
    assert trainer_c["environment"]["FEEDPULSE_DATA_DIR"] == "/data"
    assert trainer_c["stop_grace_period"] == "30m"
    assert "ports" not in trainer_c and "healthcheck" not in trainer_c
    for name, service in feedpulse_services(compose).items():
        if name != "trainer":
            assert all(v.endswith(":ro") for v in service.get("volumes", [])), name
    # The SASL overlay covers every long-running feedpulse service.
    overlay = load(COMPOSE / "compose.sasl.yaml")["services"]
    for name in feedpulse_services(compose):
        assert overlay[name]["environment"]["FEEDPULSE_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert "kafka_sasl_password" in overlay[name]["secrets"], name


def test_every_feedpulse_variable_is_a_setting() -> None:
    entrypoint = (COMPOSE / "entrypoint.sh").read_text()
    handled = re.search(r"for name in ([A-Z_ ]+);", entrypoint)
    assert handled, "entrypoint.sh lists the settings it reads from files"
    from_files = {f"FEEDPULSE_{name}_FILE" for name in handled.group(1).split()}
    names: set[str] = set(settings_data())
    for path in (COMPOSE / "compose.yaml", COMPOSE / "compose.sasl.yaml"):
        names |= set(re.findall(r"\b(FEEDPULSE_[A-Z0-9_]+)\s*[:=]", path.read_text()))
    for deployment in feedpulse_deployments():
        names |= {e["name"] for e in container(deployment).get("env", [])}
    names -= from_files
    names = {n for n in names if n.startswith("FEEDPULSE_")}
    assert names, "no settings found"
    unknown = {
        n for n in names if n.removeprefix("FEEDPULSE_").lower() not in Settings.model_fields
    }
    assert unknown == set()


def test_no_secret_value_is_committed() -> None:
    assert not [d for _, d in k8s_documents() if d["kind"] == "Secret"]
    for deployment in feedpulse_deployments():
        env = {e["name"]: e for e in container(deployment).get("env", [])}
        assert "FEEDPULSE_SASL_PASSWORD" not in env
        assert env["FEEDPULSE_SASL_PASSWORD_FILE"]["value"].startswith("/etc/feedpulse/kafka-sasl/")
    for path in (COMPOSE / "compose.yaml", COMPOSE / "compose.sasl.yaml"):
        text = path.read_text()
        assert not re.search(r"FEEDPULSE_SASL_PASSWORD\s*:", text), path.name
        for secret in load(path).get("secrets", {}).values():
            assert secret["file"].startswith("./secrets/"), path.name
    assert "secrets/" in (COMPOSE / ".gitignore").read_text().split()


def test_entrypoint_turns_secret_files_into_settings(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret value")
    env = {"PATH": os.environ["PATH"], "FEEDPULSE_SASL_PASSWORD_FILE": str(password)}
    sh = shutil.which("sh")
    assert sh
    done = subprocess.run(
        [sh, str(COMPOSE / "entrypoint.sh"), "env"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "FEEDPULSE_SASL_PASSWORD=s3cret value" in done.stdout.splitlines()
    assert "FEEDPULSE_SASL_PASSWORD_FILE" not in done.stdout
    env["FEEDPULSE_SASL_PASSWORD_FILE"] = str(tmp_path / "missing")
    done = subprocess.run(
        [sh, str(COMPOSE / "entrypoint.sh"), "env"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 64 and "not readable" in done.stderr


def test_compose_prometheus_config_is_valid_and_keeps_the_rule_job_names(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (make setup-system)"
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    done = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    compose_jobs = {j["job_name"] for j in load(COMPOSE / "prometheus.yml")["scrape_configs"]}
    base_jobs = {
        j["job_name"] for j in load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    }
    assert compose_jobs == base_jobs == JOBS
    rules = (DEPLOY / "prometheus" / "rules.yml").read_text()
    assert set(re.findall(r'job="([^"]+)"', rules)) <= JOBS


def test_compose_mounts_the_existing_configs() -> None:
    services = load(COMPOSE / "compose.yaml")["services"]
    for name in ("prometheus", "alertmanager", "grafana", "worker", "watch", "trainer"):
        for volume in services[name].get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (COMPOSE / host).exists(), (name, volume)
    build = services["worker"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == COMPOSE / "Dockerfile"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    assert {
        d["metadata"].get("namespace") for _, d in k8s_documents() if d["kind"] != "Namespace"
    } == {kustomization["namespace"]}
