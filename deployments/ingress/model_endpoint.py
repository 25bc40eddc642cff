"""The model endpoint: one Serve deployment per model, the ingress for ``/v2/models/{model}/...``.

Each replica holds the model's data plane over a ``ModelRouter`` (which follows the repository
controller's routing table, validates, batches, and makes one call per batch to the version's
replicas) and serves it through the v2 HTTP transport, to HAProxy directly and to Python callers
through a DeploymentHandle (``infer``).
"""

from __future__ import annotations

import asyncio

from deployments.dataplane.auth import AuthPolicy
from deployments.dataplane.plane import DataPlane
from deployments.dataplane.router import ModelRouter, replica_identity
from deployments.dataplane.table import Route
from deployments.ingress.v2_http import V2Deployment, V2HttpApi
from deployments.observability.hub import replica_recorder
from deployments.observability.logs import configure_logging
from deployments.protocol.limits import RequestLimits

__all__ = ["ModelEndpoint"]


class ModelEndpoint(V2Deployment):
    """HTTP and handle entry point of one model.

    ``user_config``: ``{"routes": [Route dicts, newest first]}``, the table to start with. ``auth``:
    an ``AuthPolicy.to_dict()`` (key digests and open groups; None: no API keys). With a
    ``controller`` (the repository controller's actor name) the replica then follows the
    controller's table: it long-polls for changes, prepares new routes (fetches their signature)
    and only then switches to them, and reports what it applied so the controller knows when an
    old version has stopped receiving requests.
    """

    def __init__(self, model: str, controller: str | None = None, metrics: bool = True,
                 limits: RequestLimits | None = None, auth: dict | None = None) -> None:
        configure_logging(f"endpoint-{model}")
        recorder = replica_recorder(metrics)
        self._router = ModelRouter(model, recorder=recorder)
        self._api = V2HttpApi(DataPlane(model, self._router, limits, AuthPolicy.from_dict(auth), recorder))
        self._following = controller is not None
        self._watch_task = None
        if controller:
            self._watch_task = asyncio.get_running_loop().create_task(
                self._router.follow(controller, replica_identity()))

    async def reconfigure(self, user_config: dict) -> None:
        """Apply the deployment's table (only before a controller's table has arrived)."""
        if not self._following or self._router.token is None:
            await self._router.apply([Route.from_dict(r) for r in user_config.get("routes", [])])

    async def ready(self, version: int | None = None) -> bool:
        """True when the version (or, unversioned, any version) can serve."""
        return await self._router.ready(version)

    async def stats(self) -> dict:
        """Batch counters per version, as this replica formed them (``/stats`` is Triton's, cluster-wide)."""
        return self._router.stats()
