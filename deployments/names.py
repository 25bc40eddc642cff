"""How Serve applications and deployments are named, in one place.

``:`` cannot appear in a model name, so these names never collide with a model's own application.
"""

from __future__ import annotations

__all__ = ["SERVER_APP", "ENDPOINT_DEPLOYMENT", "VERSION_DEPLOYMENT", "endpoint_app", "version_app",
           "model_route"]

SERVER_APP = "infergrid:server"
ENDPOINT_DEPLOYMENT = "endpoint"
VERSION_DEPLOYMENT = "model"


def endpoint_app(model: str) -> str:
    """The application serving a model's HTTP API (its route is ``model_route``)."""
    return model


def version_app(model: str, version: int) -> str:
    """The application holding one version's replicas (not exposed over HTTP)."""
    return f"{model}:v{version}"


def model_route(model: str) -> str:
    """The HTTP route prefix of a model's endpoint."""
    return f"/v2/models/{model}"
