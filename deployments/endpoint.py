"""The model endpoint: one per model, the HTTP ingress for ``/v2/models/{model}/...``.

It speaks the v2 protocol for its model, validates each request against the version's signature
(so one bad request never fails its batch-mates), and forms dynamic batches with ``@serve.batch``
(a request of n rows counts as n). One call per *batch* then goes to the version's replicas. Routing
lives here too: unversioned requests go to the newest ready version, and the table of versions
changes (from the repository controller) without restarting the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from backends.errors import InvalidRequest, ModelNotFound, ModelNotReady, ServingError
from deployments.batching import BatchStats, split_outputs, stack_inputs
from deployments.http import error_response, json_response
from deployments.model import VersionInfo
from deployments.names import CONTROLLER_NAMESPACE, VERSION_DEPLOYMENT, model_route
from deployments.protocol.v2 import (
    HEADER_LENGTH,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
    validate_inputs,
)
from deployments.routing import Route, routes_token

__all__ = ["ModelEndpoint"]

_PATH = re.compile(r"^(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready|/stats)?/?$")
_DESCRIBE_TIMEOUT_S = 30.0
_RETRY_S = 0.5
_RETIRE_AFTER_S = 30.0  # a dropped version's handle is closed this long after the switch
logger = logging.getLogger("infergrid")


class _VersionRoute:
    """Batch queue, counters and handle for one served version (one version application)."""

    def __init__(self, model: str, route: Route) -> None:
        self.model, self.route, self.version = model, route, route.version
        self.handle = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=route.app)
        self.info: VersionInfo | None = None
        self.stats = BatchStats()
        self._submit: Any = None
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
        rows, delay_s = self.route.batch_rows, self.route.queue_delay_us / 1e6
        if rows <= 0:
            self._submit = None
        elif self._submit is None:
            self._submit = serve.batch(max_batch_size=rows, batch_wait_timeout_s=delay_s,
                                       max_concurrent_batches=2)(self._run_batch)
        else:  # in place: rows already queued stay queued
            self._submit.set_max_batch_size(rows)
            self._submit.set_batch_wait_timeout_s(delay_s)

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

    async def _run_batch(self, rows: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        stacked, counts = stack_inputs(rows)
        outputs = await self.handle.infer_batch.remote(stacked)
        self.stats.record_batch(sum(counts))
        return split_outputs(outputs, counts)

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, then run through the batch queue (or alone without dynamic batching).

        The queue holds single rows, so a formed batch never exceeds its row limit. A request of
        n rows enters as n rows and gets them back in order (they may span two batches). Counting
        rows this way avoids ``batch_size_fn``, which Serve re-evaluates over the whole batch for
        every arrival.
        """
        info = await self.describe()
        rows = validate_inputs(inputs, info.signature, info.max_batch_size)
        self.stats.requests += 1
        submit = self._submit
        if submit is None:
            outputs = await self.handle.infer_batch.remote(inputs)
            self.stats.record_batch(rows)
            return outputs
        if rows == 1:
            return await submit(inputs)
        parts = await asyncio.gather(*(submit({name: array[i:i + 1] for name, array in inputs.items()})
                                       for i in range(rows)))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


class ModelEndpoint:
    """HTTP and handle entry point of one model.

    ``user_config``: ``{"routes": [Route dicts, newest first]}``, the table to start with. With a
    ``controller`` (the repository controller's actor name) the replica then follows the
    controller's table: it long-polls for changes, prepares new routes (fetches their signature)
    and only then switches to them, and reports what it applied so the controller knows when an
    old version has stopped receiving requests.
    """

    def __init__(self, model: str, controller: str | None = None) -> None:
        self._model = model
        self._routes: dict[int, _VersionRoute] = {}
        self._order: list[int] = []
        self._token: str | None = None
        self._apply_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self._watch_task = None
        if controller:
            replica = serve.get_replica_context().replica_id.unique_id
            self._watch_task = asyncio.get_running_loop().create_task(self._follow(controller, replica))

    async def reconfigure(self, user_config: dict) -> None:
        """Apply the deployment's table (only before a controller's table has arrived)."""
        if self._watch_task is None or self._token is None:
            await self._apply([Route.from_dict(r) for r in user_config.get("routes", [])])

    async def _apply(self, table: list[Route]) -> None:
        async with self._apply_lock:
            routes: dict[int, _VersionRoute] = {}
            for route in table:
                current = self._routes.get(route.version)
                if current is not None and current.route.app == route.app:
                    current.update(route)
                    routes[route.version] = current
                else:
                    routes[route.version] = _VersionRoute(self._model, route)
            fresh = [r for r in routes.values() if r.info is None]
            # Prepare before switching: unversioned requests must never meet a route that cannot answer.
            await asyncio.gather(*(r.describe() for r in fresh), return_exceptions=True)
            dropped = [r for v, r in self._routes.items() if routes.get(v) is not r]
            self._routes = routes
            self._order = sorted(routes, reverse=True)
            self._token = routes_token([r.to_dict() for r in table])
        for route in dropped:  # one per swap: without this each would keep a router alive for good
            task = asyncio.get_running_loop().create_task(route.retire(_RETIRE_AFTER_S))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _follow(self, controller_name: str, replica: str) -> None:
        """Long-poll the controller for this model's table, for the replica's lifetime."""
        controller = None
        while True:
            try:
                if controller is None:
                    controller = ray.get_actor(controller_name, namespace=CONTROLLER_NAMESPACE)
                table = await controller.watch.remote(self._model, replica, self._token)
                if table is not None and routes_token(table) != self._token:
                    await self._apply([Route.from_dict(r) for r in table])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - controller restarting: keep serving, ask again
                logger.debug("routing table unavailable (%s); retrying", exc)
                controller = None
                await asyncio.sleep(_RETRY_S)

    def _route(self, version: str | int | None) -> _VersionRoute:
        if version is None:
            for candidate in self._order:
                if self._routes[candidate].info is not None:
                    return self._routes[candidate]
            if not self._order:
                raise ModelNotReady(f"model {self._model!r} has no version to serve")
            return self._routes[self._order[0]]
        try:
            return self._routes[int(version)]
        except (KeyError, ValueError):
            raise ModelNotFound(f"model {self._model!r} has no version {version!r}; "
                                f"served: {', '.join(map(str, self._order)) or 'none'}") from None

    async def _infer(self, inputs: dict[str, np.ndarray],
                     version: str | int | None) -> tuple[int, dict[str, np.ndarray]]:
        route = self._route(version)
        try:
            return route.version, await route.infer(inputs)
        except ServingError:
            raise
        except Exception:
            # The version went away between routing and answering (it was swapped out): an
            # unversioned request is answered by the version now serving instead.
            if version is None and self._route(None) is not route:
                retry = self._route(None)
                return retry.version, await retry.infer(inputs)
            raise

    async def infer(self, inputs: dict[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        """Python entry point (through a DeploymentHandle): named numpy inputs -> named outputs."""
        return (await self._infer(inputs, version))[1]

    async def metadata(self, version: int | None = None) -> dict:
        """The v2 model metadata object."""
        route = self._route(version)
        info = await route.describe()
        versions = [str(route.version)] if version is not None else [str(v) for v in self._order]
        return model_metadata(self._model, versions, info.triton_platform, info.signature)

    async def ready(self, version: int | None = None) -> bool:
        """True when the version (or, unversioned, any version) can serve."""
        routes = [self._route(version)] if version is not None else list(self._routes.values())
        for route in routes:
            try:
                await route.describe()
                return True
            except ServingError:
                continue
        return False

    async def stats(self) -> dict:
        """Batch counters per version, as this replica formed them."""
        return {str(v): r.stats.snapshot() for v, r in self._routes.items()}

    async def __call__(self, request: Request) -> Response:
        path = request.url.path[len(request.scope.get("root_path", "")):]
        body = await request.body() if request.method == "POST" else b""
        return await self._respond(request.method, path, request.headers.get(HEADER_LENGTH), body)

    async def http(self, method: str, path: str, header_length: str | None, body: bytes) -> tuple[int, dict, bytes]:
        """The same HTTP API through a handle: for requests the server ingress received because the
        proxy did not route ``/v2/models/{model}`` here yet (a model loaded a moment ago)."""
        response = await self._respond(method, path, header_length, body)
        return response.status_code, dict(response.headers), bytes(response.body)

    async def _respond(self, method: str, path: str, header_length: str | None, body: bytes) -> Response:
        match = _PATH.match(path)
        try:
            if match is None:
                raise ModelNotFound(f"no route {method} {model_route(self._model)}{path}")
            return await self._dispatch(method, match.group("version"), match.group("action"), header_length, body)
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_response(exc, self._model)

    async def _dispatch(self, method: str, version: str | None, action: str | None, header_length: str | None,
                        body: bytes) -> Response:
        if action == "/infer":
            if method != "POST":
                return json_response({"error": "use POST for infer"}, 405)
            return await self._http_infer(header_length, body, version)
        if method != "GET":
            return json_response({"error": f"{method} is not allowed here"}, 405)
        if action == "/ready":
            ready = await self.ready(version)
            return json_response({"name": self._model, "ready": ready}, 200 if ready else 503)
        if action == "/stats":
            return json_response(await self.stats())
        return json_response(await self.metadata(version))

    async def _http_infer(self, header_length: str | None, payload: bytes, version: str | None) -> Response:
        try:
            length = int(header_length) if header_length is not None else None
        except ValueError:
            raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        infer_request = decode_infer_request(payload, length)
        answered_by, outputs = await self._infer(infer_request.inputs, version)
        body, json_length = encode_infer_response(infer_request, self._model, str(answered_by), outputs)
        if json_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length)})
