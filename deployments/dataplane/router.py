"""Routing one model's requests to its versions, as one replica sees them.

A ``ModelRouter`` holds a model's routing table (``deployments.dataplane.table``): for every served version
a DeploymentHandle to the version's replicas and a batch queue (``deployments.dataplane.batcher``) that
combines requests into batches. The front door holds one router per model; ensembles and pipelines
hold one per member, so a member's requests from many ensemble requests are batched too, and a
member's hot swap reaches the ensemble the same way it reaches the front door: the router follows the repository controller's
table, prepares new versions before switching, and reports (acks) what it applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayActorError

from backends.errors import (
    ModelNotReady,
    Overloaded,
    ReplicaLost,
    RequestTimeout,
    ServingError,
    status_of,
    unwrap_error,
)
from deployments.dataplane.batcher import Batcher
from deployments.dataplane.batching import BatchStats, split_outputs, stack_inputs
from deployments.dataplane.model_version import VersionInfo
from deployments.dataplane.plane import ModelDescription
from deployments.dataplane.table import Route, Watcher, routes_token, select_version
from deployments.names import CONTROLLER_NAMESPACE, VERSION_DEPLOYMENT
from deployments.observability.metrics import Recorder, failure_reason
from deployments.protocol.v2 import validate_inputs

__all__ = ["ModelRouter", "VersionRoute", "replica_identity"]

_DESCRIBE_TIMEOUT_S = 30.0
_RETRY_S = 0.5
# Batches sent to one replica before its answers come back: a Serve call's round trip is several
# times a small model's compute, so with two a replica idled between batches (fraud at 64
# connections: 3,490 QPS with two, 4,950 with six, same run of wrk on the 2-core machine).
BATCHES_IN_FLIGHT_PER_REPLICA = 4
_RETIRE_AFTER_S = 30.0  # a dropped version's handle is closed this long after the switch
logger = logging.getLogger("infergrid")


def replica_identity() -> Watcher:
    """This replica as the controller counts its acks: its unique id, its application and deployment.

    The controller counts acks per (application, deployment) against that deployment's running
    replicas, so an ensemble's replicas following a member are waited for like the member's own.
    """
    context = serve.get_replica_context()
    return Watcher(context.replica_id.unique_id, context.app_name, context.deployment)


class _QueuedRow:
    """One row waiting in a batch queue: when it was queued, and whether a batch took it."""

    __slots__ = ("queued_at", "inputs", "started")

    def __init__(self, queued_at: float, inputs: dict[str, np.ndarray]) -> None:
        self.queued_at, self.inputs, self.started = queued_at, inputs, False


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
        """One batch of queued rows: (outputs, seconds queued, seconds of the batch) for each.

        The batcher leaves out rows whose caller gave up (timed out); those were unqueued by the caller.
        """
        start = time.perf_counter()
        for item in items:
            item.started = True
        self._unqueue(len(items))
        stacked, counts = stack_inputs([item.inputs for item in items])
        outputs = await self.handle.infer_batch.remote(stacked)
        compute_s = time.perf_counter() - start
        self._count_batch(sum(counts), compute_s)
        return [(part, start - item.queued_at, compute_s)
                for part, item in zip(split_outputs(outputs, counts), items, strict=True)]

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
            raise RequestTimeout(f"model {self.model!r} version {self.version}: no answer within "
                                 f"{timeout_s * 1000:.0f} ms (default_timeout_microseconds, or the request's "
                                 f"X-Request-Timeout-Ms header / parameters.timeout)") from None
        except Exception as exc:
            cause = unwrap_error(exc)  # a RayActorError itself, or one carried by a task error
            if not isinstance(cause, RayActorError):
                raise
            raise ReplicaLost(f"model {self.model!r} version {self.version}: the replica running this "
                              f"request died ({type(cause).__name__}); Serve is replacing it, retry") from exc

    async def _infer(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int, float, float]:
        """(outputs, rows, seconds queued, seconds computing) of one request."""
        info = await self.describe()
        rows = validate_inputs(inputs, info.signature, info.max_batch_size)
        self.stats.requests += 1
        batcher = self._batcher
        if batcher is None:
            start = time.perf_counter()
            outputs = await self.handle.infer_batch.remote(inputs)
            compute_s = time.perf_counter() - start
            self._count_batch(rows, compute_s)
            return outputs, rows, 0.0, compute_s
        limit = self.route.max_queue_rows
        if limit and self._queued + rows > limit:
            raise Overloaded(f"model {self.model!r} version {self.version}: the queue is full "
                             f"({self._queued} rows waiting; max_queue_size {limit}); retry later")
        self._unqueue(-rows)
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


class ModelRouter:
    """One model's routing table in this replica, applied directly or followed from the controller.

    Args:
        model: the model's name.
        handles: version handles by the route's ``app`` key, for tables whose versions are
            deployments of the same application (``serve run`` of a pipeline) rather than version
            applications of their own.
        recorder: where requests and batches are counted (None: not counted).
    """

    def __init__(self, model: str, handles: Mapping[str, Any] | None = None, recorder: Recorder | None = None) -> None:
        self.model = model
        self._handles = dict(handles or {})
        self._recorder = recorder
        self._routes: dict[int, VersionRoute] = {}
        self._order: list[int] = []
        self._token: str | None = None
        self._apply_lock = asyncio.Lock()
        self._has_table = asyncio.Event()
        self._retiring: set[asyncio.Task] = set()

    @property
    def token(self) -> str | None:
        """The applied table's token (None before any table)."""
        return self._token

    @property
    def versions(self) -> list[int]:
        """Served versions, newest first."""
        return list(self._order)

    async def apply(self, table: list[Route]) -> None:
        """Switch to ``table``: new versions are described first, dropped ones released later."""
        async with self._apply_lock:
            routes: dict[int, VersionRoute] = {}
            for route in table:
                current = self._routes.get(route.version)
                if current is not None and current.route.app == route.app:
                    current.update(route)
                    routes[route.version] = current
                else:
                    handle = self._handles.get(route.app)
                    routes[route.version] = VersionRoute(self.model, route, handle, self._recorder)
            fresh = [r for r in routes.values() if r.info is None]
            # Prepare before switching: unversioned requests must never meet a route that cannot answer.
            await asyncio.gather(*(r.describe() for r in fresh), return_exceptions=True)
            dropped = [r for v, r in self._routes.items() if routes.get(v) is not r]
            self._routes = routes
            self._order = sorted(routes, reverse=True)
            self._token = routes_token(table)
            self._has_table.set()
        for route in dropped:  # one per swap: without this each would keep a router alive for good
            task = asyncio.get_running_loop().create_task(route.retire(_RETIRE_AFTER_S))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def follow(self, controller_name: str, watcher: Watcher) -> None:
        """Long-poll the controller for this model's table, for the replica's lifetime."""
        controller = None
        while True:
            try:
                if controller is None:
                    controller = ray.get_actor(controller_name, namespace=CONTROLLER_NAMESPACE)
                table = await controller.watch.remote(self.model, watcher, self._token)
                if table is not None and routes_token(table) != self._token:
                    await self.apply(list(table))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - controller restarting: keep serving, ask again
                logger.debug("routing table of %s unavailable (%s); retrying", self.model, exc)
                controller = None
                await asyncio.sleep(_RETRY_S)

    async def wait_for_table(self, timeout_s: float) -> bool:
        """True once a table is applied (a replica that just started may not have one yet)."""
        if self._has_table.is_set():
            return True
        try:
            await asyncio.wait_for(self._has_table.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def route(self, version: str | int | None) -> VersionRoute:
        """The route for ``version``; unversioned: the newest version that is ready.

        Raises:
            ModelNotReady: no version is served.
            ModelNotFound: ``version`` is not served.
        """
        prepared = {v for v, r in self._routes.items() if r.info is not None}
        return self._routes[select_version(self.model, self._order, prepared, version)]

    async def infer(self, inputs: dict[str, np.ndarray], version: str | int | None = None,
                    timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """(version that answered, outputs); ``timeout_s`` bounds the wait (504 past it)."""
        try:
            route = self.route(version)
        except ServingError as exc:  # never reached a version: counted against the one asked for
            if self._recorder is not None:
                self._recorder.failure(self.model, str(version or ""), failure_reason(status_of(exc)), 0.0)
            raise
        try:
            return route.version, await route.infer(inputs, timeout_s)
        except Exception as exc:
            # The version went away between routing and answering (it was swapped out, its replica
            # gone): an unversioned request is answered by the version now serving instead.
            gone = isinstance(exc, ReplicaLost) or not isinstance(exc, ServingError)
            if gone and version is None and self.route(None) is not route:
                retry = self.route(None)
                return retry.version, await retry.infer(inputs, timeout_s)
            raise

    async def ready(self, version: int | None = None) -> bool:
        """True when the version (or, unversioned, any version) can serve."""
        routes = [self.route(version)] if version is not None else list(self._routes.values())
        for route in routes:
            try:
                await route.describe()
                return True
            except ServingError:
                continue
        return False

    def stats(self) -> dict:
        """Batch counters per version, as this replica formed them."""
        return {str(v): r.stats.snapshot() for v, r in self._routes.items()}

    def default_version(self) -> str:
        """The newest served version ("" before any table)."""
        return str(self._order[0]) if self._order else ""

    async def describe_model(self, version: int | None = None) -> ModelDescription:
        """The model's metadata as the version answering ``version`` (unversioned: the newest ready) has it."""
        route = self.route(version)
        info = await route.describe()
        versions = (str(route.version),) if version is not None else tuple(str(v) for v in self._order)
        return ModelDescription(self.model, versions, info.triton_platform, info.signature, info.max_batch_size,
                                info.device)
