"""The request's headers (HTTP, names lower-cased) or gRPC metadata, for the data plane's sticky traffic keys.

Every transport sets ``REQUEST_HEADERS`` before a request reaches the data plane (the HTTP listener for
each request, the gRPC services for each call); ``DataPlane.routed`` reads the key its model's traffic
policy names (``deployments.repository.traffic``) from there. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

__all__ = ["REQUEST_HEADERS"]

REQUEST_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("infergrid_request_headers", default=None)
