#!/usr/bin/env python3
"""Dependency audit for CI: pip-audit over an installed environment, as a readable table.

Exit codes: 0 when no known vulnerability has a fix available (vulnerabilities without a
fix, and packages that could not be audited, are printed as warnings); 1 when at least one
known vulnerability has a fix version; 2 when pip-audit itself could not run or its report
could not be read. With --require-coverage, 3 when no installed package could be audited
at all (the vulnerability service was unreachable), so an empty audit cannot pass as clean.

Usage: python .ci/audit_deps.py [--python .venv/bin/python] [--report FILE] [--from-json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_CLEAN, EXIT_FIXABLE, EXIT_ERROR, EXIT_NO_COVERAGE = 0, 1, 2, 3


@dataclass(frozen=True)
class Finding:
    """One known vulnerability of one installed package."""

    package: str
    version: str
    vuln_id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Report:
    """What pip-audit found: vulnerabilities, packages audited, packages it skipped and why."""

    findings: list[Finding]
    audited: list[str]
    skipped: dict[str, str]

    @property
    def fixable(self) -> list[Finding]:
        return [f for f in self.findings if f.fix_versions]

    @property
    def unfixable(self) -> list[Finding]:
        return [f for f in self.findings if not f.fix_versions]


def run_pip_audit(python: str, timeout_s: float) -> dict[str, Any]:
    """Run pip-audit in the environment of `python` and return its JSON report."""
    cmd = [
        python,
        "-m",
        "pip_audit",
        "--format",
        "json",
        "--skip-editable",
        "--progress-spinner",
        "off",
        "--desc",
        "on",
        "--aliases",
        "on",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    # pip-audit exits 1 when it finds vulnerabilities; the JSON on stdout is what counts.
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(
            f"pip-audit exited {proc.returncode} without a JSON report:\n{proc.stderr.strip()}"
        ) from None
    return report


def parse_report(raw: dict[str, Any]) -> Report:
    """pip-audit's JSON (`{"dependencies": [...], "fixes": [...]}`) as a Report."""
    findings: list[Finding] = []
    audited: list[str] = []
    skipped: dict[str, str] = {}
    for dep in raw.get("dependencies", []):
        name = str(dep.get("name", "?"))
        if "skip_reason" in dep:
            skipped[name] = str(dep["skip_reason"])
            continue
        version = str(dep.get("version", "?"))
        audited.append(f"{name} {version}")
        for vuln in dep.get("vulns", []):
            findings.append(
                Finding(
                    package=name,
                    version=version,
                    vuln_id=str(vuln.get("id", "?")),
                    aliases=tuple(str(a) for a in vuln.get("aliases") or ()),
                    fix_versions=tuple(str(v) for v in vuln.get("fix_versions") or ()),
                    description=" ".join(str(vuln.get("description") or "").split()),
                )
            )
    return Report(findings, audited, skipped)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


def finding_rows(findings: list[Finding], describe: bool) -> list[list[str]]:
    rows = []
    for f in sorted(findings, key=lambda f: (f.package.lower(), f.vuln_id)):
        ids = ", ".join([f.vuln_id, *f.aliases[:2]])
        row = [f.package, f.version, ids, ", ".join(f.fix_versions) or "none"]
        if describe:
            row.append(f.description[:80] + ("..." if len(f.description) > 80 else ""))
        rows.append(row)
    return rows


def render(report: Report) -> str:
    """The whole report as text, most urgent first."""
    out: list[str] = []
    total = len(report.audited) + len(report.skipped)
    out.append(
        f"pip-audit: {len(report.audited)} of {total} installed packages audited, "
        f"{len(report.findings)} known vulnerabilities "
        f"({len(report.fixable)} with a fix, {len(report.unfixable)} without)"
    )
    if report.fixable:
        out += ["", "ERROR: known vulnerabilities with a fix available (upgrade these):"]
        head = ["package", "installed", "vulnerability", "fixed in", "summary"]
        out.append(table(finding_rows(report.fixable, describe=True), head))
    if report.unfixable:
        out += ["", "WARNING: known vulnerabilities without a fix yet:"]
        head = ["package", "installed", "vulnerability", "fixed in", "summary"]
        out.append(table(finding_rows(report.unfixable, describe=True), head))
    if report.skipped:
        out += ["", f"WARNING: {len(report.skipped)} packages could not be audited:"]
        rows = [[name, reason] for name, reason in sorted(report.skipped.items())]
        out.append(table(rows, ["package", "reason"]))
    if total and not report.audited:
        out += [
            "",
            "WARNING: no package could be audited: the vulnerability service was unreachable "
            "or knows none of them; this run proves nothing about known vulnerabilities.",
        ]
    return "\n".join(out)


def exit_code(report: Report, require_coverage: bool) -> int:
    if report.fixable:
        return EXIT_FIXABLE
    if require_coverage and not report.audited:
        return EXIT_NO_COVERAGE
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the environment to audit (needs pip-audit installed; default: this one)",
    )
    parser.add_argument("--from-json", type=Path, help="read a saved pip-audit JSON report instead")
    parser.add_argument("--report", type=Path, help="also write pip-audit's raw JSON here")
    parser.add_argument(
        "--require-coverage",
        action="store_true",
        help="fail (exit 3) when no package at all could be audited",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds for pip-audit")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        if args.from_json:
            raw = json.loads(args.from_json.read_text())
        else:
            raw = run_pip_audit(args.python, args.timeout)
        report = parse_report(raw)
    except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: dependency audit could not run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.report:
        args.report.write_text(json.dumps(raw, indent=2) + "\n")
    print(render(report))
    code = exit_code(report, args.require_coverage)
    verdict = {
        EXIT_CLEAN: "passed",
        EXIT_FIXABLE: "FAILED (fixable vulnerabilities)",
        EXIT_NO_COVERAGE: "FAILED (nothing could be audited)",
    }[code]
    print(f"\ndependency audit {verdict} in {time.monotonic() - started:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
