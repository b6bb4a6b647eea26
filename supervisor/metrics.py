"""Prometheus metrics: the daemon's own CollectorRegistry, fed as a StackObserver.

Per-service state and health are read from the stack at scrape time (never stale, and a service
that left the config leaves the output); counters and histograms are fed by the observer calls.
Labels stay bounded: service names come from the config, reasons from `RestartCause`.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.model import ProbeResult, RestartCause, State
from supervisor.status import ServiceStatus, StackObserver

PREFIX = "ovpn_supervisor"
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# The `_created` companion series are of no use to Prometheus here and double the output.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _StackCollector(Collector):
    """Service state (one gauge per state) and health, read from the stack when scraped."""

    def __init__(self, statuses: Callable[[], Sequence[ServiceStatus]]) -> None:
        self.statuses = statuses
        # A snapshot taken on the event loop, so a render may run in a worker thread.
        self.pinned: Sequence[ServiceStatus] | None = None

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        state = GaugeMetricFamily(
            f"{PREFIX}_service_state",
            "1 for the state the service is in, 0 for the others.",
            labels=["service", "state"],
        )
        healthy = GaugeMetricFamily(
            f"{PREFIX}_service_healthy",
            "1 when the service is where it should be (healthy, running, or a completed job).",
            labels=["service"],
        )
        return state, healthy

    def describe(self) -> Iterable[Metric]:
        # Registration asks for names only: do not read the stack for that.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        state, healthy = self._families()
        for status in self.pinned if self.pinned is not None else self.statuses():
            for candidate in State:
                state.add_metric([status.name, candidate.value], float(candidate is status.state))
            healthy.add_metric([status.name], float(status.up_to_target))
        yield state
        yield healthy


class SupervisorMetrics(StackObserver):
    """Every metric the daemon exports; `render()` gives the Prometheus text format."""

    def __init__(
        self,
        *,
        version: str,
        statuses: Callable[[], Sequence[ServiceStatus]],
        docker_connected: Callable[[], bool],
        services: Callable[[], Iterable[str]] = tuple,
        loop_lag: Callable[[], float] = float,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._stack = _StackCollector(statuses)
        self._render_lock = threading.Lock()
        self.registry.register(self._stack)
        self.restarts = Counter(
            f"{PREFIX}_restarts",
            "Restarts decided by the supervisor, by cause.",
            ["service", "reason"],
            registry=r,
        )
        self.probe_duration = Histogram(
            f"{PREFIX}_probe_duration_seconds",
            "Health probe duration, failed probes included.",
            ["service"],
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.probe_failures = Counter(
            f"{PREFIX}_probe_failures", "Failed health probes.", ["service"], registry=r
        )
        self.start_duration = Histogram(
            f"{PREFIX}_container_start_duration_seconds",
            "Time to bring a container up (adopt, start, or create and start).",
            ["service"],
            buckets=START_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            f"{PREFIX}_config_reloads", "Config reloads, by result.", ["result"], registry=r
        )
        self.last_reload = Gauge(
            f"{PREFIX}_config_last_successful_reload_timestamp_seconds",
            "Wall-clock time of the last successful config reload (0: none yet).",
            registry=r,
        )
        self.updates = Counter(
            f"{PREFIX}_image_updates",
            "Image updates, by result (updated: every planned service came up).",
            ["result"],
            registry=r,
        )
        self.update_services = Counter(
            f"{PREFIX}_image_update_services",
            "Services touched by image updates, by outcome (updated, rolled-back, failed, …).",
            ["service", "outcome"],
            registry=r,
        )
        self.last_update = Gauge(
            f"{PREFIX}_image_last_successful_update_timestamp_seconds",
            "Wall-clock time of the last image update that updated everything (0: none yet).",
            registry=r,
        )
        connected = Gauge(
            f"{PREFIX}_docker_connected", "1 while the Docker Engine is reachable.", registry=r
        )
        connected.set_function(lambda: float(docker_connected()))
        lag = Gauge(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the daemon's event loop last woke (probes, restarts and the API wait).",
            registry=r,
        )
        lag.set_function(loop_lag)
        Info(f"{PREFIX}_build", "Version of the running daemon.", registry=r).info(
            {"version": version, "python": platform.python_version()}
        )
        # Both results exist from the start, so `rate()` sees the first reload.
        for result in ("applied", "refused"):
            self.reloads.labels(result)
        self._services = services
        self._series_for: set[str] = set()
        self.track_services()

    def track_services(self) -> None:
        """Every labelled series of every configured service exists (at 0) from the start, so
        `increase()` and `rate()` see the first restart; series of removed services go."""
        wanted = set(self._services())
        for name in wanted - self._series_for:
            for cause in RestartCause:
                self.restarts.labels(name, cause.value)
            for family in (self.probe_failures, self.probe_duration, self.start_duration):
                family.labels(name)
        for name in self._series_for - wanted:
            for cause in RestartCause:
                self.restarts.remove(name, cause.value)
            for family in (self.probe_failures, self.probe_duration, self.start_duration):
                family.remove(name)
        self._series_for = wanted
        for result in ("updated", "not-updated"):
            self.updates.labels(result)

    def snapshot(self) -> Sequence[ServiceStatus]:
        """The services' states now (call on the event loop)."""
        return list(self._stack.statuses())

    def render(self, snapshot: Sequence[ServiceStatus] | None = None) -> bytes:
        """The registry in the Prometheus text exposition format.

        With a `snapshot` (from `snapshot()`), safe to call from a worker thread.
        """
        with self._render_lock:
            self._stack.pinned = snapshot
            try:
                return generate_latest(self.registry)
            finally:
                self._stack.pinned = None

    # -- StackObserver --------------------------------------------------------------------

    def probe_done(self, service: str, result: ProbeResult) -> None:
        self.probe_duration.labels(service).observe(result.latency)
        if not result.ok:
            self.probe_failures.labels(service).inc()

    def container_started(self, service: str, seconds: float) -> None:
        self.start_duration.labels(service).observe(seconds)

    def restart_issued(self, service: str, cause: RestartCause) -> None:
        self.restarts.labels(service, cause.value).inc()

    def reload_done(self, ok: bool, at: float) -> None:
        self.reloads.labels("applied" if ok else "refused").inc()
        if ok:
            self.last_reload.set(at)
            self.track_services()

    def update_done(self, ok: bool, outcomes: dict[str, str], at: float) -> None:
        self.updates.labels("updated" if ok else "not-updated").inc()
        for service, outcome in outcomes.items():
            self.update_services.labels(service, outcome).inc()
        if ok:
            self.last_update.set(at)
