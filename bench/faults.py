"""The full fault campaign over the whole loop: at least 100 seeded faults of every kind.

Two classify workers on a local Triton, the model watch, the trainer and the alert worker
run as processes on the embedded broker, under a steady stream with feedback and negative
bursts. Faults: classify worker kill -9, Triton kill -9 (short, and past the session
timeout with a worker killed meanwhile), broker SIGSTOP up to 60 s, model watch, trainer
(with a job in hand) and alert worker kill -9, rollbacks, workers joining and leaving; the
trainer promotes its jobs, so promotions happen mid-stream too.

Prints the schedule, the per-kind table and one JSON line of figures. About 30-40 minutes
on 2 cores; the shortened campaign runs in the default tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.triton.server import TritonServer  # noqa: E402
from streams.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.learning.training import ensure_model  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from streams.testing.faults.campaign import run_campaign  # noqa: E402
from streams.testing.faults.config import CampaignConfig  # noqa: E402
from streams.testing.faults.report import print_report  # noqa: E402
from streams.testing.faults.schedule import Plan  # noqa: E402
from streams.testing.replay import read_tweets  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "tweeteval_sentiment" / "test.jsonl"
FULL = {
    "worker": 15,
    "triton": 12,
    "triton_long": 6,
    "broker": 15,
    "watch": 10,
    "trainer": 10,
    "alerts": 10,
    "rollback": 6,
    "join": 8,
    "leave": 8,
}


def local_triton(repository: Path, log_dir: Path) -> TritonServer:
    """A Triton server (not started) on free loopback ports."""
    return TritonServer(
        repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        python_env=REPO / ".venv" / "triton-env",
        log_path=log_dir / "triton.log",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every fault count")
    parser.add_argument("--max-broker-stop", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    counts = {k: max(1, round(n * args.scale)) for k, n in FULL.items()}
    plan = Plan(counts=counts, gap_s=(1.0, 4.0), broker_stopped_s=(1.0, args.max_broker_stop))
    settings = load_settings(metrics_port=0)
    model = ensure_model(settings)
    work = Path(tempfile.mkdtemp(prefix="feedpulse-faults-"))
    print(f"{plan.total} faults; logs in {work}", file=sys.stderr)
    # The campaign edits its own copy of the repository, with the checked-in Triton config.
    repository = model.path.parent.parent
    with EmbeddedBroker() as broker:
        result = await run_campaign(
            settings.model_copy(update={"bootstrap_servers": broker.bootstrap_servers}),
            broker,
            repository,
            work,
            CampaignConfig(plan=plan, seed=args.seed),
            local_triton,
            read_tweets(DATA),
            progress=lambda line: print(line, file=sys.stderr),
        )
    print_report(result, out=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    asyncio.run(main())
