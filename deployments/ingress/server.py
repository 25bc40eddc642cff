"""The server ingress at ``/``: server-level v2 endpoints and every path no model endpoint owns.

Model endpoints own ``/v2/models/{model}``; requests reach this deployment for ``/v2``, the health
endpoints, Triton's repository API (index, load, unload), and models that are unknown (404) or
unavailable (503 with the reason). It asks the repository controller what is served; without one
(a fixed ``serve deploy`` config) it answers from the index it was given.
"""

from __future__ import annotations

import asyncio
import json
import re
from importlib.metadata import PackageNotFoundError, version

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from backends.errors import InvalidRequest, ModelNotFound, ModelNotReady, RepositoryError
from deployments.dataplane.auth import AuthPolicy
from deployments.ingress.http import HttpReply, endpoint_group, error_response, json_response
from deployments.names import CONTROLLER_NAMESPACE, ENDPOINT_DEPLOYMENT, endpoint_app, model_route
from deployments.observability.hub import hub_handle
from deployments.observability.logs import REQUEST_ID, REQUEST_ID_HEADER, configure_logging, new_request_id
from deployments.observability.metrics import render_prometheus, triton_statistics
from deployments.protocol.openapi import openapi_document
from deployments.protocol.v2 import HEADER_LENGTH
from deployments.repository.scan import MODEL_NAME
from deployments.repository.status import IndexRow, ModelStatus, static_index

__all__ = ["ServerIngress", "server_version"]

_MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)")
_PIPELINE_PATH = re.compile(r"^/pipelines/(?P<model>[^/]+)$")
_REPOSITORY_ACTION = re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/(?P<action>load|unload)$")
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


def server_version() -> str:
    """The installed infergrid version."""
    try:
        return version("infergrid")
    except PackageNotFoundError:
        return "0+unknown"


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def _check_name(model: str) -> None:
    """Refuse a model name no repository folder can have (``..``, ``/``, control characters ...).

    Raises:
        InvalidRequest: the name does not match the repository's folder-name rule.
    """
    if not MODEL_NAME.match(model):
        raise InvalidRequest(f"invalid model name {model[:130]!r}: names are 1-128 letters, digits, '_', '.' or "
                             f"'-', not starting with '.' or '-'")


class ServerIngress:
    """``index``: what a fixed config serves (used without a controller); a reason marks a failed model."""

    def __init__(self, index: dict[str, ModelStatus], controller: str | None = None,
                 auth: dict | None = None) -> None:
        configure_logging("server")
        self._auth = AuthPolicy.from_dict(auth)
        self._openapi = json.dumps(openapi_document(server_version()), separators=(",", ":"))  # fixed per process
        self._static_index = index
        self._controller_name = controller
        self._controller = None
        self._handles: dict[str, DeploymentHandle] = {}

    def _endpoint(self, model: str) -> DeploymentHandle:
        """The model's endpoint handle, made once: every handle object starts a router of its own."""
        handle = self._handles.get(model)
        if handle is None:
            handle = serve.get_deployment_handle(ENDPOINT_DEPLOYMENT, app_name=endpoint_app(model))
            self._handles[model] = handle
        return handle

    def _controller_handle(self):
        if self._controller is None:
            try:
                self._controller = ray.get_actor(self._controller_name, namespace=CONTROLLER_NAMESPACE)
            except ValueError:
                raise ModelNotReady("the repository controller is not running") from None
        return self._controller

    async def _call(self, method: str, *args):
        """Call the controller (its errors reach ``error_response``, which unwraps them)."""
        try:
            return await getattr(self._controller_handle(), method).remote(*args)
        except ray.exceptions.RayActorError:
            self._controller = None
            raise ModelNotReady("the repository controller is restarting; try again") from None

    async def _index(self) -> dict[str, ModelStatus]:
        if self._controller_name is None:
            return self._static_index
        return await self._call("models")

    async def _serving(self) -> list[str]:
        return [name for name, status in (await self._index()).items() if not status.reason]

    async def _ready(self) -> bool:
        async def one(model: str) -> bool:
            try:
                return await asyncio.wait_for(self._endpoint(model).ready.remote(), 5)
            except Exception:  # noqa: BLE001 - unreachable means not ready
                return False
        return all(await asyncio.gather(*(one(m) for m in await self._serving())))

    async def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        """Triton's ``POST /v2/repository/index`` rows."""
        if self._controller_name is not None:
            return await self._call("index", ready_only)
        return static_index(self._static_index, ready_only)

    async def _repository_action(self, request: Request, model: str, action: str) -> Response:
        _check_name(model)
        if self._controller_name is None:
            raise RepositoryError(f"explicit model {action} needs the repository controller (infergrid serve)")
        parameters = (await _json_body(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidRequest("parameters must be a JSON object")
        if action == "load":
            config = parameters.get("config")
            if config is not None and not isinstance(config, str):
                raise InvalidRequest("parameters.config must be a string holding the model config as JSON")
            await self._call("load", model, config)
        else:
            version = parameters.get("version")
            try:
                version = int(version) if version is not None else None
            except (TypeError, ValueError):
                raise InvalidRequest(f"parameters.version must be a version number, got {version!r}") from None
            await self._call("unload", model, version)
        return json_response({})

    async def _forward(self, request: Request, model: str, plain_json: bool = False) -> Response:
        """Hand a request to a model's endpoint through its handle: the proxy does not route to it
        yet (Serve updates routes a moment after an application starts), or it is a pipeline's
        plain JSON route (``POST /pipelines/{name}``)."""
        handle = self._endpoint(model)
        body = await request.body() if request.method == "POST" else b""
        if plain_json:
            reply: HttpReply = await handle.plain_json.remote(body)
        else:
            path = request.url.path[len(model_route(model)):]
            reply = await handle.http.remote(request.method, path, request.headers.get(HEADER_LENGTH), body,
                                             REQUEST_ID.get())
        return reply.to_response()

    async def __call__(self, request: Request) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        token = REQUEST_ID.set(request_id)
        try:
            path = request.url.path
            self._auth.authorise(lambda: endpoint_group(path), request.headers.get("authorization"), path)
            response = await self._dispatch(request, request.url.path.rstrip("/") or "/")
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            response = error_response(exc)
        finally:
            REQUEST_ID.reset(token)
        return response  # Serve's HTTP ingress puts the same id on the response

    async def _metrics(self) -> Response:
        """``GET /metrics``: every replica's numbers, merged by the metrics hub, in Prometheus text."""
        merged = await hub_handle().collect.remote()
        return Response(render_prometheus(merged), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _server_get(self, method: str, path: str) -> Response | None:
        """The server's own read-only endpoints (the three v2 ones answer any method, as before)."""
        if path == "/v2/health/live":
            return json_response({"live": True})
        if path == "/v2/health/ready":
            ready = await self._ready()
            return json_response({"ready": ready}, 200 if ready else 503)
        if path == "/v2":
            return json_response({"name": "infergrid", "version": server_version(), "extensions": EXTENSIONS})
        if method != "GET":
            return None
        if path == "/openapi.json":
            return Response(self._openapi, media_type="application/json")
        if path == "/metrics":
            return await self._metrics()
        if path == "/v2/models/stats":
            return json_response(triton_statistics(await hub_handle().collect.remote()))
        return None

    async def _dispatch(self, request: Request, path: str) -> Response:
        answer = await self._server_get(request.method, path)
        if answer is not None:
            return answer
        if path == "/v2/repository/index" and request.method == "POST":
            ready_only = bool((await _json_body(request)).get("ready", False))
            return json_response([row.to_json() for row in await self.repository_index(ready_only)])
        action = _REPOSITORY_ACTION.match(path)
        if action and request.method == "POST":
            return await self._repository_action(request, action.group("model"), action.group("action"))
        pipeline = _PIPELINE_PATH.match(path)
        if pipeline and request.method == "POST":
            return await self._to_model(request, pipeline.group("model"), plain_json=True)
        match = _MODEL_PATH.match(path)
        if match:
            return await self._to_model(request, match.group("model"))
        raise ModelNotFound(f"no route {request.method} {request.url.path}")

    async def _to_model(self, request: Request, model: str, plain_json: bool = False) -> Response:
        _check_name(model)
        status = (await self._index()).get(model)
        if status and status.endpoint:
            return await self._forward(request, model, plain_json)
        if status and status.reason:
            raise ModelNotReady(f"model {model!r} is unavailable: {status.reason}")
        if status:
            raise ModelNotReady(f"model {model!r} is starting")
        raise ModelNotFound(f"unknown model {model!r}; served: {', '.join(await self._serving()) or 'none'}")
