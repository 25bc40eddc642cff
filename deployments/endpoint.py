"""The model endpoint: one per model, the HTTP ingress for ``/v2/models/{model}/...``.

It speaks the v2 protocol for its model, validates each request against the version's signature
(so one bad request never fails its batch-mates), and forms dynamic batches with ``@serve.batch``
(a request of n rows counts as n). One call per *batch* then goes to the version's replicas. Routing
lives here too: unversioned requests go to the newest ready version, and ``reconfigure`` swaps the
set of versions without restarting the endpoint.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from backends.errors import InvalidRequest, ModelNotFound, ModelNotReady, ServingError
from deployments.batching import BatchStats, split_outputs, stack_inputs
from deployments.http import error_response, json_response
from deployments.model import VersionInfo
from deployments.names import VERSION_DEPLOYMENT, version_app
from deployments.protocol.v2 import (
    HEADER_LENGTH,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
    validate_inputs,
)

__all__ = ["ModelEndpoint"]

_PATH = re.compile(r"^(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready|/stats)?/?$")
_DESCRIBE_TIMEOUT_S = 30.0


class _VersionRoute:
    """Batch queue, counters and handle for one version."""

    def __init__(self, model: str, version: int) -> None:
        self.model, self.version = model, version
        self.handle = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=version_app(model, version))
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
                self._configure(info)
        return self.info  # type: ignore[return-value]

    def _configure(self, info: VersionInfo) -> None:
        if info.dynamic_batching:
            self._submit = serve.batch(
                max_batch_size=info.batch_rows,
                batch_wait_timeout_s=info.queue_delay_us / 1e6,
                max_concurrent_batches=2,
            )(self._run_batch)
        self.info = info

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
        if self._submit is None:
            outputs = await self.handle.infer_batch.remote(inputs)
            self.stats.record_batch(rows)
            return outputs
        if rows == 1:
            return await self._submit(inputs)
        parts = await asyncio.gather(*(self._submit({name: array[i:i + 1] for name, array in inputs.items()})
                                       for i in range(rows)))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


class ModelEndpoint:
    """HTTP and handle entry point of one model; user_config ``{"versions": [newest, ...]}``."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._routes: dict[int, _VersionRoute] = {}
        self._order: list[int] = []

    def reconfigure(self, user_config: dict) -> None:
        """Serve the listed versions (newest first); routes of versions no longer listed are dropped."""
        versions = sorted((int(v) for v in user_config.get("versions", [])), reverse=True)
        self._routes = {v: self._routes.get(v) or _VersionRoute(self._model, v) for v in versions}
        self._order = versions

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

    async def infer(self, inputs: dict[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        """Python entry point (through a DeploymentHandle): named numpy inputs -> named outputs."""
        return await self._route(version).infer(inputs)

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
        match = _PATH.match(path)
        try:
            if match is None:
                raise ModelNotFound(f"no route {request.method} {request.url.path}")
            return await self._dispatch(request, match.group("version"), match.group("action"))
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_response(exc, self._model)

    async def _dispatch(self, request: Request, version: str | None, action: str | None) -> Response:
        if action == "/infer":
            if request.method != "POST":
                return json_response({"error": "use POST for infer"}, 405)
            return await self._http_infer(request, version)
        if request.method != "GET":
            return json_response({"error": f"{request.method} is not allowed here"}, 405)
        if action == "/ready":
            ready = await self.ready(version)
            return json_response({"name": self._model, "ready": ready}, 200 if ready else 503)
        if action == "/stats":
            return json_response(await self.stats())
        return json_response(await self.metadata(version))

    async def _http_infer(self, request: Request, version: str | None) -> Response:
        header_length = request.headers.get(HEADER_LENGTH)
        try:
            length = int(header_length) if header_length is not None else None
        except ValueError:
            raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        infer_request = decode_infer_request(await request.body(), length)
        route = self._route(version)
        outputs = await route.infer(infer_request.inputs)
        body, json_length = encode_infer_response(infer_request, self._model, str(route.version), outputs)
        if json_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length)})
