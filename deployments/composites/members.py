"""The member models an ensemble or pipeline calls, by name.

Each member is reached through a ``ModelRouter`` of its own in the calling replica: it follows the
member's routing table from the repository controller (so a member's hot swap is picked up without
redeploying the ensemble, and the controller waits for this replica's ack before retiring the old
version) and batches the member's rows across concurrent ensemble requests with the member's own
``dynamic_batching`` settings. One hop per member batch, straight to the member's version replicas.
A member's traffic policy (``deployments.repository.traffic``) holds for the composite's calls too: the
replica follows the served models from the controller for its members' policies, and an unversioned
member call goes where the policy sends it (``deployments.dataplane.policy_route``): sticky on the
composite request's key (its headers), unkeyed calls of a split batched together, with the policy's
shadow copies and guard (whose trips and steps reach the controller as a front door's do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import ray

from backends.errors import ModelNotReady, StepFailed
from deployments.dataplane.guard import GuardEvent
from deployments.dataplane.policy_route import PolicyRoute
from deployments.dataplane.router import ModelRouter, follow_served_models, replica_identity
from deployments.dataplane.table import Route
from deployments.names import CONTROLLER_NAMESPACE
from deployments.observability.metrics import Recorder
from deployments.repository.traffic import TrafficPolicy

__all__ = ["Members", "MEMBER_WAIT_S"]

MEMBER_WAIT_S = 30.0  # a replica that just started waits this long for a member's first table


class Members:
    """Routers to the member models of one composite model.

    Args:
        composite: the ensemble's or pipeline's name (errors name it).
        names: the member model names.
        controller: the repository controller's actor name: follow its tables.
        static: without a controller, ``{member: {"routes": [Route dicts], "handles": {app: handle}}}``
            (``serve run`` of a pipeline, whose members are deployments of the same application).
        recorder: where member requests are counted (None: not counted).
    """

    def __init__(self, composite: str, names: tuple[str, ...], controller: str | None = None,
                 static: Mapping[str, Mapping[str, Any]] | None = None, recorder: Recorder | None = None) -> None:
        self._composite = composite
        self._controller = controller
        static = static or {}
        # Member calls are counted as the member's requests (a member's numbers cover every caller).
        self._routers = {name: ModelRouter(name, (static.get(name) or {}).get("handles"), recorder) for name in names}
        self._policies = {name: PolicyRoute(name, router.infer, router.infer_split, recorder)
                          for name, router in self._routers.items()}  # the members' traffic policies
        for policy in self._policies.values():
            policy.report = self._report_guard if controller else None
        loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task] = []
        if controller:
            watcher = replica_identity()
            # One replica id per (replica, member): the controller keys acks by id within each model.
            self._tasks = [loop.create_task(router.follow(controller, watcher))
                           for router in self._routers.values()]
            self._tasks.append(loop.create_task(follow_served_models(controller, self._take_policies)))
        for name, spec in static.items():
            if name in self._routers:
                routes = [Route.from_dict(r) for r in spec.get("routes", [])]
                self._tasks.append(loop.create_task(self._routers[name].apply(routes)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._routers)

    def router(self, member: str) -> ModelRouter:
        return self._routers[member]

    async def call(self, member: str, inputs: dict[str, np.ndarray], version: int | None = None,
                   step: str | None = None) -> dict[str, np.ndarray]:
        """Run ``member`` on ``inputs``; any failure becomes a ``StepFailed`` naming step and member.

        Raises:
            StepFailed: 503 while the member (or the pinned version) is not served, 500 for any
                other failure.
        """
        label = step or f"member {member!r}"
        router = self._routers[member]
        try:
            if not await router.wait_for_table(MEMBER_WAIT_S):
                raise ModelNotReady(f"model {member!r} is not served")
            policy = self._policies[member]
            if version is None and policy.policy is not None:
                return (await policy.infer(inputs))[1]
            return (await router.infer(inputs, version))[1]
        except Exception as exc:  # noqa: BLE001 - every member failure is reported as the step's
            raise StepFailed.of_member(self._composite, label, exc) from exc

    async def _take_policies(self, models: dict) -> None:
        """The members' traffic policies, from the controller's served models."""
        for name, policy in self._policies.items():
            policy.set(models[name].traffic if name in models else None)

    async def _report_guard(self, model: str, event: GuardEvent, seen: TrafficPolicy) -> None:
        """A member's guard tripped or stepped in this replica: to the controller, as a front door reports."""
        controller = ray.get_actor(self._controller, namespace=CONTROLLER_NAMESPACE)
        await controller.traffic_event.remote(model, event.event, event.version, event.reason, seen.to_dict())

    async def ready(self) -> bool:
        """True when every member has a version that can serve."""
        async def one(router: ModelRouter) -> bool:
            return await router.wait_for_table(0.1) and await router.ready()
        return all(await asyncio.gather(*(one(r) for r in self._routers.values())))

    def stats(self) -> dict:
        """Batch counters this replica formed, per member and version."""
        return {name: router.stats() for name, router in self._routers.items()}
