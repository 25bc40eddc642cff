"""Replica counts of model versions, as gauges and change counters for ``/metrics``.

Serve's autoscaler decides inside Serve's controller, which infergrid's metrics hub does not
hear. So the repository controller samples the live replica actors of every version application
(``ServeCalls.version_replicas``: Ray's named actors, so starting and draining replicas count) every
``SAMPLE_INTERVAL_S`` and turns the samples into
``infergrid_model_replicas`` (live now), ``infergrid_model_replicas_max`` (the bound: the
autoscaler's ``max_replicas`` or the fixed count) and ``infergrid_replica_count_changes``
(direction ``up``/``down``: every scaling decision that took effect, a resize, a lost replica).
A version gone from Serve loses its gauges. ``ReplicaGauges`` is pure; the loop only samples.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from deployments.names import parse_version_app
from deployments.observability.metrics import Recorder

__all__ = ["ReplicaGauges", "sample_forever", "SAMPLE_INTERVAL_S"]

SAMPLE_INTERVAL_S = 2.0
logger = logging.getLogger("infergrid")
Labels = tuple[str, str]  # (model, version)


class ReplicaGauges:
    """Folds samples of running replicas per version application into ``recorder``'s series."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._counts: dict[Labels, int] = {}

    def sample(self, running: Mapping[str, int], most: Mapping[Labels, int]) -> None:
        """``running``: replicas by application name (others than versions are ignored); ``most``:
        the bound of each (model, version) the controller knows."""
        counts: dict[Labels, int] = {}
        for app, replicas in running.items():
            parsed = parse_version_app(app)
            if parsed is not None:  # two tags of one version (a reload beside it) add up
                labels = (parsed[0], str(parsed[1]))
                counts[labels] = counts.get(labels, 0) + int(replicas)
        for labels, count in counts.items():
            before = self._counts.get(labels)
            if before is not None and count != before:
                self._recorder.inc("infergrid_replica_count_changes", (*labels, "up" if count > before else "down"))
                logger.info("model %s: version %s runs %d replicas (was %d)", *labels, count, before)
            self._recorder.set("infergrid_model_replicas", labels, float(count))
            if labels in most:
                self._recorder.set("infergrid_model_replicas_max", labels, float(most[labels]))
        for labels in set(self._counts) - set(counts):
            self._recorder.unset("infergrid_model_replicas", labels)
            self._recorder.unset("infergrid_model_replicas_max", labels)
        self._counts = counts


async def sample_forever(gauges: ReplicaGauges, running: Callable[[], Awaitable[Mapping[str, int]]],
                         most: Callable[[], Mapping[Labels, int]], interval_s: float = SAMPLE_INTERVAL_S) -> None:
    """Sample ``running()`` into ``gauges`` every ``interval_s``, for the controller's life."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            gauges.sample(await running(), most())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - metrics never take the controller down
            logger.debug("replica sample failed (%s); retrying", exc)
