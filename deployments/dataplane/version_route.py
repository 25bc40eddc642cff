"""One served version as a replica routes to it: its handle, its batch queue, its counters.

``VersionRoute`` validates a request against the version's signature, queues its rows in the
version's ``Batcher`` (or a Python model's request whole), runs formed batches on the version's
replicas through their DeploymentHandle, and counts requests and batches for ``/metrics``.
``deployments.dataplane.router.ModelRouter`` holds one per served version.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError

from backends.errors import ModelNotReady, Overloaded, ReplicaLost, RequestTimeout, status_of, unwrap_error
from deployments.dataplane.batcher import Batcher
from deployments.dataplane.batching import BatchStats, split_outputs, stack_inputs
from deployments.dataplane.model_version import VersionInfo
from deployments.dataplane.table import Route
from deployments.names import VERSION_DEPLOYMENT
from deployments.observability.metrics import Recorder, failure_reason
from deployments.protocol.v2 import validate_inputs

__all__ = ["VersionRoute", "BATCHES_IN_FLIGHT_PER_REPLICA", "request_timeout"]

_DESCRIBE_TIMEOUT_S = 30.0
# Batches sent to one replica before its answers come back: a Serve call's round trip is several
# times a small model's compute, so with two a replica idled between batches (fraud at 64
# connections: 3,490 QPS with two, 4,950 with six, same run of wrk on the 2-core machine).
BATCHES_IN_FLIGHT_PER_REPLICA = 4
# This process's name in the backlog a batch call carries (deployments.dataplane.replica_load).
BACKLOG_SOURCE = uuid.uuid4().hex[:12]
logger = logging.getLogger("infergrid")


class _QueuedRow:
    """One row waiting in a batch queue (or a whole request of ``rows`` rows, for a Python model):
    when it was queued, and whether a batch took it."""

    __slots__ = ("queued_at", "inputs", "started", "rows")

    def __init__(self, queued_at: float, inputs: dict[str, np.ndarray], rows: int = 1) -> None:
        self.queued_at, self.inputs, self.started, self.rows = queued_at, inputs, False, rows


def request_timeout(what: str, timeout_s: float) -> RequestTimeout:
    """The error of a request that ``what`` (a model version, a split) did not answer within ``timeout_s``."""
    return RequestTimeout(f"{what}: no answer within {timeout_s * 1000:.0f} ms (default_timeout_microseconds, "
                          "or the request's X-Request-Timeout-Ms header / parameters.timeout)")


def _answer(result: dict[str, np.ndarray] | Exception) -> dict[str, np.ndarray]:
    """One request's outputs out of a batch of whole requests, or its own error raised."""
    if isinstance(result, Exception):
        raise result
    return result


class VersionRoute:
    """Batch queue, counters and handle for one served version (one version application).

    With a ``recorder`` every request and batch is counted for ``/metrics`` (Triton's numbers).
    """

    def __init__(self, model: str, route: Route, handle: Any = None, recorder: Recorder | None = None) -> None:
        self.model, self.route, self.version = model, route, route.version
        self._recorder, self._labels = recorder, (model, str(route.version))
        self._series = recorder.series(model, str(route.version)) if recorder is not None else None
        self.handle = handle if handle is not None else serve.get_deployment_handle(VERSION_DEPLOYMENT,
                                                                                     app_name=route.app)
        self.info: VersionInfo | None = None
        self.stats = BatchStats()
        self._batcher: Batcher | None = None
        self._queued = 0  # rows in the batch queue, for max_queue_size
        self._in_flight = 0  # rows sent to the replicas and not answered yet, for the autoscaler
        self._lock = asyncio.Lock()

    async def describe(self) -> VersionInfo:
        """The version's signature, fetched once from its replicas.

        Raises:
            ModelNotReady: the version's replicas are not up.
        """
        if self.info is not None:
            return self.info
        async with self._lock:
            if self.info is None:
                try:
                    info = await asyncio.wait_for(self.handle.describe.remote(), _DESCRIBE_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                    raise ModelNotReady(f"model {self.model!r} version {self.version} is not ready: {exc}") from exc
                self.info = info
                self._configure_batching()
        return self.info  # type: ignore[return-value]

    async def run_signature(self, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request on another signature of the version (TF Serving's classify and regress): a
        replica call of its own, not batched, counted as a request of the version."""
        await self.describe()
        start = time.perf_counter()
        try:
            outputs = await self.handle.run_signature.remote(name, inputs)
        except Exception as exc:
            if self._recorder is not None:
                self._recorder.failure(self.model, str(self.version), failure_reason(status_of(unwrap_error(exc))),
                                       time.perf_counter() - start)
            raise
        if self._series is not None:
            rows = len(next(iter(inputs.values()))) if inputs else 1
            elapsed = time.perf_counter() - start
            self._series.succeeded(rows, elapsed, 0.0, elapsed, int(time.time() * 1000))
            self._series.executed(rows, elapsed)
        return outputs

    def _configure_batching(self) -> None:
        """Rows per batch and queue delay from the route; a few batches in flight per replica, so
        some travel while one computes."""
        rows, delay_s = self.route.batch_rows, self.route.queue_delay_us / 1e6
        in_flight = BATCHES_IN_FLIGHT_PER_REPLICA * max(1, self.route.instances)
        if rows <= 0:
            self._batcher = None
        elif self._batcher is None:
            self._batcher = Batcher(self._run_batch, rows, delay_s, in_flight)
        else:  # in place: rows already queued stay queued
            self._batcher.configure(rows, delay_s, in_flight)

    async def retire(self, after_s: float) -> None:
        """Release the handle's router once requests routed before the switch have long finished."""
        await asyncio.sleep(after_s)
        try:
            await self.handle.shutdown_async()
            logger.debug("released the handle of %s", self.route.app)
        except Exception as exc:  # noqa: BLE001 - best effort: the application may be gone already
            logger.debug("closing the handle of %s: %s", self.route.app, exc)

    def update(self, route: Route) -> None:
        """New batching settings for the same application, applied without dropping queued rows."""
        self.route = route
        if self.info is not None:
            self._configure_batching()

    async def _run_batch(self, items: list[_QueuedRow]) -> list[tuple[dict, float, float]]:
        """One batch of this version's queue (the batcher leaves out rows whose caller gave up: those
        were unqueued by the caller)."""
        self._unqueue(sum(item.rows for item in items))
        return await self.run_rows(items)

    async def run_rows(self, items: list[_QueuedRow], backlog: int | None = None) -> list[tuple[dict, float, float]]:
        """One formed batch on the version's replicas, counted as its batch: (outputs, seconds queued,
        seconds of the batch) for each item. Also what a split's shared queue sends (``split_pool``).
        The call carries this caller's outstanding rows for the version's autoscaler: those still
        queued behind it (``backlog``, else this version's queue) and those sent and not answered.

        Raises:
            ReplicaLost: the replica running it died; any other failure as the replica raised it.
        """
        start = time.perf_counter()
        for item in items:
            item.started = True
        rows = sum(item.rows for item in items)
        self._in_flight += rows
        waiting = (BACKLOG_SOURCE, (self._queued if backlog is None else backlog) + self._in_flight)
        try:
            if self.info is not None and self.info.whole_requests:  # a Python model: a result or error each
                results = await self.handle.infer_requests.remote([item.inputs for item in items], waiting)
            else:
                stacked, counts = stack_inputs([item.inputs for item in items])
                results = split_outputs(await self.handle.infer_batch.remote(stacked, waiting), counts)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise
        finally:
            self._in_flight -= rows
        compute_s = time.perf_counter() - start
        self._count_batch(rows, compute_s)
        return [(part, start - item.queued_at, compute_s) for part, item in zip(results, items, strict=True)]

    def _unqueue(self, rows: int) -> None:
        """Rows leave the batch queue (negative: join it); the exported depth follows."""
        self._queued -= rows
        if self._series is not None:
            self._series.queued -= rows

    def _count_batch(self, rows: int, compute_s: float) -> None:
        self.stats.record_batch(rows)
        if self._series is not None:
            self._series.executed(rows, compute_s)

    async def infer(self, inputs: dict[str, np.ndarray], timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Validate, then run through the batch queue (or alone without dynamic batching).

        ``timeout_s`` (the request's own, else the model's ``default_timeout_microseconds``) bounds
        the wait: past it the request fails with 504 (its row may still run in a batch already formed).

        The queue holds single rows, so a formed batch never exceeds its row limit. A request of
        n rows enters as n rows and gets them back in order (they may span two batches). Counting
        rows this way avoids ``batch_size_fn``, which Serve re-evaluates over the whole batch for
        every arrival.
        """
        timeout_s = timeout_s or (self.route.timeout_us / 1e6 if self.route.timeout_us else None)
        series = self._series
        if series is None:
            return (await self._bounded(inputs, timeout_s))[0]
        start = time.perf_counter()
        series.pending += 1
        try:
            outputs, rows, queue_s, compute_s = await self._bounded(inputs, timeout_s)
        except Exception as exc:
            self._recorder.failure(*self._labels, failure_reason(status_of(exc)), time.perf_counter() - start)
            raise
        finally:
            series.pending -= 1
        series.succeeded(rows, time.perf_counter() - start, queue_s, compute_s, int(time.time() * 1000))
        return outputs

    async def _bounded(self, inputs: dict[str, np.ndarray],
                       timeout_s: float | None) -> tuple[dict[str, np.ndarray], int, float, float]:
        try:
            if not timeout_s:
                return await self._infer(inputs)
            return await asyncio.wait_for(self._infer(inputs), timeout_s)
        except TimeoutError:
            raise request_timeout(f"model {self.model!r} version {self.version}", timeout_s) from None
        except Exception as exc:
            self._raise_if_lost(exc)
            raise

    def _raise_if_lost(self, exc: Exception) -> None:
        """Raise ``ReplicaLost`` if ``exc`` is a replica's death (a RayActorError itself, or one carried
        by a task error); return otherwise."""
        cause = unwrap_error(exc)
        if isinstance(cause, RayActorError) and not isinstance(exc, ReplicaLost):
            raise ReplicaLost(f"model {self.model!r} version {self.version}: the replica running this "
                              f"request died ({type(cause).__name__}); Serve is replacing it, retry") from exc

    def count_pooled(self, rows: int, seconds: float, queue_s: float, compute_s: float) -> None:
        """One request a split's shared queue sent here, answered (``deployments.dataplane.split_pool``)."""
        self.stats.requests += 1
        if self._series is not None:
            self._series.succeeded(rows, seconds, queue_s, compute_s, int(time.time() * 1000))

    def count_pooled_failure(self, exc: Exception, seconds: float) -> None:
        """One request a split's shared queue sent here, failed."""
        self.stats.requests += 1
        if self._recorder is not None:
            self._recorder.failure(*self._labels, failure_reason(status_of(exc)), seconds)

    def pooled_queue(self, rows: int) -> None:
        """Rows join (negative: leave) a split's shared queue: counted in the model's queue depth here."""
        if self._series is not None:
            self._series.queued += rows

    def _admit(self, rows: int) -> None:
        """``rows`` join the batch queue, unless it is full (``max_queue_size``)."""
        limit = self.route.max_queue_rows
        if limit and self._queued + rows > limit:
            raise Overloaded(f"model {self.model!r} version {self.version}: the queue is full "
                             f"({self._queued} rows waiting; max_queue_size {limit}); retry later")
        self._unqueue(-rows)

    async def _infer_whole(self, inputs: dict[str, np.ndarray], rows: int) -> tuple[dict, int, float, float]:
        """A Python model's request: queued whole (``execute`` sees it as one request), failed alone."""
        batcher = self._batcher
        if batcher is None:
            start = time.perf_counter()
            result = (await self.handle.infer_requests.remote([inputs]))[0]
            compute_s = time.perf_counter() - start
            self._count_batch(rows, compute_s)
            return _answer(result), rows, 0.0, compute_s
        self._admit(rows)
        item = _QueuedRow(time.perf_counter(), inputs, rows)
        try:
            result, queue_s, compute_s = await batcher.submit(item, rows)
        except asyncio.CancelledError:  # timed out before a batch took it: it leaves the queue now
            if not item.started:
                self._unqueue(rows)
            raise
        return _answer(result), rows, queue_s, compute_s

    async def _infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int, float, float]:
        """(outputs, rows, seconds queued, seconds computing) of one request."""
        info = await self.describe()
        rows = validate_inputs(inputs, info.signature, info.max_batch_size)
        self.stats.requests += 1
        if info.whole_requests:
            return await self._infer_whole(inputs, rows)
        batcher = self._batcher
        if batcher is None:
            start = time.perf_counter()
            outputs = await self.handle.infer_batch.remote(inputs)
            compute_s = time.perf_counter() - start
            self._count_batch(rows, compute_s)
            return outputs, rows, 0.0, compute_s
        self._admit(rows)
        now = time.perf_counter()
        queued = [_QueuedRow(now, inputs if rows == 1 else {name: array[i:i + 1] for name, array in inputs.items()})
                  for i in range(rows)]
        try:
            parts = [await batcher.submit(queued[0])] if rows == 1 else \
                await asyncio.gather(*(batcher.submit(i) for i in queued))
        except asyncio.CancelledError:  # timed out: rows no batch took leave the queue now
            self._unqueue(sum(not item.started for item in queued))
            raise
        if rows == 1:
            outputs, queue_s, compute_s = parts[0]
            return outputs, 1, queue_s, compute_s
        outputs = {name: np.concatenate([part[0][name] for part in parts]) for name in parts[0][0]}
        return outputs, rows, max(p[1] for p in parts), max(p[2] for p in parts)
