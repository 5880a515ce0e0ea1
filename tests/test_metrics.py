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
    assert sample(metrics, "reaper_safety_stops_total", workspace="default") is None
    metrics.init_workspace(None)
    metrics.init_workspace("wrkspc_a")
    assert sample(metrics, "reaper_safety_stops_total", workspace="default") == 0.0
    labels = {"workspace": "wrkspc_a", "action": "delete", "outcome": "failed"}
    assert sample(metrics, "reaper_actions_total", **labels) == 0.0


def test_build_info_carries_the_version() -> None:
    """reaper_build_info is 1 with the package version as its label."""
    from reaper import __version__

    assert sample(Metrics(), "reaper_build_info", version=__version__) == 1.0
