"""HTTP glue shared by the ingress deployments: JSON responses and the one error renderer.

Every failure a client sees passes through ``error_response``: a ``ServingError`` keeps its own
status; an exception that crossed a Ray process is unwrapped to its cause first; anything else is a
500 that names the model.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

from backends.errors import Overloaded, ServingError

__all__ = ["json_response", "error_response", "unwrap_error"]

logger = logging.getLogger("infergrid")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=headers)


def unwrap_error(exc: BaseException) -> BaseException:
    """The original exception behind a Ray task error (which wraps errors raised in replicas)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def error_response(exc: BaseException, model: str | None = None) -> Response:
    """Render any exception as ``{"error": "..."}`` with the right status."""
    exc = unwrap_error(exc)
    if isinstance(exc, ServingError):
        if isinstance(exc, Overloaded):  # one line per refusal would flood the log under overload
            logger.debug("request refused (503): %s", exc)
        elif exc.http_status >= 500:
            logger.warning("request failed: %s", exc)
        else:
            logger.info("request refused (%d): %s", exc.http_status, exc)
        return json_response({"error": str(exc)}, exc.http_status, exc.response_headers())
    where = f" in model {model!r}" if model else ""
    logger.exception("unexpected error%s", where, exc_info=exc)
    return json_response({"error": f"internal error{where}: {type(exc).__name__}: {exc}"}, 500)
