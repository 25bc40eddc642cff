"""Guarded rollout in one front-door replica: a traffic policy's candidates judged over tumbling windows of
their unversioned requests (``deployments.repository.traffic.Guard``), against the primary's latency.

``GuardWatch.observe`` is called with every unversioned request's outcome; when a candidate's window
completes it returns an event: ``trip`` (its error rate or its p99 against the primary's broke a rule:
the reason says which and by how much) or ``step`` (the window passed and the guard has a next step).
The data plane applies the event to its own policy at once and reports it to the controller, which
writes it into ``traffic.json`` for every replica (``deployments.control.traffic_calls``). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.repository.traffic import TrafficPolicy

__all__ = ["GuardEvent", "GuardWatch", "p99"]


@dataclass(frozen=True)
class GuardEvent:
    """What a completed window decided for ``version`` (``trip`` or ``step``), and why."""

    event: str
    version: int
    reason: str


def p99(latencies: list[float]) -> float:
    """The 99th percentile (nearest rank) of ``latencies`` (0 for none)."""
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, max(0, int(round(0.99 * len(ordered))) - 1))]


class GuardWatch:
    """The windows of one model's versions in this replica."""

    def __init__(self) -> None:
        self._windows: dict[int, list[tuple[bool, float]]] = {}
        self._primary_p99: float | None = None

    def reset(self) -> None:
        """A new policy: windows start again."""
        self._windows.clear()
        self._primary_p99 = None

    def observe(self, policy: TrafficPolicy, version: int, ok: bool, seconds: float) -> GuardEvent | None:
        """Count one unversioned request of ``version``; an event once a candidate's window completes."""
        guard = policy.guard
        if guard is None:
            return None
        window = self._windows.setdefault(version, [])
        window.append((ok, seconds))
        if len(window) < guard.window:
            return None
        self._windows[version] = []
        latencies = [s for good, s in window if good]
        if version == policy.primary:
            self._primary_p99 = p99(latencies)
            return None
        if version not in policy.candidates:
            return None
        errors = sum(1 for good, _ in window if not good) / len(window)
        if guard.max_error_rate is not None and errors > guard.max_error_rate:
            return GuardEvent("trip", version, f"error rate {errors:.1%} over {len(window)} requests is above "
                                               f"max_error_rate {guard.max_error_rate:.1%}")
        mine = p99(latencies)
        if guard.max_p99_ratio is not None and self._primary_p99 and mine > guard.max_p99_ratio * self._primary_p99:
            return GuardEvent("trip", version, f"p99 {mine * 1000:.1f} ms is above max_p99_ratio "
                                               f"{guard.max_p99_ratio} x the primary's {self._primary_p99 * 1000:.1f} ms")
        if policy.stepped(version) is not None:
            return GuardEvent("step", version, f"a window of {len(window)} requests passed "
                                               f"(error rate {errors:.1%}, p99 {mine * 1000:.1f} ms)")
        return None
