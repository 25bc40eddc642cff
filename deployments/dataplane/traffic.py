"""The request's headers (HTTP, names lower-cased) or gRPC metadata, and its v2 parameters, for the data
plane's sticky traffic keys.

Every transport sets ``REQUEST_HEADERS`` before a request reaches the data plane (the HTTP listener for
each request, the gRPC services for each call); ``DataPlane.routed`` reads the key its model's traffic
policy names (``deployments.repository.traffic``) from there; the v2 transports set ``REQUEST_PARAMETERS``
once they decoded a request. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

__all__ = ["REQUEST_HEADERS", "REQUEST_PARAMETERS"]

REQUEST_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("infergrid_request_headers", default=None)
# A KServe v2 request's ``parameters`` (HTTP body or gRPC), for a policy sticky on a parameter
REQUEST_PARAMETERS: ContextVar[Mapping[str, Any] | None] = ContextVar("infergrid_request_parameters", default=None)
