"""Every Ray Serve call the controller makes, in one place, on one thread.

Off the event loop, so the routing-table long-polls and the repository API stay responsive while
Serve deploys; one thread, because Serve's deploy path registers modules for pickling in a
process-wide table without a lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import ray
from ray import serve
from ray.serve.context import _get_global_client

from deployments.applications.builders import AppSpec
from deployments.dataplane.model_version import warmup_inputs
from deployments.names import ENDPOINT_DEPLOYMENT, VERSION_DEPLOYMENT, replica_application

__all__ = ["ServeCalls", "failure_reason", "LOAD_TIMEOUT_S"]

T = TypeVar("T")
LOAD_TIMEOUT_S = 300.0
STATUS_POLL_S = 0.1
_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")
_OUR_ERRORS = "backends.errors."


def _start_applications(specs: Iterable[AppSpec]) -> None:
    """Deploy (or update in place) applications without waiting for them."""
    specs = list(specs)
    if specs:
        serve.run_many([serve.RunTarget(s.app, s.name, s.route_prefix) for s in specs],
                       wait_for_applications_running=False)


def failure_reason(message: str) -> str:
    """The informative line of a replica's start-up traceback: our own error's message if present
    (``backends.errors.X: message``), else the last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        kind, sep, text = line.partition(": ")
        if sep and kind.startswith(_OUR_ERRORS) and kind[len(_OUR_ERRORS):].isidentifier():
            return text
    return lines[-1] if lines else message


def _application_states() -> dict[str, tuple[str, str]]:
    """Every Serve application: name -> (status, failure reason or "").

    From Serve's status overviews (application and deployment states only), not ``serve.status()``,
    which builds every replica's details in Serve's controller: polled while versions load, that
    cost slowed the loads themselves on a small host.
    """
    states = {}
    for overview in _get_global_client().list_serve_statuses():
        status = overview.app_status.status
        value = getattr(status, "value", str(status))
        message = ""
        if value in _FAILED:
            message = failure_reason("; ".join(d.message for d in overview.deployment_statuses if d.message)
                                     or overview.app_status.message)
        states[overview.name] = (value, message)
    return states


def _endpoint_applications() -> set[str]:
    """Applications that hold an ``endpoint`` deployment (model endpoints; never a user's own app)."""
    return {name for name, app in serve.status().applications.items() if ENDPOINT_DEPLOYMENT in app.deployments}


def _running_replicas(app_name: str, deployment: str) -> int:
    """How many replicas of a deployment are running (0 if the application does not exist)."""
    app = serve.status().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        return 0
    return int(app.deployments[deployment].replica_states.get("RUNNING", 0))


def _version_replicas() -> dict[str, int]:
    """Live replica actors of every version application, by application name.

    Read from Ray's named actors (one GCS call), not ``serve.status()``: that builds the details of
    every replica of every application in Serve's controller, and sampling it every few seconds
    slowed every deployment of a busy cluster (the hot-swap tests took 30% longer).
    """
    counts: dict[str, int] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        app = replica_application(actor["name"], VERSION_DEPLOYMENT)
        if app is not None:
            counts[app] = counts.get(app, 0) + 1
    return counts


def _settled(names: set[str], states: dict[str, tuple[str, str]]) -> tuple[set[str], dict[str, str]]:
    """Of ``names``: those running, and those failed with their reason (the rest are still starting)."""
    running = {name for name in names if states.get(name, ("",))[0] == "RUNNING"}
    failed = {name: states[name][1] or states[name][0] for name in names if states.get(name, ("",))[0] in _FAILED}
    return running, failed


class ServeCalls:
    """The controller's Serve calls, awaited on its event loop, run on its one Serve thread."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-calls")

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def start(self, build: Callable[[], Iterable[AppSpec]]) -> None:
        """Build applications and deploy them, both on the Serve thread: building one calls
        ``serve.deployment``, which touches the same unlocked pickling table as deploying."""
        await self._run(lambda: _start_applications(build()))

    async def states(self) -> dict[str, tuple[str, str]]:
        return await self._run(_application_states)

    async def endpoints(self) -> set[str]:
        return await self._run(_endpoint_applications)

    async def replicas(self, groups: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Running replicas of each (application, deployment)."""
        groups = list(groups)
        return await self._run(lambda: {g: _running_replicas(*g) for g in groups})

    async def version_replicas(self) -> dict[str, int]:
        """Live replicas of every version application, by application name."""
        return await self._run(_version_replicas)

    async def delete(self, name: str) -> None:
        await self._run(lambda: serve.delete(name, _blocking=False))

    async def wait_running(self, names: Iterable[str], timeout_s: float = LOAD_TIMEOUT_S) -> dict[str, str]:
        """Wait until each application runs or fails; returns {name: failure reason}."""
        deadline = time.monotonic() + timeout_s
        pending, failures = set(names), {}
        while pending and time.monotonic() < deadline:
            running, failed = _settled(pending, await self.states())
            failures.update(failed)
            pending -= running | set(failed)
            if pending:
                await asyncio.sleep(STATUS_POLL_S)
        failures.update({name: f"not running after {timeout_s:.0f} s" for name in pending})
        return failures

    async def wait_deleted(self, names: Iterable[str], timeout_s: float = 120) -> None:
        names = set(names)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and names & set(await self.states()):
            await asyncio.sleep(STATUS_POLL_S)

    async def warm(self, app_name: str) -> str:
        """One real inference through Serve (a model that takes whole requests, a Python model or a
        TorchServe handler: its answer to ``describe``, as Triton sends such models no made-up request);
        returns a failure reason, or "" when it answered."""
        try:
            handle = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=app_name)
            info = await handle.describe.remote()
            if not info.whole_requests:
                await handle.infer_batch.remote(warmup_inputs(info.signature))
            return ""
        except Exception as exc:  # noqa: BLE001 - any failure keeps the version out of traffic
            return f"warm-up inference failed: {exc}"
