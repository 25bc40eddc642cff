"""A model's traffic policy applied to its unversioned inference calls, wherever they are made: a
front-door replica's data plane (``deployments.dataplane.plane``) and a composite's member calls
(``deployments.composites.members``) hold one each per model, so splits, sticky keys, shadows and
guards act the same on a client's request and on an ensemble's call of the model.

Per call: a sticky key (``REQUEST_HEADERS`` / ``REQUEST_PARAMETERS`` of the request being answered)
picks its version by the policy's hashing; an unkeyed call of a split joins the split's shared batch
queue (``ModelRouter.infer_split``); the guard judges the outcome; the shadow gets its copy after the
answer. A guard's trip or step is applied here at once and reported (``report``) so the controller
writes it into ``traffic.json`` for every replica.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from backends.errors import status_of
from deployments.dataplane.guard import GuardEvent, GuardWatch
from deployments.dataplane.shadow import ShadowMirror
from deployments.dataplane.split_pool import failed_version
from deployments.dataplane.traffic import REQUEST_HEADERS, REQUEST_PARAMETERS
from deployments.repository.traffic import TrafficPolicy

__all__ = ["PolicyRoute", "ReportGuard"]

logger = logging.getLogger("infergrid")
Infer = Callable[[dict, "str | int | None", "float | None"], Awaitable[tuple[int, dict]]]
InferSplit = Callable[[dict, TrafficPolicy, "float | None"], Awaitable[tuple[int, dict]]]
ReportGuard = Callable[[str, GuardEvent, TrafficPolicy], Awaitable[object]]


class PolicyRoute:
    """One model's policy in one replica.

    Args:
        model: the model's name (metrics and reports name it).
        infer: ``(inputs, version, timeout_s) -> (answered by, outputs)`` of the model's router.
        infer_split: the router's shared queue for unkeyed split calls (None: a draw per call).
        recorder: where shadow copies are counted (None: not counted).
    """

    def __init__(self, model: str, infer: Infer, infer_split: InferSplit | None = None, recorder=None) -> None:
        self.model = model
        self.policy: TrafficPolicy | None = None
        self._sole: int | None = None  # the policy's one live version, when it has one
        self.report: ReportGuard | None = None  # a guard's event, to the controller
        self._infer, self._infer_split = infer, infer_split
        self._guard = GuardWatch()
        self._mirror = ShadowMirror(model, lambda inputs, version: infer(inputs, version, None), recorder)
        self._reports: set[asyncio.Task] = set()

    def set(self, policy: Mapping | TrafficPolicy | None) -> None:
        """Take the model's policy (``TrafficPolicy.to_dict()`` or the policy; empty or None: none)."""
        if isinstance(policy, Mapping):
            policy = TrafficPolicy.from_dict(policy, f"{self.model} traffic") if policy else None
        if policy != self.policy:
            self._guard.reset()
            self.policy = policy
            self._sole = self._sole_version(policy)

    @staticmethod
    def _sole_version(policy: TrafficPolicy | None) -> int | None:
        """The one version of weight above 0 (every request goes there, keyed or not), or None."""
        return policy.live[0][0] if policy is not None and len(policy.live) == 1 else None

    def _target(self, policy: TrafficPolicy) -> int | None:
        """The policy's one live version, the version the request's sticky key names, a draw when there is
        no shared split queue, or None: the split's shared queue decides."""
        if self._sole is not None:
            return self._sole
        keyed = policy.sticky_choice(REQUEST_HEADERS.get(), REQUEST_PARAMETERS.get())
        if keyed is not None:
            return keyed
        return None if self._infer_split is not None else policy.choose()

    async def infer(self, inputs: dict[str, np.ndarray], timeout_s: float | None = None
                    ) -> tuple[int, dict[str, np.ndarray]]:
        """(version that answered, outputs) of an unversioned call under the policy (``set`` one first)."""
        policy = self.policy
        assert policy is not None, "PolicyRoute.infer without a policy"
        target = self._target(policy)
        started = time.monotonic()
        try:
            if target is None:
                answered_by, outputs = await self._infer_split(inputs, policy, timeout_s)  # type: ignore[misc]
            else:
                answered_by, outputs = await self._infer(inputs, str(target), timeout_s)
        except Exception as exc:
            failed = target if target is not None else failed_version(exc)
            if policy.guard is not None and failed is not None and status_of(exc) >= 500:
                self._judge(policy, int(failed), False, time.monotonic() - started)
            raise
        if policy.guard is not None:
            self._judge(policy, answered_by, True, time.monotonic() - started)
        shadow = policy.shadow
        if shadow is not None and shadow.version != answered_by and random.random() < shadow.share:
            self._mirror.mirror(shadow, inputs, answered_by, outputs)  # after the answer: never waited for
        return answered_by, outputs

    def _judge(self, policy: TrafficPolicy, version: int, ok: bool, seconds: float) -> None:
        event = self._guard.observe(policy, version, ok, seconds)
        if event is None or self.policy is not policy:
            return
        self.policy = policy.with_weight(event.version, 0) if event.event == "trip" else policy.stepped(event.version)
        self._sole = self._sole_version(self.policy)
        self._guard.reset()
        if self.report is not None:  # the controller makes it everyone's policy (traffic.json)
            task = asyncio.get_running_loop().create_task(self._send(self.report, event, policy))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)

    async def _send(self, report: ReportGuard, event: GuardEvent, seen: TrafficPolicy) -> None:
        try:
            await report(self.model, event, seen)
        except Exception as exc:  # noqa: BLE001 - this replica applied it; the others get it next time
            logger.warning("model %s: traffic guard %s of version %s not recorded: %s", self.model, event.event,
                           event.version, exc)
