"""End to end with the real tools: the alert worker's metrics are scraped by Prometheus, the
checked-in rule fires, and Alertmanager delivers it to a webhook this test runs. The same
stream carries 10,000 one-off keys, which must not become 10,000 series."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.child_process import spawn, terminate
from streams.kafka.broker import EmbeddedBroker, free_port, wait_for_port
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from streams.testing.replay import Burst, labeled_doc
from tests.alert_support import (
    KEYS,
    PER_WINDOW,
    START_TS,
    alert_settings,
    publish,
    stream,
    wait_processed,
)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
DEPLOY = REPO_ROOT / "deploy"
METRIC_KEYS = 20


class Webhook:
    """An HTTP receiver for Alertmanager's webhook: keeps every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.received = threading.Event()
        alerts, received = self.alerts, self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                alerts.extend(json.loads(body)["alerts"])
                received.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def monitoring_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[int, int]]]:
    """Start Debian's Prometheus and Alertmanager with the checked-in rules and routing."""
    procs: list[Any] = []

    def launch(name: str, config: dict[str, Any], args: list[str], port: int) -> None:
        """Write `config`, start the tool on loopback `port`, wait until it listens."""
        (tmp_path / f"{name}.yml").write_text(yaml.safe_dump(config))
        proc = spawn(
            [
                name,
                f"--config.file={tmp_path / f'{name}.yml'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *args,
            ],
            tmp_path / f"{name}.log",
        )
        procs.append(proc)
        wait_for_port("127.0.0.1", port, 30, proc)

    def start(metrics_port: int, webhook_url: str) -> tuple[int, int]:
        am_port, prom_port = free_port(), free_port()
        am_config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
        am_config["receivers"][0]["webhook_configs"][0]["url"] = webhook_url
        am_config["route"]["group_wait"] = "1s"  # seconds here, not minutes
        am_args = [f"--storage.path={tmp_path / 'am-data'}", "--cluster.listen-address="]
        launch("prometheus-alertmanager", am_config, am_args, am_port)
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus" / "rules.yml")],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "feedpulse-alerts",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        launch(
            "prometheus", prom_config, [f"--storage.tsdb.path={tmp_path / 'prom-data'}"], prom_port
        )
        return prom_port, am_port

    yield start
    for proc in procs:
        terminate(proc, 10)


def query(prom_port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return list(json.loads(resp.read())["data"]["result"])


async def test_spike_reaches_the_webhook_and_series_stay_bounded(
    broker: EmbeddedBroker,
    settings_factory: Callable[..., Settings],
    process_factory: Callable[..., Any],
    monitoring_factory: Callable[..., tuple[int, int]],
    webhook: Webhook,
) -> None:
    settings = alert_settings(
        settings_factory,
        broker,
        alert_metric_keys=METRIC_KEYS,
        alert_key_fields=["ticker", "hashtag"],
    )
    prom_port, _ = monitoring_factory(settings.alert_metrics_port, webhook.url)
    await ensure_topics(settings, [settings.output_topic, settings.alerts_topic])
    worker = process_factory(settings, "alerts", log_name="alerts")

    # 10,000 keys seen once each, inside the first windows: too small to alert, too many
    # to deserve a series each.
    noise = [
        labeled_doc(f"n{i}", "just passing by", "neutral", f"hashtag:tag{i}", START_TS + i * 1e-3)
        for i in range(10_000)
    ]
    # The burst is in the last full window; its score must stay up to be scraped.
    docs = stream([Burst("ticker:T3", start=16, windows=1, share=0.85)], 18)
    # Half of the next window: past the burst's end plus the grace, so the burst's window
    # closes, and short of the next slot's end plus the grace, so nothing replaces its score.
    docs = docs[: 17 * len(KEYS) * PER_WINDOW + len(KEYS) * PER_WINDOW // 2]
    await publish(settings, noise + docs)
    await wait_processed(settings, len(noise) + len(docs), within_s=120)

    assert await asyncio.to_thread(webhook.received.wait, 60), "Alertmanager delivered nothing"
    fired = {
        (a["labels"]["alertname"], a["labels"].get("key"), a["status"]) for a in webhook.alerts
    }
    assert fired == {("FeedpulseSentimentSpike", "ticker:T3", "firing")}
    alert = webhook.alerts[0]
    assert alert["labels"]["sentiment"] == "negative" and alert["labels"]["severity"] == "page"

    series = query(prom_port, "count(feedpulse_sentiment_items_total)")
    count = int(series[0]["value"][1])
    assert len(KEYS) * 3 <= count <= (METRIC_KEYS + 1) * 3
    others = query(prom_port, 'sum(feedpulse_sentiment_items_total{key="other"})')
    assert float(others[0]["value"][1]) >= 10_000
    worker.terminate()
    assert worker.wait(timeout=30) == 0
