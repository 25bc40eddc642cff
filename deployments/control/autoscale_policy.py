"""The autoscaling policy of a model version: replicas for the rows waiting and the time spent computing.

Serve's default policy divides ongoing requests by a target. Behind a batching front door one
request is a whole batch and the front door sends at most a few per replica, so ongoing requests
stay flat while rows pile up in the batch queues (ray-project/ray#22601 asks for queue depth).
This policy reads what each replica reports (``deployments.dataplane.replica_load``):

* ``rows``: rows in the batches the replica holds (running or waiting for its worker thread);
* ``backlog:<source>``: rows that front door (or composite) has outstanding for this version,
  queued in its batch queue or sent and not answered, as it said with its latest batch. Every
  replica of the version hears the same caller, so a source counts once (its largest report);
* ``busy``: the share of the last interval the replica spent computing (0..1).

Rows = the larger of the rows the replicas hold and the rows the callers have outstanding (those
include the rows the replicas hold; a caller without a queue, a plain DeploymentHandle, shows
only in the first). Wanted replicas = max(rows / ``target_rows``, summed busy / ``target_busy``).
A small model on a busy host spends most of a request outside its replica (the front door, the
Ray call), so outstanding rows, not compute time, is what rises first under load. Serve applies
the bounds, the up/down delays and the cold start around it (``_apply_autoscaling_config``).

Serve pickles this module by value into its controller, so it imports nothing of infergrid.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["QueueDepthPolicy", "wanted_replicas"]

BACKLOG_PREFIX = "backlog:"


def wanted_replicas(metrics: dict[str, dict[Any, float]], target_rows: float, target_busy: float) -> tuple[float, dict]:
    """Replicas wanted for ``metrics`` (metric -> replica -> value over the look-back window), and
    the load it saw (rows, busy) for Serve's autoscaling detail."""
    held = sum(metrics.get("rows", {}).values())
    outstanding = sum(max(per_replica.values()) for name, per_replica in metrics.items()
                      if name.startswith(BACKLOG_PREFIX) and per_replica)
    rows = max(held, outstanding)
    busy = sum(metrics.get("busy", {}).values())
    wanted = max(rows / target_rows, busy / target_busy)
    return wanted, {"rows": round(rows, 2), "busy": round(busy, 3)}


class QueueDepthPolicy:
    """Serve's ``policy_function`` (a class: Serve makes one per deployment with ``policy_kwargs``)."""

    def __init__(self, target_rows: float = 1.0, target_busy: float = 0.8) -> None:
        self.target_rows, self.target_busy = max(float(target_rows), 1e-6), max(float(target_busy), 1e-6)

    def __call__(self, ctx: Any) -> tuple[float, dict]:
        if ctx.current_num_replicas == 0:
            # Nothing reports; Serve's cold-start path has already handled requests waiting.
            return ctx.target_num_replicas, {}
        metrics = ctx.aggregated_metrics or {}
        if not metrics:  # replicas not heard from yet: keep what is there
            return ctx.target_num_replicas, {}
        wanted, seen = wanted_replicas(metrics, self.target_rows, self.target_busy)
        # Never ask for less than one replica while rows wait: scale to zero only when idle.
        if wanted > 0:
            wanted = max(1, math.ceil(wanted - 1e-9))
        return wanted, seen
