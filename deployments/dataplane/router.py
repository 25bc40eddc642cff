"""Routing one model's requests to its versions, as one replica sees them.

A ``ModelRouter`` holds a model's routing table (``deployments.dataplane.table``): for every served version
a DeploymentHandle to the version's replicas and a batch queue (``deployments.dataplane.batcher``) that
combines requests into batches. The front door holds one router per model; ensembles and pipelines
hold one per member, so a member's requests from many ensemble requests are batched too, and a
member's hot swap reaches the ensemble the same way it reaches the front door: the router follows
the repository controller's table, prepares new versions before switching, and reports (acks) what
it applied. Each served version is a ``VersionRoute`` (``deployments.dataplane.version_route``).
Python models' BLS calls hold routers too (``deployments.dataplane.bls``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import ray
from ray import serve

from backends.errors import ReplicaLost, ServingError, status_of
from deployments.dataplane.plane import ModelDescription
from deployments.dataplane.split_pool import SplitPool, poolable, tag_version
from deployments.dataplane.table import Route, ServedModel, Watcher, routes_token, select_version
from deployments.dataplane.version_route import VersionRoute
from deployments.names import CONTROLLER_NAMESPACE
from deployments.observability.metrics import Recorder, failure_reason
from deployments.repository.traffic import TrafficPolicy

__all__ = ["ModelRouter", "VersionRoute", "replica_identity", "follow_served_models"]

_RETRY_S = 0.5
_RETIRE_AFTER_S = 30.0  # a dropped version's handle is closed this long after the switch
logger = logging.getLogger("infergrid")


def replica_identity() -> Watcher:
    """This replica as the controller counts its acks: its unique id, its application and deployment.

    The controller counts acks per (application, deployment) against that deployment's running
    replicas, so an ensemble's replicas following a member are waited for like the member's own.
    """
    context = serve.get_replica_context()
    return Watcher(context.replica_id.unique_id, context.app_name, context.deployment)


async def follow_served_models(controller_name: str, apply: Callable[[dict[str, ServedModel]], Awaitable[None]],
                               replica: str | None = None) -> None:
    """Long-poll the controller for the served models and ``apply`` each new set, for the replica's lifetime.

    ``replica``: a front-door replica's id; its next poll after ``apply`` is its ack of the set it applied
    (what a policy change waits for). A controller that restarts is asked again; nothing is dropped.
    """
    generation, controller = None, None
    while True:
        try:
            if controller is None:
                controller = ray.get_actor(controller_name, namespace=CONTROLLER_NAMESPACE)
            generation, models = await controller.served_models.remote(generation, replica)
            await apply(models)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - controller restarting: keep serving, ask again
            logger.debug("served models unavailable (%s); retrying", exc)
            controller = None
            await asyncio.sleep(_RETRY_S)


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
        self._pool = SplitPool(model)  # unkeyed requests of a split, batched together
        self._pool_bound: tuple[TrafficPolicy, dict, bool] | None = None  # (policy, routes, pooled?) last decided

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

    async def infer_split(self, inputs: dict[str, np.ndarray], policy: TrafficPolicy,
                          timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """An unkeyed request under ``policy``'s split: batched with the split's other unkeyed requests
        and answered by the version the formed batch goes to (``deployments.dataplane.split_pool``), or
        sent to a version drawn at random when the live versions cannot share a queue (decided once per
        policy and routing table: a version whose description failed when the table came keeps the
        draw until the next table)."""
        bound = self._pool_bound
        if bound is None or bound[0] is not policy or bound[1] is not self._routes:
            live = poolable(policy, self._routes)
            if live is not None:
                self._pool.bind(policy, live)
            bound = self._pool_bound = (policy, self._routes, live is not None)  # decided once per policy and table
        if not bound[2]:
            version = policy.choose()
            try:
                return await self.infer(inputs, str(version), timeout_s)
            except Exception as exc:
                raise tag_version(exc, version)
        try:
            return await self._pool.infer(inputs, timeout_s)
        except ReplicaLost:  # Serve is replacing the replica: once more, to whichever version is due
            return await self._pool.infer(inputs, timeout_s)

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
                                info.device, info.other_signatures)
