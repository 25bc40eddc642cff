"""The v2 (KServe / Triton) HTTP transport of one model: paths and methods over the data plane.

This is glue only. Per request: the key and the declared body size are checked before the body
is read (``DataPlane.authorise``, ``check_declared_size``), the path picks the operation, the v2
codec (``deployments.protocol.v2``) decodes the body, the data plane answers, and the codec
encodes the answer. Model endpoints and composites (ensembles, pipelines) both serve their API
through this class; only the data plane's ``Servable`` differs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from backends.errors import InvalidRequest, MethodNotAllowed, ModelNotFound, PayloadTooLarge
from deployments.dataplane.plane import DataPlane, ModelDescription
from deployments.dataplane.traffic import REQUEST_HEADERS, REQUEST_PARAMETERS
from deployments.ingress.http import HttpReply, error_reply, json_reply
from deployments.names import model_route
from deployments.observability.logs import CLIENT_ID, REQUEST_ID, new_request_id
from deployments.protocol.v2 import decode_infer_request, encode_infer_response, model_metadata

__all__ = ["V2HttpApi", "V2Deployment", "request_timeout_s", "TIMEOUT_HEADER"]

_PATH = re.compile(r"^(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready|/stats|/config)?/?$")
TIMEOUT_HEADER = "X-Request-Timeout-Ms"
PlainJson = Callable[[bytes], Awaitable[HttpReply]]


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


class V2HttpApi:
    """``/v2/models/{model}[/versions/{v}][/infer|/ready|/stats]`` for one model.

    Args:
        plane: the model's data plane.
        plain_json: a pipeline's plain JSON route (``POST /v2/models/{m}`` and ``/pipelines/{m}``);
            None for models, which answer that route with 404.
    """

    def __init__(self, plane: DataPlane, plain_json: PlainJson | None = None) -> None:
        self.plane = plane
        self._model = plane.model
        self._plain_json = plain_json

    async def plain_json(self, body: bytes) -> HttpReply:
        """``POST /pipelines/{model}``: a pipeline's plain JSON route (404 for a model)."""
        try:
            if self._plain_json is None:
                raise ModelNotFound(f"model {self._model!r} is not an ensemble or pipeline: it has no plain JSON "
                                    f"route; use POST {model_route(self._model)}/infer")
            return await self._plain_json(body)
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_reply(exc, self._model)

    async def reply(self, method: str, path: str, header_length: str | None, body: bytes,
                    request_id: str | None = None, timeout_ms: str | None = None) -> HttpReply:
        """Answer one request (``path`` below the model's route), its request id in every log line.

        The id is the request's ``X-Request-ID`` header, or the one the front door generated for it
        (it also puts it on the response); a v2 body ``id`` is logged beside it.
        """
        token = REQUEST_ID.set(request_id or new_request_id())
        try:
            match = _PATH.match(path)
            if match is None:
                raise ModelNotFound(f"no route {method} {model_route(self._model)}{path}")
            return await self._dispatch(method, match.group("version"), match.group("action"),
                                        header_length, body, timeout_ms)
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_reply(exc, self._model)
        finally:
            REQUEST_ID.reset(token)

    async def _dispatch(self, method: str, version: str | None, action: str | None, header_length: str | None,
                        body: bytes, timeout_ms: str | None) -> HttpReply:
        if action == "/infer":
            if method != "POST":
                raise MethodNotAllowed("use POST for infer")
            return await self._infer(header_length, body, version, timeout_ms)
        if method == "POST" and action is None and version is None:
            if self._plain_json is None:
                raise MethodNotAllowed("use GET here, or POST to .../infer")
            return await self._plain_json(body)
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not allowed here")
        if action == "/ready":
            ready = await self.plane.ready(version)
            return json_reply({"name": self._model, "ready": ready}, 200 if ready else 503)
        if action == "/stats":
            return json_reply(await self.plane.statistics(version))
        if action == "/config":
            return json_reply(await self.plane.model_config(version))
        described = await self.plane.describe(version)
        return json_reply(model_metadata(described.name, list(described.versions), described.platform,
                                         described.signature))

    async def _infer(self, header_length: str | None, payload: bytes, version: str | None,
                     timeout_ms: str | None) -> HttpReply:
        try:
            length = int(header_length) if header_length is not None else None
        except ValueError:
            raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        try:
            infer_request = decode_infer_request(payload, length, self.plane.limits)
        except (InvalidRequest, PayloadTooLarge):
            self.plane.refused(version)  # never reached a version: counted against the one asked for
            raise
        if infer_request.id:
            CLIENT_ID.set(infer_request.id)
        REQUEST_PARAMETERS.set(infer_request.parameters)  # a traffic policy may be sticky on one
        timeout_s = request_timeout_s(timeout_ms, infer_request.parameters.get("timeout"))
        outcome = await self.plane.infer(infer_request.inputs, version, timeout_s)
        body, json_length = encode_infer_response(infer_request, self._model, str(outcome.version), outcome.outputs,
                                                  self.plane.labels, self.plane.triton_config)
        if json_length is None:
            return HttpReply(200, body)
        return HttpReply(200, body, "application/octet-stream", {"Inference-Header-Content-Length": str(json_length)})


class V2Deployment:
    """What a composite's deployment offers over its ``V2HttpApi`` (``self._api``, set by the
    subclass) to the front door: HTTP, plain JSON and numpy, through a handle."""

    _api: V2HttpApi

    async def http(self, method: str, path: str, header_length: str | None, body: bytes,
                   request_id: str | None = None, timeout_ms: str | None = None,
                   headers: Mapping[str, str] | None = None) -> HttpReply:
        """The HTTP API through a handle: the front door forwards a composite's requests here, with the
        request's headers (its members' traffic policies may be sticky on one)."""
        REQUEST_HEADERS.set(headers)
        return await self._api.reply(method, path, header_length, body, request_id, timeout_ms)

    async def plain_json(self, body: bytes) -> HttpReply:
        """``POST /pipelines/{model}`` through a handle (from the front door)."""
        return await self._api.plain_json(body)

    async def infer(self, inputs: dict[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        """Python entry point (through a DeploymentHandle): named numpy inputs -> named outputs."""
        return (await self._api.plane.infer(inputs, version)).outputs

    async def infer_versioned(self, inputs: dict[str, np.ndarray], version: str | None = None,
                              timeout_s: float | None = None,
                              headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """(version that answered, outputs): for transports that report the version (gRPC)."""
        REQUEST_HEADERS.set(headers)
        outcome = await self._api.plane.infer(inputs, version, timeout_s)
        return outcome.version, outcome.outputs

    async def describe(self, version: int | None = None) -> ModelDescription:
        """The composite's metadata (gRPC ``ModelMetadata``)."""
        return await self._api.plane.describe(version)
