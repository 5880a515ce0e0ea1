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
SAFETY_STOP_REASONS = ("delete_fraction", "cancel_fraction")
LISTING_REJECTED_REASONS = ("clock_skew", "duplicate_id", "out_of_order", "future_created_at")
HOLD_STATES = ("active", "expired")


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
            "reaper_safety_stops",
            "Workspaces stopped by a safety guard, by guard.",
            ["workspace", "reason"],
            registry=r,
        )
        self.listing_rejected = Counter(
            "reaper_listing_rejected",
            "Listings refused as inconsistent or skewed (the workspace acted on nothing).",
            ["workspace", "reason"],
            registry=r,
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
        self.archive_backlog = Gauge(
            "reaper_archive_backlog",
            "Ended batches in scope whose results are available and not yet archived.",
            ["workspace"],
            registry=r,
        )
        self.archive_backlog_min_expiry = Gauge(
            "reaper_archive_backlog_min_expiry_seconds",
            "Time until the soonest unarchived results in scope expire (absent when none).",
            ["workspace"],
            registry=r,
        )
        self.results_lost = Counter(
            "reaper_results_lost",
            "Batches in scope first seen with their results gone and no archive.",
            ["workspace"],
            registry=r,
        )
        self.holds = Gauge(
            "reaper_holds", "Holds in the holds file at the last cycle.", ["state"], registry=r
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
        for reason in SAFETY_STOP_REASONS:
            self.safety_stops.labels(workspace=label, reason=reason)
        for reason in LISTING_REJECTED_REASONS:
            self.listing_rejected.labels(workspace=label, reason=reason)
        self.results_lost.labels(workspace=label)
        for action in ("cancel", "delete"):
            for outcome in ACTION_OUTCOMES:
                self.actions.labels(workspace=label, action=action, outcome=outcome)

    def set_holds(self, active: int, expired: int) -> None:
        """Record how many holds the file held at this cycle, by state."""
        self.holds.labels(state="active").set(active)
        self.holds.labels(state="expired").set(expired)

    def set_archive_backlog(
        self, workspace: str | None, count: int, min_expiry_seconds: float | None
    ) -> None:
        """Record a workspace's archive backlog; no soonest expiry removes that series."""
        label = workspace_label(workspace)
        self.archive_backlog.labels(workspace=label).set(count)
        if min_expiry_seconds is None:
            # Absent when none: an alert on "expires within 48h" must not see a stale value.
            self.archive_backlog_min_expiry.remove(label)  # a no-op when absent
        else:
            self.archive_backlog_min_expiry.labels(workspace=label).set(min_expiry_seconds)
