"""The workloads as deployed by compose and by Kubernetes agree with each other and with
the settings: autoscaling bounds, metrics ports, probes and monitors, Triton's GPU and
repository, the single-replica watch and trainer, and the kustomization."""

from __future__ import annotations

from tests.deploy.manifest_support import (
    COMPOSE,
    K8S,
    container,
    feedpulse_deployments,
    feedpulse_services,
    k8s_documents,
    k8s_files,
    k8s_object,
    load,
    settings_data,
)


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


# Liveness and startup ask whether the process runs; readiness whether it serves.
LIVE_AND_READY = {
    "startupProbe": "/healthz",
    "readinessProbe": "/ready",
    "livenessProbe": "/healthz",
}
PROBES = {
    "feedpulse-classify": LIVE_AND_READY,
    "feedpulse-alerts": LIVE_AND_READY,
    "feedpulse-watch": LIVE_AND_READY,
}
COMPOSE_SERVICES = {
    "worker": "feedpulse-classify",
    "alerts": "feedpulse-alerts",
    "watch": "feedpulse-watch",
}


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
        for probe, path in PROBES[name].items():
            assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, (name, probe)
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
        check = PROBES[COMPOSE_SERVICES[service]]["readinessProbe"]
        assert f":{port}{check}" in " ".join(compose[service]["healthcheck"]["test"])
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
    check_trainer_deployment()
    check_compose_watch_and_trainer()


def check_trainer_deployment() -> None:
    """The trainer pod: no ports or liveness probe, time to finish a job, data read-only."""
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


def check_compose_watch_and_trainer() -> None:
    """Compose runs one watch and one trainer, only the trainer writes models, under SASL too."""
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
    # Only the trainer writes models; only the watch writes anything else: its state.
    for name, service in feedpulse_services(compose).items():
        if name != "trainer":
            writable = [v for v in service.get("volumes", []) if not v.endswith(":ro")]
            assert writable == (["watch-state:/var/lib/feedpulse"] if name == "watch" else []), name
    # The SASL overlay covers every long-running feedpulse service.
    overlay = load(COMPOSE / "compose.sasl.yaml")["services"]
    for name in feedpulse_services(compose):
        assert overlay[name]["environment"]["FEEDPULSE_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert "kafka_sasl_password" in overlay[name]["secrets"], name


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    assert {
        d["metadata"].get("namespace") for _, d in k8s_documents() if d["kind"] != "Namespace"
    } == {kustomization["namespace"]}
