"""Settings, secrets and the config files the deployments mount: every FEEDPULSE_ variable
is a real setting, no secret value is committed, the entrypoint turns secret files into
settings, and the compose Prometheus config and mounts point at files that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from streams.settings import Settings
from tests.deploy.manifest_support import (
    COMPOSE,
    DEPLOY,
    container,
    feedpulse_deployments,
    k8s_documents,
    load,
    run,
    settings_data,
)

# Job names the alert rules select on (deploy/prometheus/rules.yml).
JOBS = {"feedpulse-classify", "feedpulse-alerts", "feedpulse-watch", "triton"}


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
