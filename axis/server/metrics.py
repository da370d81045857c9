"""Counters and one latency histogram in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{v}"' for k, v in labels] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._help: dict[str, str] = {}
        self._histogram: dict[Labels, list[float]] = {}
        self._histogram_sum: dict[Labels, float] = defaultdict(float)

    def count(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._help[name] = help_text
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self._histogram.setdefault(key, [0.0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._histogram_sum[key] += seconds

    def render(self, gauges: dict[str, tuple[str, dict[Labels, float]]]) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
            name = "axis_request_seconds"
            lines += [f"# HELP {name} Time to answer API requests.", f"# TYPE {name} histogram"]
            for key, counts in sorted(self._histogram.items()):
                running = 0.0
                for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                    running += n
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    bucket = _labels(key, 'le="' + le + '"')
                    lines.append(f"{name}_bucket{bucket} {running:g}")
                lines.append(f"{name}_sum{_labels(key)} {self._histogram_sum[key]:g}")
                lines.append(f"{name}_count{_labels(key)} {running:g}")
        for name, (help_text, series) in sorted(gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
        return "\n".join(lines) + "\n"
