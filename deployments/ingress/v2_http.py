"""The model endpoint: one per model, the HTTP ingress for ``/v2/models/{model}/...``.

It speaks the v2 protocol for its model, validates each request against the version's signature
(so one bad request never fails its batch-mates), and forms dynamic batches with ``@serve.batch``
(a request of n rows counts as n). One call per *batch* then goes to the version's replicas. Routing
lives in ``deployments.dataplane.router``: unversioned requests go to the newest ready version, and the table
of versions changes (from the repository controller) without restarting the endpoint.

``V2Endpoint`` is the protocol half alone (paths, methods, codecs, errors); ensembles and pipelines
serve the same API through it.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from backends.errors import InvalidRequest, ModelNotFound, PayloadTooLarge, ServingError
from deployments.dataplane.auth import AuthPolicy
from deployments.ingress.http import error_response, json_response
from deployments.observability.logs import CLIENT_ID, REQUEST_ID, REQUEST_ID_HEADER, configure_logging, new_request_id
from deployments.observability.metrics import Recorder, triton_statistics
from deployments.observability.hub import hub_handle, replica_recorder
from deployments.names import model_route
from deployments.protocol.limits import RequestLimits, check_body_size
from deployments.protocol.v2 import HEADER_LENGTH, decode_infer_request, encode_infer_response, model_metadata
from deployments.dataplane.router import ModelRouter, replica_identity
from deployments.dataplane.table import Route

__all__ = ["ModelEndpoint", "V2Endpoint"]

_PATH = re.compile(r"^(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready|/stats)?/?$")


TIMEOUT_HEADER = "X-Request-Timeout-Ms"


def request_timeout_s(header_ms: str | None, parameter_us: object) -> float | None:
    """A request's own timeout: its ``X-Request-Timeout-Ms`` header, else Triton's request
    parameter ``timeout`` (microseconds); None when it has neither.

    Raises:
        InvalidRequest: not a positive number.
    """
    if header_ms is not None:
        try:
            value_s = float(header_ms) / 1000
        except ValueError:
            value_s = -1.0
        if not value_s > 0:
            raise InvalidRequest(f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {header_ms!r}")
        return value_s
    if parameter_us is None:
        return None
    if isinstance(parameter_us, bool) or not isinstance(parameter_us, (int, float)) or parameter_us <= 0:
        raise InvalidRequest(f"parameters.timeout must be a positive number of microseconds, got {parameter_us!r}")
    return parameter_us / 1e6


def _as_tuple(response: Response) -> tuple[int, dict, bytes]:
    return response.status_code, dict(response.headers), bytes(response.body)


class V2Endpoint(ABC):
    """The v2 HTTP API of one model over four methods its subclass provides.

    Subclasses implement ``_infer``, ``metadata``, ``ready`` and ``stats``; pipelines also take
    plain JSON (``_plain_json``), at ``POST /pipelines/{model}`` and, run alone, at their own path
    (``_post_root``).
    """

    _model: str
    _recorder: Recorder | None = None
    _limits: RequestLimits = RequestLimits()
    _auth: AuthPolicy = AuthPolicy()

    @abstractmethod
    async def _infer(self, inputs: dict[str, np.ndarray], version: str | int | None,
                     timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """(version that answered, outputs)."""

    @abstractmethod
    async def metadata(self, version: int | None = None) -> dict:
        """The v2 model metadata object."""

    @abstractmethod
    async def ready(self, version: int | None = None) -> bool:
        """True when the model (or the version) can serve."""

    @abstractmethod
    async def stats(self) -> dict:
        """This replica's own counters (``/stats`` over HTTP is Triton's, cluster-wide)."""

    async def _post_root(self, body: bytes) -> Response:
        return json_response({"error": "use GET here, or POST to .../infer"}, 405)

    def _default_version(self) -> str:
        """The version an unversioned request goes to, for counting requests that failed early."""
        return ""

    async def statistics(self, version: str | None = None) -> dict:
        """Triton's statistics extension for this model, for the whole cluster (from the metrics hub)."""
        merged = await hub_handle().collect.remote()
        return triton_statistics(merged, self._model, version)

    async def _plain_json(self, body: bytes) -> Response:
        raise ModelNotFound(f"model {self._model!r} is not an ensemble or pipeline: it has no plain JSON route; "
                            f"use POST {model_route(self._model)}/infer")

    async def infer(self, inputs: dict[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        """Python entry point (through a DeploymentHandle): named numpy inputs -> named outputs."""
        return (await self._infer(inputs, version))[1]

    async def __call__(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        try:  # before the body is read; the key first: HAProxy sends /v2/models/{model} here directly
            self._auth.check(request.url.path, request.headers.get("authorization"))
            if declared.isdigit():
                check_body_size(int(declared), self._limits)
        except ServingError as exc:
            return error_response(exc, self._model)
        path = request.url.path[len(request.scope.get("root_path", "")):]
        body = await request.body() if request.method == "POST" else b""
        return await self._respond(request.method, path, request.headers.get(HEADER_LENGTH), body,
                                   request.headers.get(REQUEST_ID_HEADER), request.headers.get(TIMEOUT_HEADER))

    async def http(self, method: str, path: str, header_length: str | None, body: bytes,
                   request_id: str | None = None) -> tuple[int, dict, bytes]:
        """The same HTTP API through a handle: for requests the server ingress received because the
        proxy did not route ``/v2/models/{model}`` here yet (a model loaded a moment ago)."""
        return _as_tuple(await self._respond(method, path, header_length, body, request_id))

    async def plain_json(self, body: bytes) -> tuple[int, dict, bytes]:
        """``POST /pipelines/{model}`` through a handle (the server ingress owns that path)."""
        try:
            return _as_tuple(await self._plain_json(body))
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return _as_tuple(error_response(exc, self._model))

    async def _respond(self, method: str, path: str, header_length: str | None, body: bytes,
                       request_id: str | None = None, timeout_ms: str | None = None) -> Response:
        """Answer one request, with its request id in every log line about it.

        The id is the request's ``X-Request-ID`` header, or the one Serve generated for it (Serve's
        HTTP ingress also puts it on the response); a v2 body ``id`` is logged beside it.
        """
        token = REQUEST_ID.set(request_id or new_request_id())
        try:
            match = _PATH.match(path)
            try:
                if match is None:
                    raise ModelNotFound(f"no route {method} {model_route(self._model)}{path}")
                response = await self._dispatch(method, match.group("version"), match.group("action"),
                                                header_length, body, timeout_ms)
            except Exception as exc:  # noqa: BLE001 - one renderer for every failure
                response = error_response(exc, self._model)
            return response
        finally:
            REQUEST_ID.reset(token)

    async def _dispatch(self, method: str, version: str | None, action: str | None, header_length: str | None,
                        body: bytes, timeout_ms: str | None = None) -> Response:
        if action == "/infer":
            if method != "POST":
                return json_response({"error": "use POST for infer"}, 405)
            return await self._http_infer(header_length, body, version, timeout_ms)
        if method == "POST" and action is None and version is None:
            return await self._post_root(body)
        if method != "GET":
            return json_response({"error": f"{method} is not allowed here"}, 405)
        if action == "/ready":
            ready = await self.ready(version)
            return json_response({"name": self._model, "ready": ready}, 200 if ready else 503)
        if action == "/stats":
            return json_response(await self.statistics(version))
        return json_response(await self.metadata(version))

    async def _http_infer(self, header_length: str | None, payload: bytes, version: str | None,
                          timeout_ms: str | None = None) -> Response:
        try:
            length = int(header_length) if header_length is not None else None
        except ValueError:
            raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        try:
            infer_request = decode_infer_request(payload, length, self._limits)
        except (InvalidRequest, PayloadTooLarge):
            if self._recorder is not None:  # never reached a version: counted against the one asked for
                self._recorder.failure(self._model, str(version or self._default_version()), "OTHER", 0.0)
            raise
        if infer_request.id:
            CLIENT_ID.set(infer_request.id)
        timeout_s = request_timeout_s(timeout_ms, infer_request.parameters.get("timeout"))
        answered_by, outputs = await self._infer(infer_request.inputs, version, timeout_s)
        body, json_length = encode_infer_response(infer_request, self._model, str(answered_by), outputs)
        if json_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length)})


class ModelEndpoint(V2Endpoint):
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
        self._model = model
        self._limits = limits or RequestLimits()
        self._auth = AuthPolicy.from_dict(auth)
        configure_logging(f"endpoint-{model}")
        self._recorder = replica_recorder(metrics)
        self._router = ModelRouter(model, recorder=self._recorder)
        self._following = controller is not None
        self._watch_task = None
        if controller:
            replica, group = replica_identity()
            self._watch_task = asyncio.get_running_loop().create_task(self._router.follow(controller, replica, group))

    async def reconfigure(self, user_config: dict) -> None:
        """Apply the deployment's table (only before a controller's table has arrived)."""
        if not self._following or self._router.token is None:
            await self._router.apply([Route.from_dict(r) for r in user_config.get("routes", [])])

    async def _infer(self, inputs: dict[str, np.ndarray], version: str | int | None,
                     timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        return await self._router.infer(inputs, version, timeout_s)

    async def metadata(self, version: int | None = None) -> dict:
        """The v2 model metadata object."""
        route = self._router.route(version)
        info = await route.describe()
        versions = [str(route.version)] if version is not None else [str(v) for v in self._router.versions]
        return model_metadata(self._model, versions, info.triton_platform, info.signature)

    async def ready(self, version: int | None = None) -> bool:
        """True when the version (or, unversioned, any version) can serve."""
        return await self._router.ready(version)

    async def stats(self) -> dict:
        """Batch counters per version, as this replica formed them (``/stats`` is Triton's, cluster-wide)."""
        return self._router.stats()

    def _default_version(self) -> str:
        versions = self._router.versions
        return str(versions[0]) if versions else ""
