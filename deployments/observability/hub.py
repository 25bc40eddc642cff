"""The cluster's metrics hub: one detached actor that every recording replica reports to.

Why a hub instead of Ray's own metrics pipeline: Ray exports each node's metrics on that node's
own port, so one ``/metrics`` for the whole cluster would mean scraping every node from the
ingress, and Triton's exact metric names and Triton's statistics extension need the numbers
themselves, not their Prometheus text. Replicas already hold cumulative numbers (a ``Recorder``);
a reporter task sends them every ``REPORT_INTERVAL_S``, and the hub keeps the latest snapshot of
each replica. A replica not heard from for ``STALE_AFTER_S`` is gone: its counters and histograms
are folded into a retired total (so cluster counts never go backwards), its gauges dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from deployments.observability.metrics import Recorder, merge_snapshots

__all__ = ["MetricsHub", "HUB_NAME", "hub_handle", "report_forever", "replica_recorder", "metrics_enabled",
           "REPORT_INTERVAL_S"]

HUB_NAME = "infergrid-metrics"
REPORT_INTERVAL_S = 1.0
STALE_AFTER_S = 30.0
logger = logging.getLogger("infergrid")


class MetricsHub:
    """The latest snapshot of every replica that reports, and the merge of them all."""

    def __init__(self) -> None:
        self._live: dict[str, tuple[float, dict]] = {}
        self._retired: dict = {}

    def report(self, replica: str, snapshot: dict) -> None:
        """A replica's cumulative numbers (replaces what it sent before)."""
        self._live[replica] = (time.monotonic(), snapshot)

    def collect(self) -> dict:
        """Every replica's numbers merged: counters and histograms summed (retired replicas
        included), gauges summed over the live ones."""
        now = time.monotonic()
        stale = [r for r, (seen, _) in self._live.items() if now - seen > STALE_AFTER_S]
        if stale:
            retired = [self._live.pop(r)[1] for r in stale]
            self._retired = merge_snapshots([self._retired, *retired], gauges_from=[])
        live = [snapshot for _, snapshot in self._live.values()]
        return merge_snapshots([self._retired, *live], gauges_from=live)

    def per_replica(self, name: str, labels: list[str]) -> dict[str, float]:
        """One counter's value in each live replica's last report (for tests and debugging)."""
        out = {}
        for replica, (_, snapshot) in self._live.items():
            for counter, counter_labels, value in snapshot.get("counters", []):
                if counter == name and list(counter_labels) == list(labels):
                    out[replica] = value
        return out


def hub_handle():
    """The hub actor, started on first use (detached: it outlives whoever started it)."""
    import ray

    from deployments.names import CONTROLLER_NAMESPACE

    return ray.remote(MetricsHub).options(
        name=HUB_NAME, namespace=CONTROLLER_NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_restarts=-1, max_task_retries=-1).remote()


async def report_forever(replica: str, recorder: Recorder, before_report=None) -> None:
    """Send ``recorder``'s snapshot to the hub every ``REPORT_INTERVAL_S``, for the replica's life.

    ``before_report`` (optional) refreshes sampled gauges first (GPU memory, say).
    """
    hub = None
    while True:
        await asyncio.sleep(REPORT_INTERVAL_S)
        try:
            if before_report is not None:
                before_report(recorder)
            if hub is None:
                hub = hub_handle()
            await hub.report.remote(replica, recorder.snapshot())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - metrics never take a replica down
            logger.debug("metrics report failed (%s); retrying", exc)
            hub = None


def metrics_enabled(config) -> bool:
    """False for a model whose config says ``parameters { key: "metrics" value: { string_value: "false" } }``."""
    return str(config.parameter("metrics", "true")).lower() not in ("false", "0", "off")


def replica_recorder(enabled: bool = True, before_report=None) -> Recorder | None:
    """A recorder for this Serve replica, reported to the hub by a task on the running loop.

    Returns None when ``enabled`` is false (a model with ``parameters { key: "metrics" value:
    { string_value: "false" } }``): nothing is counted, nothing is sent.
    """
    if not enabled:
        return None
    from ray import serve

    recorder = Recorder()
    replica = serve.get_replica_context().replica_id.unique_id
    task = asyncio.get_running_loop().create_task(report_forever(replica, recorder, before_report))
    _REPORTERS.add(task)
    task.add_done_callback(_REPORTERS.discard)
    return recorder


_REPORTERS: set[asyncio.Task] = set()  # keeps the report tasks referenced
