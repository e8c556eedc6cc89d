"""Drivers the demo, tests and benchmarks share: output audits, feed replays, scenarios.

May use any of `streams`; no worker imports them."""
