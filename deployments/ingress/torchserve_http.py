"""TorchServe's inference API over the same doors as v2: a codec, not a copy.

Paths (TorchServe's ``inference_api.md``), on ``--ts-inference-port``:

* ``GET  /ping``                              ``{"status": "Healthy"}`` while the front door answers
* ``GET  /metrics`` (``--ts-metrics-port``)     TorchServe's ``ts_*`` counters, ``?name[]=`` filter
* ``POST /predictions/{m}[/{v}]``              the body (JSON, text or bytes, by its content type) or
  each multipart form field, handed to the model's TorchServe handler as one request of a batch
* ``POST /explanations/{m}[/{v}]``             the same with TorchServe's ``explain: True`` header, so
  ``BaseHandler.handle`` calls the handler's ``explain_handle`` (batched apart from predictions)
* ``OPTIONS /``                                 the API description (OpenAPI 3.0.1)

A request becomes one element of the model's ``body`` input (``backends.torchserve.wire.TsRequest``:
each part with its content type, and the headers) and goes through the model's ``Door``: the same
routing, batching, limits, metrics and auth as a v2 request to that model. The answer is what the
handler returned, with the content type and the status it set; failures are TorchServe's error JSON
(``{"code", "type", "message"}``).
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import replace
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING

import numpy as np

from backends.errors import HandlerError, InvalidRequest, MethodNotAllowed, ModelNotFound, unwrap_error
from backends.torchserve.wire import TS_CONTENT_TYPE, TS_INPUT, TS_OUTPUT, TsParameter, TsRequest
from deployments.ingress.http import HttpReply, error_reply, handler_visible, json_reply

if TYPE_CHECKING:
    from deployments.ingress.gateway import Gateway
    from deployments.ingress.listener import HttpRequest

__all__ = ["TorchServeInference", "TorchServeMetrics", "api_description", "handler_headers", "request_parts",
           "ts_error", "ts_error_of"]

_PREDICTIONS = re.compile(r"^/(?P<kind>predictions|explanations)/(?P<model>[^/]+)(?:/(?P<version>[^/]+))?/?$")
MODEL_VERSION_HEADER = "X-Model-Version"  # the version that answered (TorchServe's answers name none)
EXPLAIN_HEADER = ("explain", "True")  # what TorchServe's frontend sets for /explanations (BaseHandler._is_explain)


def api_description() -> dict:
    """TorchServe's ``OPTIONS /`` answer: the OpenAPI document of its APIs as served here."""
    from deployments.ingress.server import server_version
    from deployments.protocol.torchserve_openapi import torchserve_api_description

    return torchserve_api_description(server_version())
_TYPES = {400: "BadRequestException", 401: "InvalidKeyException", 403: "InvalidKeyException",
          404: "ModelNotFoundException", 405: "MethodNotAllowedException", 409: "ConflictStatusException",
          413: "RequestEntityTooLarge",
          503: "ServiceUnavailableException"}


def ts_error(exc: BaseException) -> HttpReply:
    """Any failure as TorchServe writes it: ``{"code", "type", "message"}`` with the status; a
    handler's own answer for a request it failed (``set_response_status``) goes back as it is."""
    cause = unwrap_error(exc)
    if isinstance(cause, HandlerError) and cause.body is not None:
        return HttpReply(cause.http_status, cause.body, cause.content_type or "application/octet-stream")
    return ts_error_of(error_reply(cause))  # logged and worded once, as every protocol's errors


def request_parts(content_type: str, body: bytes) -> tuple[TsParameter, ...]:
    """The parts TorchServe's frontend makes of a body: each multipart form field (its own content
    type; a field without one is text), else the whole body named ``body``.

    Raises:
        InvalidRequest: a multipart body that cannot be parsed or has no fields.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        return (TsParameter("body", media, body),)
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") +
                                                  b"\r\n\r\n" + body)
    parts = []
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        declared = part.get("content-type")
        media_type = part.get_content_type() if declared else ("application/octet-stream" if part.get_filename()
                                                                else "text/plain")
        parts.append(TsParameter(str(name), media_type, part.get_payload(decode=True) or b""))
    if not parts:
        raise InvalidRequest("multipart/form-data body: no form field with a name (is the boundary right?)")
    return tuple(parts)


def handler_headers(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The headers a handler sees (``context.get_request_header``): all but the API key (and ``explain``,
    which only TorchServe's /explanations path sets)."""
    return tuple((name, value) for name, value in handler_visible(headers).items() if name != "explain")


class TorchServeInference:
    """TorchServe's inference port for one front-door replica's gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def precheck(self, request: HttpRequest) -> HttpReply | None:
        """The gateway's checks (key, declared size, in-flight bound) as for the model's v2 path."""
        match = _PREDICTIONS.match(request.path)
        path = f"/v2/models/{match.group('model')}/infer" if match else \
            "/openapi.json" if request.method == "OPTIONS" else "/v2/health/live"
        twin = replace(request, path=path)
        refused = self._gateway.precheck(twin)
        request.admitted = twin.admitted
        return ts_error_of(refused)

    async def answer(self, request: HttpRequest) -> HttpReply:
        """One request of the inference port (already prechecked)."""
        try:
            if request.path.rstrip("/") == "/ping":  # this replica answers: its models are followed
                return json_reply({"status": "Healthy"})
            match = _PREDICTIONS.match(request.path)
            if match is None and request.method == "OPTIONS" and request.path.rstrip("/") == "":
                return json_reply(api_description())
            if match is None:
                raise ModelNotFound(f"this port serves TorchServe's /ping, /predictions/... and /explanations/... "
                                    f"only, not {request.path}")
            if request.method not in ("POST", "PUT"):
                raise MethodNotAllowed(f"/{match.group('kind')} takes POST, not {request.method}")
            return await self._predict(request, match.group("model"), match.group("version"),
                                       match.group("kind") == "explanations")
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return ts_error(exc)
        finally:
            self._gateway.release(request)

    async def _predict(self, request: HttpRequest, model: str, version: str | None, explain: bool) -> HttpReply:
        door = self._gateway.door(model)
        if door is None:
            raise ModelNotFound(f"Model not found: {model}")
        parts = request_parts(request.headers.get("content-type", ""), request.body)
        headers = handler_headers(request.headers) + ((EXPLAIN_HEADER,) if explain else ())
        element = np.empty((1, 1), dtype=object)
        element[0, 0] = tuple(TsRequest(parts, headers))
        answered, outputs = await door.infer_versioned({TS_INPUT: element}, version, None)
        body = outputs[TS_OUTPUT].ravel()[0]
        content_type = outputs[TS_CONTENT_TYPE].ravel()[0].decode() if TS_CONTENT_TYPE in outputs else ""
        return HttpReply(200, bytes(body), content_type or "application/octet-stream",
                         {MODEL_VERSION_HEADER: str(answered)})


class TorchServeMetrics:
    """TorchServe's metrics port for one front-door replica: ``GET /metrics`` and nothing else."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._hostname = socket.gethostname()

    def precheck(self, request: HttpRequest) -> HttpReply | None:
        """The key check of the metrics group (open unless --open-endpoints narrows it)."""
        return ts_error_of(self._gateway.precheck(replace(request, path="/metrics")))

    async def answer(self, request: HttpRequest) -> HttpReply:
        from deployments.observability.hub import hub_handle
        from deployments.observability.torchserve_metrics import requested_names, torchserve_metrics_text

        try:
            if request.path.rstrip("/") != "/metrics":
                raise ModelNotFound(f"this port serves TorchServe's GET /metrics only, not {request.path}")
            merged = await hub_handle().collect.remote()
            text = torchserve_metrics_text(merged, self._hostname, requested_names(request.query))
            return HttpReply(200, text, "text/plain; version=0.0.4; charset=utf-8")
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return ts_error(exc)


def ts_error_of(refused: HttpReply | None) -> HttpReply | None:
    """An ``{"error"}`` reply in TorchServe's error JSON, status and headers kept (None stays None)."""
    if refused is None:
        return None
    message = json.loads(refused.body).get("error", "") if refused.body else ""
    kind = _TYPES.get(refused.status, "InternalServerException" if refused.status >= 500 else "BadRequestException")
    return json_reply({"code": refused.status, "type": kind, "message": message}, refused.status, refused.headers)
