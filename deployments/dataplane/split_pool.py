"""Unkeyed requests of a weighted split, batched together: each formed batch goes to one version.

Why: with a version chosen per request, each version's batch queue fills at its share of the rate, so
a 50/50 split forms batches half as large as one version would and pays the front door's per-batch
cost twice (fraud: 0.55-0.63x one version's QPS in `python -m bench.traffic_policy` before this queue,
0.96-0.99x with it; bench/results/traffic_policy.md and docs/traffic.md).
Here the rows of every unkeyed request wait in one queue; a formed batch goes to the version furthest
behind its share of the rows sent so far (deficit round robin by rows). So the proportions hold over
any run of requests to within one batch (closer than a random draw per request would land), the
assignment depends only on arrival order, never on a request's content, and every batch is as full
as one version's would be.

Only versions that can share a queue pool: the same signature and ``max_batch_size``, dynamic batching
on, not a Python model (whose requests reach ``execute`` whole). The router falls back to a choice per
request otherwise (``TrafficPolicy.choose``), as for sticky and versioned requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np

from backends.errors import Overloaded
from backends.signature import ModelSignature
from deployments.dataplane.batcher import Batcher
from deployments.dataplane.version_route import (BATCHES_IN_FLIGHT_PER_REPLICA, VersionRoute, _QueuedRow,
                                                 request_timeout)
from deployments.protocol.v2 import validate_inputs
from deployments.repository.traffic import TrafficPolicy

__all__ = ["SplitPool", "poolable", "failed_version", "tag_version"]


def poolable(policy: TrafficPolicy, routes: Mapping[int, VersionRoute]) -> dict[int, VersionRoute] | None:
    """The policy's live versions (weight above 0) as routes, when two or more of them can share one
    batch queue (all prepared, same signature and batch limit, batching on, tensors stacked); else None."""
    live = {version: routes.get(version) for version, _ in policy.live}
    if len(live) < 2 or any(route is None or route.info is None for route in live.values()):
        return None
    infos = [route.info for route in live.values()]  # type: ignore[union-attr]
    first = infos[0]
    if any(info.whole_requests or info.signature != first.signature or info.max_batch_size != first.max_batch_size
           or info.max_batch_size <= 0 for info in infos):  # type: ignore[union-attr]
        return None
    if any(route.route.batch_rows <= 0 for route in live.values()):  # type: ignore[union-attr]
        return None
    return live  # type: ignore[return-value]


def tag_version(exc: BaseException, version: int) -> BaseException:
    """``exc`` marked as the failure of ``version``: a split's caller did not choose the version itself,
    and its guard counts the failure against the version that failed."""
    exc.infergrid_version = version  # type: ignore[attr-defined]
    return exc


def failed_version(exc: BaseException) -> int | None:
    """The version ``tag_version`` marked ``exc`` with (None: not marked)."""
    return getattr(exc, "infergrid_version", None)


class SplitPool:
    """The shared batch queue of one model's split in one replica (``bind`` it to the split first)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._weights: dict[int, float] = {}
        self._routes: dict[int, VersionRoute] = {}
        self._sent: dict[int, int] = {}  # rows sent per version since the weights were set
        self._batcher: Batcher | None = None
        self._queued = 0
        self._max_queue_rows = 0
        self._timeout_s: float | None = None
        self._signature: ModelSignature | None = None  # the live versions' (one and the same)
        self._max_batch_size = 0

    def bind(self, policy: TrafficPolicy, live: Mapping[int, VersionRoute]) -> None:
        """Serve ``policy``'s split over ``live`` (from ``poolable``); rows already queued stay queued."""
        weights = {version: float(weight) for version, weight in policy.live}
        if weights != self._weights:
            self._weights, self._sent = weights, dict.fromkeys(weights, 0)
        self._routes = dict(live)
        settings = [route.route for route in live.values()]
        rows = min(s.batch_rows for s in settings)
        delay_s = min(s.queue_delay_us for s in settings) / 1e6
        in_flight = sum(BATCHES_IN_FLIGHT_PER_REPLICA * max(1, s.instances) for s in settings)
        if self._batcher is None:
            self._batcher = Batcher(self._run, rows, delay_s, in_flight)
        else:
            self._batcher.configure(rows, delay_s, in_flight)
        limits = [s.max_queue_rows for s in settings if s.max_queue_rows]
        self._max_queue_rows = min(limits) if limits else 0
        timeouts = [s.timeout_us for s in settings if s.timeout_us]
        self._timeout_s = min(timeouts) / 1e6 if timeouts else None
        info = next(iter(live.values())).info
        self._signature, self._max_batch_size = info.signature, info.max_batch_size  # type: ignore[union-attr]

    def _choose(self, rows: int) -> int:
        """The version furthest behind its share of the rows sent, once these ``rows`` are counted."""
        total, weight_sum = sum(self._sent.values()) + rows, sum(self._weights.values())
        version = max(self._weights, key=lambda v: self._weights[v] * total / weight_sum - self._sent[v])
        self._sent[version] += rows
        return version

    async def _run(self, items: list[_QueuedRow]) -> list[tuple[int, object, float, float]]:
        """One formed batch, to the version ``_choose`` names: (version, outputs or the batch's error,
        seconds queued, seconds of the batch) for each item."""
        rows = sum(item.rows for item in items)
        version = self._choose(rows)
        route = self._routes[version]
        self._leave(rows)
        try:
            results = await route.run_rows(items, self._queued)  # marks the items started
        except Exception as exc:  # noqa: BLE001 - every item of the batch gets it, with the version
            return [(version, tag_version(exc, version), 0.0, 0.0)] * len(items)
        return [(version, outputs, queue_s, compute_s) for outputs, queue_s, compute_s in results]

    def _leave(self, rows: int) -> None:
        """Rows leave the shared queue (negative: join it)."""
        self._queued -= rows
        home = next(iter(self._routes.values()), None)
        if home is not None:
            home.pooled_queue(-rows)

    async def infer(self, inputs: dict[str, np.ndarray], timeout_s: float | None = None) -> tuple[int, dict]:
        """(version that answered, outputs) of one unkeyed request, validated, queued and batched.

        Raises:
            Overloaded: the shared queue holds ``max_queue_size`` rows (the smallest of the versions').
            RequestTimeout: no answer within ``timeout_s`` (else the versions' smallest default timeout).
        """
        rows = validate_inputs(inputs, self._signature, self._max_batch_size)  # type: ignore[arg-type]
        if self._max_queue_rows and self._queued + rows > self._max_queue_rows:
            raise Overloaded(f"model {self.model!r}: the queue is full ({self._queued} rows waiting; "
                             f"max_queue_size {self._max_queue_rows}); retry later")
        timeout_s = timeout_s or self._timeout_s
        item = _QueuedRow(time.perf_counter(), inputs, rows)
        self._leave(-rows)
        future = self._batcher.submit(item, rows)  # type: ignore[union-attr]
        try:
            version, result, queue_s, compute_s = await (asyncio.wait_for(future, timeout_s) if timeout_s
                                                         else future)
        except TimeoutError:
            timed_out = request_timeout(f"model {self.model!r}", timeout_s)  # type: ignore[arg-type]
            primary = self._routes.get(max(self._weights, key=self._weights.__getitem__))
            if primary is not None:  # no version took it: counted against the split's primary
                primary.count_pooled_failure(timed_out, time.perf_counter() - item.queued_at)
            raise timed_out from None
        finally:
            if not item.started:  # gave up before a batch took it
                self._leave(rows)
        route, seconds = self._routes.get(version), time.perf_counter() - item.queued_at
        if isinstance(result, Exception):
            if route is not None:
                route.count_pooled_failure(result, seconds)
            raise result
        if route is not None:
            route.count_pooled(rows, seconds, queue_s, compute_s)
        return version, result  # type: ignore[return-value]
