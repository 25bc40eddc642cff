"""Server-level v2 endpoints, and the answer for every path no served model owns.

The front door (``deployments.ingress.gateway``) answers ``/v2/models/{model}`` itself for the
models it serves and hands everything else here: ``/v2``, the health endpoints, ``/metrics``,
``/openapi.json``, Triton's repository API (index, load, unload), and models that are unknown
(404) or unavailable (503 with the reason). It asks the repository controller what is served;
without one (a fixed ``serve deploy`` config) it answers from the index it was given.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

import ray

from backends.errors import InvalidRequest, MethodNotAllowed, ModelNotFound, ModelNotReady, RepositoryError
from deployments.ingress.http import HttpReply, json_reply
from deployments.names import CONTROLLER_NAMESPACE
from deployments.observability.hub import hub_handle
from deployments.observability.metrics import render_prometheus, triton_statistics
from deployments.observability.torchserve_metrics import torchserve_metrics_text
from deployments.protocol.openapi import openapi_document
from deployments.repository.scan import MODEL_NAME
from deployments.repository.status import IndexRow, ModelStatus, static_index

__all__ = ["ServerApi", "server_version", "check_model_name"]

_MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)")
_PIPELINE_PATH = re.compile(r"^/pipelines/(?P<model>[^/]+)$")
_LABELS_PATH = re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/labels$")
_TRAFFIC_PATH = re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/traffic$")
_REPOSITORY_ACTION = re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/(?P<action>load|unload)$")
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics"]


def server_version() -> str:
    """The installed infergrid version."""
    try:
        return version("infergrid")
    except PackageNotFoundError:
        return "0+unknown"


def _json_body(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def check_model_name(model: str) -> None:
    """Refuse a model name no repository folder can have (``..``, ``/``, control characters ...).

    Raises:
        InvalidRequest: the name does not match the repository's folder-name rule.
    """
    if not MODEL_NAME.match(model):
        raise InvalidRequest(f"invalid model name {model[:130]!r}: names are 1-128 letters, digits, '_', '.' or "
                             f"'-', not starting with '.' or '-'")


class ServerApi:
    """The server's own endpoints, over plain (method, path, body).

    Args:
        index: what a fixed config serves (used without a controller); a reason marks a failed model.
        controller: the repository controller's actor name (None: a fixed config).
        ready: True when every served model can answer (the front door asks its own planes).
    """

    def __init__(self, index: dict[str, ModelStatus], controller: str | None,
                 ready: Callable[[list[str]], Awaitable[bool]]) -> None:
        self._openapi = json.dumps(openapi_document(server_version()), separators=(",", ":")).encode()
        self._static_index = index
        self._controller_name = controller
        self._controller = None
        self._models_ready = ready
        self._hostname = socket.gethostname()

    def _controller_handle(self):
        if self._controller is None:
            try:
                self._controller = ray.get_actor(self._controller_name, namespace=CONTROLLER_NAMESPACE)
            except ValueError:
                raise ModelNotReady("the repository controller is not running") from None
        return self._controller

    async def call(self, method: str, *args):
        """Call the controller (its errors reach the error renderer, which unwraps them).

        Raises:
            RepositoryError: no controller (a fixed ``serve deploy`` config).
            ModelNotReady: the controller is not running, or restarting.
        """
        if self._controller_name is None:
            raise RepositoryError(f"{method} needs the repository controller (infergrid serve)")
        try:
            return await getattr(self._controller_handle(), method).remote(*args)
        except ray.exceptions.RayActorError:
            self._controller = None
            raise ModelNotReady("the repository controller is restarting; try again") from None

    async def index(self) -> dict[str, ModelStatus]:
        if self._controller_name is None:
            return self._static_index
        return await self.call("models")

    async def serving(self) -> list[str]:
        return [name for name, status in (await self.index()).items() if not status.reason]

    async def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        """Triton's ``POST /v2/repository/index`` rows."""
        if self._controller_name is not None:
            return await self.call("index", ready_only)
        return static_index(self._static_index, ready_only)

    async def _repository_action(self, body: bytes, model: str, action: str) -> HttpReply:
        check_model_name(model)
        if self._controller_name is None:
            raise RepositoryError(f"explicit model {action} needs the repository controller (infergrid serve)")
        parameters = _json_body(body).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidRequest("parameters must be a JSON object")
        if action == "load":
            config = parameters.get("config")
            if config is not None and not isinstance(config, str):
                raise InvalidRequest("parameters.config must be a string holding the model config as JSON")
            await self.load(model, config)
        else:
            number = parameters.get("version")
            try:
                number = int(number) if number is not None else None
            except (TypeError, ValueError):
                raise InvalidRequest(f"parameters.version must be a version number, got {number!r}") from None
            await self.unload(model, number)
        return json_reply({})

    async def _labels(self, method: str, body: bytes, model: str) -> HttpReply:
        """``GET|PUT /v2/repository/models/{m}/labels``: TF Serving's version labels of a model, read or
        replaced (``{"version_labels": {"stable": 2}}``) through the controller."""
        check_model_name(model)
        if self._controller_name is None:
            raise RepositoryError("version labels need the repository controller (infergrid serve)")
        if method == "GET":
            return json_reply({"version_labels": await self.call("version_labels", model)})
        if method != "PUT":
            raise MethodNotAllowed(f"{model} labels take GET or PUT, not {method}")
        labels = _json_body(body).get("version_labels")
        if not isinstance(labels, dict):
            raise InvalidRequest("version_labels must be a JSON object of label -> version number")
        return json_reply({"version_labels": await self.call("set_version_labels", model, labels)})

    async def _traffic(self, method: str, body: bytes, model: str) -> HttpReply:
        """``GET|POST /v2/repository/models/{m}/traffic``: the model's traffic policy, read or changed
        (``{"policy": {"weights": {"3": 90, "4": 10}}}``, ``{"promote": 4}``, ``{"rollback": true}``,
        ``{"clear": true}``) through the controller."""
        check_model_name(model)
        if method == "GET":
            return json_reply(await self.call("traffic", model))
        if method != "POST":
            raise MethodNotAllowed(f"{model} traffic takes GET or POST, not {method}")
        return json_reply(await self.call("set_traffic", model, _json_body(body)))

    def _explicit(self, model: str, action: str) -> None:
        check_model_name(model)
        if self._controller_name is None:
            raise RepositoryError(f"explicit model {action} needs the repository controller (infergrid serve)")

    async def load(self, model: str, config: str | None = None) -> None:
        """Triton's repository load (explicit model control), ``config``: a model config as JSON."""
        self._explicit(model, "load")
        await self.call("load", model, config)

    async def unload(self, model: str, version: int | None = None) -> None:
        """Triton's repository unload (of one version, with ``version``)."""
        self._explicit(model, "unload")
        await self.call("unload", model, version)

    async def reload_tf_config(self, config: bytes) -> None:
        """TF Serving's config reload: a serialized ``ModelServerConfig`` to the controller, which applies it."""
        if self._controller_name is None:
            raise RepositoryError("a config reload needs the repository controller (infergrid serve)")
        await self.call("reload_model_config", config)

    async def _metrics(self) -> HttpReply:
        """``GET /metrics``: every replica's numbers, merged by the metrics hub, in Prometheus text: Triton's
        names, and TorchServe's three frontend counters beside them (one set of numbers, two spellings)."""
        merged = await hub_handle().collect.remote()
        text = render_prometheus(merged) + torchserve_metrics_text(merged, self._hostname)
        return HttpReply(200, text, "text/plain; version=0.0.4; charset=utf-8")

    async def _server_get(self, method: str, path: str) -> HttpReply | None:
        """The server's own read-only endpoints (the three v2 ones answer any method, as before)."""
        if path == "/v2/health/live":
            return json_reply({"live": True})
        if path == "/v2/health/ready":
            ready = await self._models_ready(await self.serving())
            return json_reply({"ready": ready}, 200 if ready else 503)
        if path == "/v2":
            return json_reply({"name": "infergrid", "version": server_version(), "extensions": EXTENSIONS})
        if method != "GET":
            return None
        if path == "/openapi.json":
            return HttpReply(200, self._openapi)
        if path == "/metrics":
            return await self._metrics()
        if path == "/v2/models/stats":
            return json_reply(triton_statistics(await hub_handle().collect.remote()))
        return None

    async def answer(self, method: str, path: str, body: bytes) -> HttpReply:
        """Answer a path that no served model owns (raises for the error renderer)."""
        path = path.rstrip("/") or "/"
        answer = await self._server_get(method, path)
        if answer is not None:
            return answer
        if path == "/v2/repository/index" and method == "POST":
            ready_only = bool(_json_body(body).get("ready", False))
            return json_reply([row.to_json() for row in await self.repository_index(ready_only)])
        labels = _LABELS_PATH.match(path)
        if labels:
            return await self._labels(method, body, labels.group("model"))
        traffic = _TRAFFIC_PATH.match(path)
        if traffic:
            return await self._traffic(method, body, traffic.group("model"))
        action = _REPOSITORY_ACTION.match(path)
        if action and method == "POST":
            return await self._repository_action(body, action.group("model"), action.group("action"))
        model = _PIPELINE_PATH.match(path) if method == "POST" else None
        model = model or _MODEL_PATH.match(path)
        if model:
            await self.not_served(model.group("model"))
        raise ModelNotFound(f"no route {method} {path}")

    async def not_served(self, model: str) -> None:
        """Raise why ``model`` cannot be answered here: unknown (404), failed or starting (503)."""
        check_model_name(model)
        status = (await self.index()).get(model)
        if status and status.reason:
            raise ModelNotReady(f"model {model!r} is unavailable: {status.reason}")
        if status:
            raise ModelNotReady(f"model {model!r} is starting")
        raise ModelNotFound(f"unknown model {model!r}; served: {', '.join(await self.serving()) or 'none'}")
