"""What a front-door replica answers for: every served model's data plane, and the server API.

One ``Gateway`` per front-door replica holds a ``Door`` per served model: a model's door is its
data plane over a ``ModelRouter`` in this process (validation, batching, one Ray call per batch to
the version's replicas); an ensemble's or pipeline's door forwards to that composite's own
application through a handle. Paths no door owns go to ``ServerApi``. Transports (the HTTP
listener; gRPC) call ``precheck`` when a request's headers are in, then ``http`` or ``infer``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import numpy as np
from ray import serve

from backends.errors import InvalidRequest, ModelNotFound, Overloaded
from backends.signature import ModelSignature
from deployments.dataplane.auth import AuthPolicy
from deployments.dataplane.plane import DataPlane, ModelDescription
from deployments.dataplane.router import ModelRouter, follow_served_models
from deployments.dataplane.table import Route, ServedModel, Watcher
from deployments.dataplane.traffic import REQUEST_HEADERS
from deployments.dataplane.version_route import VersionRoute
from deployments.ingress.http import HttpReply, endpoint_group, error_reply, handler_visible
from deployments.ingress.listener import HttpRequest
from deployments.ingress.server import ServerApi
from deployments.ingress.tfserving_http import TF_MODELS, TfServingRest, tf_model_name
from deployments.ingress.v2_http import TIMEOUT_HEADER, V2HttpApi
from deployments.names import ENDPOINT_DEPLOYMENT, model_route
from deployments.observability.hub import replica_recorder
from deployments.observability.logs import REQUEST_ID_HEADER, new_request_id
from deployments.observability.metrics import Recorder
from deployments.protocol.limits import check_body_size
from deployments.protocol.v2 import HEADER_LENGTH
from deployments.repository.status import ModelStatus
from deployments.settings import INFLIGHT_ENV

__all__ = ["Gateway", "Door"]

logger = logging.getLogger("infergrid")

_MODELS = "/v2/models/"
_PIPELINES = "/pipelines/"
_READY_TIMEOUT_S = 5.0
_RESPONSE_ID = REQUEST_ID_HEADER.lower()


class Door:
    """One served model in this replica: its checks, its in-flight count, and where requests go."""

    def __init__(self, served: ServedModel, auth: AuthPolicy, recorder: Recorder | None) -> None:
        self.served = served
        self.inflight = 0
        self.follow: asyncio.Task | None = None
        self.router: ModelRouter | None = None
        self.handle: Any = None
        self.api: V2HttpApi | None = None
        if served.composite:  # its own replicas run it (and count its requests)
            self.handle = serve.get_deployment_handle(ENDPOINT_DEPLOYMENT, app_name=served.app)
        else:
            recorder = recorder if served.metrics else None
            self.router = ModelRouter(served.name, recorder=recorder)
            self.api = V2HttpApi(DataPlane(served.name, self.router, served.limits, auth, recorder, served.config,
                                           served.labels, served.version_labels))
            self.api.plane.set_traffic(served.traffic)

    async def reply(self, request: HttpRequest, path: str, request_id: str) -> HttpReply:
        """``path`` below ``/v2/models/{model}``."""
        header_length = request.headers.get(HEADER_LENGTH.lower())
        if self.api is not None:
            return await self.api.reply(request.method, path, header_length, request.body, request_id,
                                        request.headers.get(TIMEOUT_HEADER.lower()))
        return await self.handle.http.remote(request.method, path, header_length, request.body, request_id,
                                             request.headers.get(TIMEOUT_HEADER.lower()),
                                             handler_visible(request.headers))

    async def plain_json(self, body: bytes) -> HttpReply:
        if self.api is not None:
            return await self.api.plain_json(body)
        return await self.handle.plain_json.remote(body)

    async def infer(self, inputs: dict[str, np.ndarray], version: int | None) -> dict[str, np.ndarray]:
        if self.api is not None:
            return (await self.api.plane.infer(inputs, version)).outputs
        return await self.handle.infer.remote(inputs, version)

    async def infer_versioned(self, inputs: dict[str, np.ndarray], version: str | None,
                              timeout_s: float | None) -> tuple[int, dict[str, np.ndarray]]:
        """(the version that answered, outputs); ``timeout_s`` bounds the wait (504 past it)."""
        if self.api is not None:
            outcome = await self.api.plane.infer(inputs, version, timeout_s)
            return outcome.version, outcome.outputs
        return await self.handle.infer_versioned.remote(inputs, version, timeout_s,
                                                        handler_visible(REQUEST_HEADERS.get()))

    async def other_signature(self, name: str, version: str | None) -> tuple[VersionRoute, ModelSignature]:
        """The version route and the signature ``name`` of a SavedModel's other signatures (TF Serving's
        classify and regress): run it with ``route.run_signature``.

        Raises:
            InvalidRequest: the version has no such signature (TF Serving's words).
        """
        route = self.router.route(self.version_number(version)) if self.router is not None else None
        info = await route.describe() if route is not None else None
        if info is None or name not in info.other_signatures:
            raise InvalidRequest(f"Serving signature name: \"{name}\" not found in signature def")
        return route, info.other_signatures[name]

    async def describe(self, version: str | None) -> ModelDescription:
        number = self.version_number(version)
        if self.api is not None:
            return await self.api.plane.describe(number)
        return await self.handle.describe.remote(number)

    async def model_config(self, version: str | None) -> dict:
        """The config as Triton reports it (Triton's JSON mapping, completed from the model)."""
        number = self.version_number(version)
        if self.api is not None:
            return await self.api.plane.model_config(number)
        return await self.handle.model_config.remote(number)

    def version_number(self, version: str | None) -> int | None:
        """The version ``version`` names (a number, or a TF Serving version label); None: unversioned.

        Raises:
            ModelNotFound: neither a version number nor one of the model's labels.
        """
        labelled = self.api.plane.version(version) if self.api is not None and version else version
        return _version_number(self.served.name, None if labelled is None else str(labelled))

    def update_config(self, served: ServedModel) -> None:
        """Take a changed ``config``, labels, version labels, limits or traffic policy: no new door
        (batching and counts are applied by the table)."""
        self.served = served
        if self.api is not None:
            plane = self.api.plane
            plane.triton_config, plane.labels, plane.limits = served.config, served.labels, served.limits
            plane.version_labels = served.version_labels
            plane.set_traffic(served.traffic)

    async def ready(self, version: int | None = None) -> bool:
        try:
            if self.router is not None:
                return await self.router.ready(version)
            return await asyncio.wait_for(self.handle.ready.remote(version), _READY_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - unreachable means not ready
            return False

    async def close(self) -> None:
        if self.follow is not None:
            self.follow.cancel()
        if self.router is not None:
            await self.router.apply([])


def _version_number(model: str, version: str | None) -> int | None:
    if version is None or version == "":
        return None
    if not str(version).isdigit():
        raise ModelNotFound(f"model {model!r} has no version {version!r}")
    return int(version)


class Gateway:
    """The served models of one front-door replica, followed from the controller or fixed.

    Args:
        auth: the API-key policy, checked before any body is read.
        controller: the repository controller's actor name (None: fixed ``models``).
        index: what a fixed config serves, for the server API without a controller.
        watcher: this replica, as it acks routing tables.
        inflight_per_model: requests in flight per model past which new ones get 503 (0: no bound).
    """

    def __init__(self, auth: AuthPolicy, controller: str | None, index: dict[str, ModelStatus],
                 watcher: Watcher | None, inflight_per_model: int) -> None:
        self._auth = auth
        self._controller = controller
        self._watcher = watcher
        self._inflight_limit = inflight_per_model
        self._doors: dict[str, Door] = {}
        self.server = ServerApi(index, controller, self.ready)
        self._tf_rest = TfServingRest(self.server)  # TF Serving REST paths, over the same doors
        self.tf_metrics_path = ""  # TF Serving's --monitoring_config_file: /metrics' numbers there on its REST port
        self._recorder = replica_recorder(True)  # one per replica: the hub keeps one snapshot per replica

    # --- which models -------------------------------------------------------------------------
    async def add(self, served: ServedModel, routes: list[Route] | None = None) -> None:
        """Answer for ``served`` (again, if its settings changed); fixed ``routes`` without a controller."""
        current = self._doors.get(served.name)
        if current is not None and current.served == served:
            return
        if current is not None and replace(current.served, config=served.config, labels=served.labels,
                                           version_labels=served.version_labels, limits=served.limits,
                                           traffic=served.traffic) == served:
            current.update_config(served)
            return
        door = Door(served, self._auth, self._recorder)
        if door.api is not None and self._controller is not None:
            door.api.plane.report_guard(self._report_guard)
        if door.router is not None:
            if routes is not None:
                await door.router.apply(routes)
            elif self._controller is not None:
                door.follow = asyncio.get_running_loop().create_task(
                    door.router.follow(self._controller, self._watcher))
        self._doors[served.name] = door
        if current is not None:
            await current.close()

    async def _report_guard(self, model: str, event, seen) -> None:
        """A traffic guard's trip or step in this replica, to the controller (which writes traffic.json)."""
        await self.server.call("traffic_event", model, event.event, event.version, event.reason, seen.to_dict())

    async def remove(self, name: str) -> None:
        door = self._doors.pop(name, None)
        if door is not None:
            await door.close()

    async def follow_models(self) -> None:
        """Follow the controller's served models, for the replica's lifetime."""
        await follow_served_models(self._controller, self._apply_models,
                                   self._watcher.replica if self._watcher is not None else None)

    async def _apply_models(self, models: dict[str, ServedModel]) -> None:
        for name in [n for n in self._doors if n not in models]:
            await self.remove(name)
        for served in models.values():
            await self.add(served)

    async def ready(self, models: list[str]) -> bool:
        """True when every model in ``models`` has a door here that can serve."""
        doors = [self._doors.get(name) for name in models]
        if not all(doors):
            return False
        return all(await asyncio.gather(*(door.ready() for door in doors)))  # type: ignore[union-attr]

    async def ready_version(self, model: str, version: int) -> bool:
        door = self._doors.get(model)
        return door is not None and await door.ready(version)

    # --- requests -----------------------------------------------------------------------------
    def door(self, model: str) -> Door | None:
        """The served model's door in this replica (None: not served here)."""
        return self._doors.get(model)

    def authorise(self, group: str, authorization: str | None, what: str) -> None:
        """Raise ``Unauthenticated`` / ``Forbidden`` unless the key may run an operation of ``group``."""
        self._auth.authorise(group, authorization, what)

    def overloaded(self, door: Door) -> bool:
        """True when ``door`` holds as many requests as a replica may (``INFERGRID_INFLIGHT_PER_MODEL``)."""
        return bool(self._inflight_limit) and door.inflight >= self._inflight_limit

    def _door_of(self, path: str) -> tuple[Door | None, str]:
        """(the door of a ``/v2/models/{m}...``, ``/pipelines/{m}`` or TF Serving ``/v1/models/{m}...``
        path, the path below the model)."""
        if path.startswith(TF_MODELS):
            return self._doors.get(tf_model_name(path) or ""), path
        if path.startswith(_MODELS):
            name, _, rest = path[len(_MODELS):].partition("/")
            return self._doors.get(name), ("/" + rest if rest or path.endswith("/") else "")
        if path.startswith(_PIPELINES):
            return self._doors.get(path[len(_PIPELINES):]), ""
        return None, ""

    def precheck(self, request: HttpRequest) -> HttpReply | None:
        """Before the body is read: the key, the declared size, the in-flight bound."""
        path = request.path
        door, _ = self._door_of(path)
        try:
            self._auth.authorise(lambda: endpoint_group(path), request.headers.get("authorization"), path)
            if door is None:
                return None
            declared = request.headers.get("content-length", "")
            if declared.isdigit():
                check_body_size(int(declared), door.served.limits)
            if self.overloaded(door):
                raise Overloaded(f"model {door.served.name!r}: {door.inflight} requests in flight in this front-door "
                                 f"replica ({INFLIGHT_ENV}={self._inflight_limit}); retry later")
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_reply(exc, door.served.name if door else None)
        door.inflight += 1  # from now until answered (or abandoned): counted before its body is read
        request.admitted = door
        return None

    def release(self, request: HttpRequest) -> None:
        """The request's in-flight place, reserved by ``precheck``, is free again (once)."""
        door, request.admitted = request.admitted, None
        if door is not None:
            door.inflight -= 1

    async def http(self, request: HttpRequest) -> HttpReply:
        """Answer one HTTP request (already prechecked); the request id goes back on the reply."""
        request_id = request.headers.get(_RESPONSE_ID) or new_request_id()
        door, below = self._door_of(request.path)
        try:
            if request.path.startswith(TF_MODELS):
                try:
                    reply = await self._tf_rest.answer(request.method, request.path, request.body, door)
                finally:
                    self.release(request)
            elif door is None:
                reply = await self.server.answer(request.method, request.path, request.body)
            else:
                try:
                    if request.path.startswith(_PIPELINES):
                        reply = await door.plain_json(request.body)
                    else:
                        reply = await door.reply(request, below, request_id)
                finally:
                    self.release(request)
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            reply = error_reply(exc, door.served.name if door else None)
        reply.headers[_RESPONSE_ID] = request_id
        return reply

    async def metrics_only(self, request: HttpRequest) -> HttpReply:
        """Triton's metrics port: ``GET /metrics`` and nothing else (404)."""
        if request.path.rstrip("/") != "/metrics":
            self.release(request)
            return error_reply(ModelNotFound(f"this port serves only GET /metrics, not {request.path}"), None)
        return await self.http(request)

    def _is_tf_metrics(self, request: HttpRequest) -> bool:
        return bool(self.tf_metrics_path) and request.path.rstrip("/") == self.tf_metrics_path.rstrip("/")

    def tf_serving_precheck(self, request: HttpRequest) -> HttpReply | None:
        """``precheck`` on TF Serving's REST port, where its Prometheus path is in the metrics group."""
        if not self._is_tf_metrics(request):
            return self.precheck(request)
        try:
            self._auth.authorise(lambda: "metrics", request.headers.get("authorization"), request.path)
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_reply(exc, None)
        return None

    async def tf_serving_only(self, request: HttpRequest) -> HttpReply:
        """TF Serving's REST port: ``/v1/models/...``, the Prometheus path of its monitoring config (if
        any: what ``/metrics`` says), and nothing else (404)."""
        if self._is_tf_metrics(request):
            return await self.http(replace(request, path="/metrics", body=b""))
        if not request.path.startswith(TF_MODELS):
            self.release(request)
            return error_reply(ModelNotFound(f"this port serves TF Serving's /v1/models/... only, not "
                                             f"{request.path}"), None)
        return await self.http(request)

    async def infer(self, model: str, inputs: dict[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        """Python callers (through a handle): named numpy inputs -> named outputs."""
        door = self._doors.get(model)
        if door is None:
            await self.server.not_served(model)
            raise ModelNotFound(f"unknown model {model!r}")
        if not isinstance(inputs, dict):
            raise InvalidRequest(f"inputs of {model_route(model)} must be a dict of named arrays")
        return await door.infer(inputs, version)

    def stats(self) -> dict:
        """Batch counters of this replica, per model and version."""
        return {name: door.router.stats() for name, door in self._doors.items() if door.router is not None}
