"""What a model replica tells Serve's autoscaler: rows it holds, rows queued for it, time computing.

A model replica sees batches, not rows: the rows that matter for scaling wait upstream, in the
batch queues of the front door (and of composites), or travel to and from the replicas. So each
batch call carries the caller's outstanding rows for this version (``backlog``: queued plus sent
and unanswered) and its source; the replica keeps the latest of each source and drops a source
not heard from for ``stale_after_s`` (a quiet or departed caller).
``deployments.control.autoscale_policy`` turns the reports of all replicas into a count. Pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ReplicaLoad", "BACKLOG_PREFIX"]

BACKLOG_PREFIX = "backlog:"  # the name the policy reads (deployments.control.autoscale_policy)


class ReplicaLoad:
    """Counters of one replica, read by Serve's ``record_autoscaling_stats`` every interval."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, stale_after_s: float = 5.0) -> None:
        self._clock, self._stale_after_s = clock, stale_after_s
        self._rows = 0  # rows in batches this replica holds
        self._backlog: dict[str, tuple[float, int]] = {}  # source -> (when, rows queued there)
        self._busy_since: float | None = None
        self._busy_s = 0.0
        self._since = clock()

    def arrived(self, rows: int, backlog: tuple[str, int] | None) -> None:
        """A batch of ``rows`` reached the replica; ``backlog``: (source, rows it has outstanding)."""
        self._rows += rows
        if backlog is not None:
            self._backlog[str(backlog[0])] = (self._clock(), max(0, int(backlog[1])))

    def computing(self) -> None:
        """The worker thread started a batch."""
        self._busy_since = self._clock()

    def done(self, rows: int) -> None:
        """A batch of ``rows`` finished (answered or failed)."""
        self._rows = max(0, self._rows - rows)
        if self._busy_since is not None:
            self._busy_s += self._clock() - max(self._busy_since, self._since)
            self._busy_since = None

    def stats(self) -> dict[str, float]:
        """Rows held, fresh backlogs by source, and the share of time computing since the last call."""
        now = self._clock()
        busy_s = self._busy_s + (now - max(self._busy_since, self._since) if self._busy_since is not None else 0.0)
        elapsed = now - self._since
        self._since, self._busy_s = now, 0.0
        self._backlog = {s: seen for s, seen in self._backlog.items() if now - seen[0] <= self._stale_after_s}
        report = {"rows": float(self._rows), "busy": min(1.0, busy_s / elapsed) if elapsed > 0 else 0.0}
        report.update({BACKLOG_PREFIX + source: float(rows) for source, (_, rows) in self._backlog.items()})
        return report
