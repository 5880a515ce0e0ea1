"""Prometheus metrics of SPEC section 4, defined on an injected registry.

Labels are bounded: workspace ids (configured), statuses, actions, rules, outcomes, endpoints and
status codes. Never a batch id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reaper import __version__

# Cycles take from milliseconds (nothing to do) to hours (a first backlog at a low RPM).
_CYCLE_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Delete lag: from eligibility to deletion; minutes on a healthy schedule, days when behind.
_HOUR = 3600
_DAY = 86400
_LAG_BUCKETS = (
    60,
    300,
    900,
    1800,
    _HOUR,
    3 * _HOUR,
    6 * _HOUR,
    12 * _HOUR,
    _DAY,
    3 * _DAY,
    7 * _DAY,
)


CYCLE_OUTCOMES = ("success", "partial", "failed", "safety_stop")
ACTION_OUTCOMES = ("done", "failed", "dry_run", "deferred")


def workspace_label(workspace: str | None) -> str:
    """Label value for a workspace: its id, or ``default`` for the key's own workspace."""
    return workspace or "default"


class Metrics:
    """Every metric the reaper exports, registered on one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.cycles = Counter("reaper_cycles", "Cycles run, by outcome.", ["outcome"], registry=r)
        self.cycle_duration = Histogram(
            "reaper_cycle_duration_seconds",
            "Duration of a cycle.",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "reaper_last_success_timestamp_seconds",
            "Unix time of the end of the last successful cycle.",
            registry=r,
        )
        self.batches = Gauge(
            "reaper_batches",
            "Batches seen in the last cycle.",
            ["workspace", "processing_status"],
            registry=r,
        )
        self.oldest_batch_age = Gauge(
            "reaper_oldest_batch_age_seconds",
            "Age of the oldest batch seen in the last cycle.",
            ["workspace", "processing_status"],
            registry=r,
        )
        self.decisions = Counter(
            "reaper_decisions", "Policy decisions.", ["workspace", "action", "rule"], registry=r
        )
        self.actions = Counter(
            "reaper_actions",
            "Actions on batches, by outcome.",
            ["workspace", "action", "outcome"],
            registry=r,
        )
        self.api_requests = Counter(
            "reaper_api_requests",
            "HTTP requests to the Message Batches API.",
            ["endpoint", "code"],
            registry=r,
        )
        self.api_request_duration = Histogram(
            "reaper_api_request_duration_seconds",
            "Duration of API requests.",
            ["endpoint"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.api_retries = Counter(
            "reaper_api_retries", "Retried API requests.", ["endpoint", "reason"], registry=r
        )
        self.safety_stops = Counter(
            "reaper_safety_stops", "Cycles stopped by a safety guard.", ["workspace"], registry=r
        )
        self.delete_lag = Histogram(
            "reaper_delete_lag_seconds",
            "From the moment a batch became eligible for deletion to its deletion.",
            ["workspace"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.archive = Counter(
            "reaper_archive", "Results archive attempts.", ["workspace", "outcome"], registry=r
        )
        self.archive_bytes = Counter(
            "reaper_archive_bytes", "Bytes of results archived.", ["workspace"], registry=r
        )
        self.build_info = Gauge(
            "reaper_build_info", "Build information; always 1.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        # Start every outcome at 0 so that rate() and increase() see the first failure too.
        for outcome in CYCLE_OUTCOMES:
            self.cycles.labels(outcome=outcome)

    def init_workspace(self, workspace: str | None) -> None:
        """Create a workspace's counter series at 0, so alerts see their first increment."""
        label = workspace_label(workspace)
        self.safety_stops.labels(workspace=label)
        for action in ("cancel", "delete"):
            for outcome in ACTION_OUTCOMES:
                self.actions.labels(workspace=label, action=action, outcome=outcome)
