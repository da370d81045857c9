"""``/metrics`` through prometheus-client: one registry per running axis (tests run several in one
process), counters made as they are first counted, the request and delivery-time histograms,
and gauges read when Prometheus scrapes (``Scraped``: queue depth, the verification pool, the
push process, certificates and CRLs near expiry, free disk). Label values are escaped by the
library; docs/alerts.yml holds example alert rules over these series (tests check that every
series they name exists)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_FRESH = 5.0


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)


class _Scrape:
    """What ``generate_latest`` reads: the registry's series, then the gauges of this scrape."""

    def __init__(self, registry: CollectorRegistry, gauges: list[Gauge]) -> None:
        self.registry, self.gauges = registry, gauges

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        for gauge in self.gauges:
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            for labels, value in sorted(gauge.values.items()):
                family.add_metric(list(labels), value)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._scraped: tuple[float, list[Gauge]] | None = None
        self.requests = Histogram(
            "axis_request_seconds", "Time to answer API requests.", ["route"], buckets=BUCKETS, registry=self.registry
        )
        self.delivery_seconds = Histogram(
            "axis_delivery_seconds", "Time from a package's acceptance to its delivery to one recipient.",
            buckets=DELIVERY_BUCKETS, registry=self.registry,
        )

    def count(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        """Add to the counter ``name`` (``..._total``), made on first use with these label names."""
        with self._lock:
            counter = self._counters.get(name)
            if counter is None:
                counter = Counter(name.removesuffix("_total"), help_text, sorted(labels), registry=self.registry)
                self._counters[name] = counter
        (counter.labels(**labels) if labels else counter).inc(amount)

    def observe(self, seconds: float, **labels: str) -> None:
        """One API request's time."""
        self.requests.labels(**labels).observe(seconds)

    def delivered(self, seconds: float) -> None:
        """One delivery, ``seconds`` after its package was accepted."""
        self.delivery_seconds.observe(max(0.0, seconds))

    async def scraped(self, read: Callable[[], Awaitable[list[Gauge]]]) -> list[Gauge]:
        """The gauges ``read`` gives, read again at most every ``SCRAPE_FRESH`` seconds: scrapes
        (anyone can ask for /metrics) never cost more than that."""
        now = time.monotonic()
        if self._scraped is None or now - self._scraped[0] > SCRAPE_FRESH:
            self._scraped = (now, await read())
        return self._scraped[1]

    def render(self, gauges: list[Gauge]) -> bytes:
        return generate_latest(_Scrape(self.registry, gauges))
