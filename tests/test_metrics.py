"""The metrics start their alerting series at zero so the first failure is visible to rate()."""

from __future__ import annotations

from reaper.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_cycle_outcome_exists_at_zero_before_any_cycle() -> None:
    """increase() needs a series before its first step: all four outcomes start at 0."""
    metrics = Metrics()
    for outcome in ("success", "partial", "failed", "safety_stop"):
        assert sample(metrics, "reaper_cycles_total", outcome=outcome) == 0.0


def test_init_workspace_creates_its_action_and_safety_stop_series() -> None:
    """A workspace's failed-action and safety-stop counters exist at 0 once it is swept."""
    metrics = Metrics()
    stop = {"workspace": "default", "reason": "delete_fraction"}
    assert sample(metrics, "reaper_safety_stops_total", **stop) is None
    metrics.init_workspace(None)
    metrics.init_workspace("wrkspc_a")
    for reason in ("delete_fraction", "cancel_fraction"):
        assert sample(metrics, "reaper_safety_stops_total", workspace="default", reason=reason) == 0
    labels = {"workspace": "wrkspc_a", "action": "delete", "outcome": "failed"}
    assert sample(metrics, "reaper_actions_total", **labels) == 0.0


def test_build_info_carries_the_version() -> None:
    """reaper_build_info is 1 with the package version as its label."""
    from reaper import __version__

    assert sample(Metrics(), "reaper_build_info", version=__version__) == 1.0


def test_init_workspace_starts_listing_rejections_and_lost_results_at_zero() -> None:
    """Alerts on a first refused listing or a first lost result need the series at 0 before."""
    metrics = Metrics()
    metrics.init_workspace("wrkspc_a")
    for reason in ("clock_skew", "duplicate_id", "out_of_order", "future_created_at"):
        labels = {"workspace": "wrkspc_a", "reason": reason}
        assert sample(metrics, "reaper_listing_rejected_total", **labels) == 0.0
    assert sample(metrics, "reaper_results_lost_total", workspace="wrkspc_a") == 0.0


def test_the_archive_backlog_expiry_is_absent_when_nothing_waits() -> None:
    """The soonest expiry is a value while a backlog exists and no series at all once it is gone."""
    metrics = Metrics()
    metrics.set_archive_backlog(None, 3, 7200.0)
    assert sample(metrics, "reaper_archive_backlog", workspace="default") == 3.0
    expiry = "reaper_archive_backlog_min_expiry_seconds"
    assert sample(metrics, expiry, workspace="default") == 7200.0
    metrics.set_archive_backlog(None, 0, None)
    assert sample(metrics, "reaper_archive_backlog", workspace="default") == 0.0
    assert sample(metrics, expiry, workspace="default") is None
    metrics.set_archive_backlog("wrkspc_b", 0, None)  # never set before: no error
    assert sample(metrics, expiry, workspace="wrkspc_b") is None


def test_holds_are_counted_by_state() -> None:
    """reaper_holds carries the active and expired counts of the last cycle."""
    metrics = Metrics()
    metrics.set_holds(active=2, expired=5)
    assert sample(metrics, "reaper_holds", state="active") == 2.0
    assert sample(metrics, "reaper_holds", state="expired") == 5.0
