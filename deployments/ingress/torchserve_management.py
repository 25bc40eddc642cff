"""TorchServe's management API (its ``management_api.md``) on ``--ts-management-port`` (8081 in TorchServe):

* ``GET    /models[?limit=&next_page_token=]``           the registered models, paged
* ``POST   /models?url=&model_name=&batch_size=&max_batch_delay=&initial_workers=&synchronous=&response_timeout=``
* ``GET    /models/{m}[/{v}|/all]``                      TorchServe's describe JSON, a worker per replica
* ``PUT    /models/{m}[/{v}]?min_worker=&max_worker=&synchronous=``   workers: replicas of each version
* ``PUT    /models/{m}/{v}/set-default``                 where unversioned requests go
* ``DELETE /models/{m}[/{v}]``                           unregister a version (default: the default one)
* ``OPTIONS /``                                          the API description (OpenAPI), as on 8080

A codec: the query becomes a call of the repository controller (``deployments.control.torchserve_calls``),
whose registry is the one state; every front-door replica answers for the same models. Register and
unregister need ``--enable-model-api`` (TorchServe's rule); with API keys set, this port takes a key of
the management role (TorchServe's management key). Failures are TorchServe's error JSON.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from backends.errors import InvalidRequest, MethodNotAllowed, ModelNotFound
from deployments.ingress.http import HttpReply, json_reply
from deployments.ingress.torchserve_http import api_description, ts_error, ts_error_of
from deployments.repository.ts_registry import RegisterParams

if TYPE_CHECKING:
    from deployments.ingress.gateway import Gateway
    from deployments.ingress.listener import HttpRequest

__all__ = ["TorchServeManagement", "register_params", "query_int", "query_bool"]

_MODEL = re.compile(r"^/models/(?P<model>[^/]+)(?:/(?P<version>[^/]+))?(?P<default>/set-default)?$")


def query_int(query: dict[str, list[str]], name: str, minimum: int = 0) -> int | None:
    """An integer query parameter (None: absent).

    Raises:
        InvalidRequest: not a whole number >= ``minimum``; names the parameter.
    """
    values = query.get(name)
    if not values:
        return None
    text = values[-1].strip()
    if not text.lstrip("-").isdigit() or int(text) < minimum:
        raise InvalidRequest(f"Invalid {name}: {text!r} is not a whole number >= {minimum}")
    return int(text)


def query_bool(query: dict[str, list[str]], name: str) -> bool:
    """TorchServe's boolean query parameters: ``true`` (any case) is true, anything else false."""
    values = query.get(name)
    return bool(values) and values[-1].strip().lower() == "true"


def register_params(query: dict[str, list[str]]) -> RegisterParams:
    """``POST /models``' settings (``url`` and ``model_name`` are read by the caller).

    Raises:
        InvalidRequest: a bad number, or ``handler`` (the archive's handler is the one that runs).
    """
    if query.get("handler"):
        raise InvalidRequest("handler: registering with a handler other than the archive's is not supported "
                             "(rebuild the archive with torch-model-archiver --handler)")
    return RegisterParams(batch_size=query_int(query, "batch_size", 1),
                          max_batch_delay_ms=query_int(query, "max_batch_delay", 0),
                          initial_workers=query_int(query, "initial_workers", 0) or None,
                          response_timeout_s=query_int(query, "response_timeout", 1))


class TorchServeManagement:
    """TorchServe's management port for one front-door replica's gateway.

    Args:
        gateway: the replica's gateway (its key check and its controller client).
        model_api: ``--enable-model-api``: register and unregister are allowed.
    """

    def __init__(self, gateway: Gateway, model_api: bool) -> None:
        self._gateway = gateway
        self._model_api = model_api

    def precheck(self, request: HttpRequest) -> HttpReply | None:
        """The key check: the management role (the API description: the docs group)."""
        twin = "/openapi.json" if request.method == "OPTIONS" else "/v2/repository/index"
        return ts_error_of(self._gateway.precheck(replace(request, path=twin)))

    async def answer(self, request: HttpRequest) -> HttpReply:
        """One request of the management port (already prechecked)."""
        try:
            if request.method == "OPTIONS":
                return json_reply(api_description())
            query = parse_qs(request.query, keep_blank_values=True)
            path = request.path.rstrip("/") or "/"
            if path == "/models":
                if request.method == "GET":
                    return await self._list(query)
                if request.method == "POST":
                    return await self._register(query)
                raise MethodNotAllowed(f"/models takes GET or POST, not {request.method}")
            match = _MODEL.match(path)
            if match is None:
                raise ModelNotFound(f"this port serves TorchServe's /models API only, not {request.path}")
            return await self._model(request.method, query, match.group("model"), match.group("version"),
                                     bool(match.group("default")))
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return ts_error(exc)

    async def _call(self, method: str, *args):
        return await self._gateway.server.call(method, *args)

    def _check_model_api(self, what: str) -> None:
        if not self._model_api:
            raise MethodNotAllowed(f"{what} is off: the model API is disabled (start with --enable-model-api, "
                                   f"or enable_model_api=true in --ts-config, as TorchServe)")

    async def _list(self, query: dict[str, list[str]]) -> HttpReply:
        limit = query_int(query, "limit", 1) or 100
        start = query_int(query, "next_page_token", 0) or 0
        models = await self._call("ts_list")
        page = [{"modelName": name, "modelUrl": url} for name, url in models[start:start + limit]]
        body: dict = {"models": page}
        if start + limit < len(models):
            body["nextPageToken"] = str(start + limit)
        return json_reply(body)

    async def _register(self, query: dict[str, list[str]]) -> HttpReply:
        self._check_model_api("registering a model")
        params = register_params(query)
        synchronous = query_bool(query, "synchronous")
        url = (query.get("url") or [""])[-1]
        name, version, workers = await self._call("ts_register", url, (query.get("model_name") or [""])[-1] or None,
                                                  params, synchronous)
        if synchronous:
            return json_reply({"status": f'Model "{name}" Version: {version} registered with {workers} '
                                         f"initial workers"})
        return json_reply({"status": f'Model "{name}" Version: {version} registered; loading with {workers} '
                                     f"initial workers. Processing worker updates..."}, 202)

    async def _model(self, method: str, query: dict[str, list[str]], name: str, version: str | None,
                     set_default: bool) -> HttpReply:
        if set_default:
            if method != "PUT":
                raise MethodNotAllowed(f"set-default takes PUT, not {method}")
            await self._call("ts_set_default", name, version)
            return json_reply({"status": f'Default version successfully updated for model "{name}" to "{version}"'})
        if method == "GET":
            return json_reply(await self._call("ts_describe", name, version))
        if method == "PUT":
            await self._call("ts_describe", name, version)  # the version must exist (the model's workers scale)
            synchronous = query_bool(query, "synchronous")
            workers = await self._call("ts_scale", name, query_int(query, "min_worker", 0),
                                       query_int(query, "max_worker", 0), synchronous)
            if synchronous:
                return json_reply({"status": f"Workers scaled to {workers} for model: {name}"})
            return json_reply({"status": "Processing worker updates..."}, 202)
        if method == "DELETE":
            self._check_model_api("unregistering a model")
            await self._call("ts_unregister", name, version)
            return json_reply({"status": f'Model "{name}" unregistered'})
        raise MethodNotAllowed(f"/models/{name} takes GET, PUT or DELETE, not {method}")
