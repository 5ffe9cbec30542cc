"""Prometheus ``/metrics`` over HTTP for one process, read from live state at scrape time.

Each server builds its own :class:`prometheus_client.CollectorRegistry` (never the
module-global one), so several servers in one process (tests) do not collide, and its
series are produced by a ``read()`` callable when scraped: nothing is counted on the hot
path. ``port`` 0 picks a free port, -1 serves nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("telemetry")
OFF = -1


@dataclass(frozen=True)
class Series:
    """One sample: ``kind`` is ``gauge`` or ``counter`` (whose name ends in ``_total``)."""

    name: str
    kind: str
    help: str
    value: float


class _Collector:
    def __init__(self, read: Callable[[], Iterable[Series]]):
        self._read = read

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for s in self._read():
            value = float(s.value) if s.value is not None else math.nan
            if s.kind == "counter":
                yield CounterMetricFamily(s.name, s.help, value=value)
            else:
                yield GaugeMetricFamily(s.name, s.help, value=value)


class MetricsEndpoint:
    """``GET http://host:port/metrics``: the series of ``read()`` plus process_* (RSS, CPU)."""

    def __init__(self, host: str, port: int, read: Callable[[], Iterable[Series]]):
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._read = read
        self._server = None
        self._thread = None

    @property
    def enabled(self) -> bool:
        return self.requested_port != OFF

    def start(self) -> int | None:
        """Bind and serve in a daemon thread; the bound port (None when switched off)."""
        if not self.enabled:
            return None
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

        registry = CollectorRegistry()
        registry.register(_Collector(self._read))
        ProcessCollector(registry=registry)
        try:
            self._server, self._thread = start_http_server(
                self.requested_port, addr=self.host, registry=registry
            )
        except OSError as exc:
            raise OSError(
                f"cannot serve /metrics on {self.host}:{self.requested_port}: {exc}"
            ) from exc
        self.port = self._server.server_port
        return self.port

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
