"""Reading wrk's text report (run with ``--latency``), for every benchmark here."""

from __future__ import annotations

import re
from typing import Any

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class WrkReportError(Exception):
    """wrk printed no summary: it failed to run."""


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def read_report(output: str, label: str) -> dict[str, Any]:
    """requests, seconds, rps, latency_ms (p50...), non_2xx and socket_errors."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if m is None:
        raise WrkReportError(f"wrk ({label}) printed no summary:\n{output}")
    report: dict[str, Any] = {"requests": int(m.group(1)),
                              "seconds": _ms(m.group(2), m.group(3)) / 1000}
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    report["rps"] = float(m.group(1)) if m else 0.0
    report["latency_ms"] = {
        f"p{pct}": round(_ms(number, unit), 3)
        for pct, number, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output,
                                            re.MULTILINE)
    }
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    report["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    report["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       map(int, m.groups()), strict=True)) if m else {}
    return report
