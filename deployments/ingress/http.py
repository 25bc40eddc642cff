"""HTTP glue shared by every HTTP replica: replies, the one error renderer, paths to auth groups.

Every failure a client sees over HTTP passes through ``error_response``: the status comes from
``backends.errors.status_of`` (the one place that maps an error to its status), the body is
``{"error": "..."}``, and headers such as ``Retry-After`` come from the error itself.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from backends.errors import Overloaded, ServingError, status_of, unwrap_error

__all__ = ["HttpReply", "json_reply", "error_reply", "json_response", "error_response", "endpoint_group",
           "handler_visible"]

logger = logging.getLogger("infergrid")

_HEALTH = re.compile(r"^/v2/health/(live|ready)$|^/v2/models/[^/]+(/versions/[^/]+)?/ready$")
_METRICS = re.compile(r"^/metrics$|^/v2/models(/[^/]+(/versions/[^/]+)?)?/stats$")


@dataclass(frozen=True)
class HttpReply:
    """An HTTP answer as plain data: what a replica hands another through a DeploymentHandle."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def to_response(self) -> Response:
        """The Starlette response a replica's ``__call__`` returns."""
        return Response(self.body, status_code=self.status, media_type=self.media_type, headers=self.headers)


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpReply:
    """A compact JSON reply."""
    return HttpReply(status, json.dumps(body, separators=(",", ":")).encode(), headers=dict(headers or {}))


def error_reply(exc: BaseException, model: str | None = None) -> HttpReply:
    """Any exception as ``{"error": "..."}`` with its status (and its headers, e.g. Retry-After)."""
    exc = unwrap_error(exc)
    status = status_of(exc)
    if isinstance(exc, ServingError):
        if isinstance(exc, Overloaded):  # one line per refusal would flood the log under overload
            logger.debug("request refused (503): %s", exc)
        elif status >= 500:
            logger.warning("request failed: %s", exc)
        else:
            logger.info("request refused (%d): %s", status, exc)
        return json_reply({"error": str(exc)}, status, exc.response_headers())
    where = f" in model {model!r}" if model else ""
    logger.exception("unexpected error%s", where, exc_info=exc)
    return json_reply({"error": f"internal error{where}: {type(exc).__name__}: {exc}"}, status)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return json_reply(body, status, headers).to_response()


def error_response(exc: BaseException, model: str | None = None) -> Response:
    """Render any exception as ``{"error": "..."}`` with the right status."""
    return error_reply(exc, model).to_response()


def endpoint_group(path: str) -> str:
    """Which auth group (``deployments.dataplane.auth.GROUPS``) an HTTP path is in; unknown: inference."""
    path = path.rstrip("/") or "/"
    if _HEALTH.match(path):
        return "health"
    if _METRICS.match(path):
        return "metrics"
    if path == "/openapi.json":
        return "docs"
    if path == "/v2/repository" or path.startswith("/v2/repository/"):
        return "management"
    return "inference"


def handler_visible(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The request's headers as code past the front door sees them (a TorchServe handler, a composite's
    replica for its members' sticky traffic keys): all but the API key."""
    return None if headers is None else {k: v for k, v in headers.items() if k != "authorization"}
