"""Drivers the demo, tests and benchmarks share: output audits, feed replays, scenarios.

May use any of `streams` below the CLI; no worker imports them."""
