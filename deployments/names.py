"""How Serve applications, deployments and the controller are named, in one place.

``:`` cannot appear in a model name, so these names never collide with a model's own application.
A version application carries a tag (a hash of what it loaded): a changed config or changed files
under the same version number deploy beside the running ones instead of replacing them in place.
"""

from __future__ import annotations

import re

__all__ = ["FRONT_DOOR_APP", "FRONT_DOOR_DEPLOYMENT", "ENDPOINT_DEPLOYMENT", "VERSION_DEPLOYMENT", "CONTROLLER_NAME", "CONTROLLER_NAMESPACE",
           "endpoint_app", "version_app", "parse_version_app", "replica_application", "model_route"]

FRONT_DOOR_APP = "infergrid:frontdoor"  # every client connection, for every model
FRONT_DOOR_DEPLOYMENT = "frontdoor"
ENDPOINT_DEPLOYMENT = "endpoint"  # a composite's deployment (ensembles and pipelines)
VERSION_DEPLOYMENT = "model"
CONTROLLER_NAME = "infergrid-controller"
CONTROLLER_NAMESPACE = "infergrid"

_REPLICA_PREFIX = "SERVE_REPLICA::"  # how Ray Serve names replica actors (namespace "serve")
_VERSION_APP = re.compile(r"^(?P<model>[^:]+):v(?P<version>[0-9]+)(?:@(?P<tag>[0-9a-f]+))?$")


def endpoint_app(model: str) -> str:
    """The application of a composite (ensemble or pipeline): its replicas run the composite."""
    return model


def version_app(model: str, version: int, tag: str | None = None) -> str:
    """The application holding one version's replicas (not exposed over HTTP)."""
    return f"{model}:v{version}" + (f"@{tag}" if tag else "")


def parse_version_app(name: str) -> tuple[str, int, str | None] | None:
    """(model, version, tag) of a version application's name; None for any other application."""
    match = _VERSION_APP.match(name)
    if match is None:
        return None
    return match.group("model"), int(match.group("version")), match.group("tag")


def replica_application(actor_name: str, deployment: str) -> str | None:
    """The application of a Serve replica actor of ``deployment``, from its name
    (``SERVE_REPLICA::<app>#<deployment>#<replica id>``); None for any other actor."""
    if not actor_name.startswith(_REPLICA_PREFIX):
        return None
    parts = actor_name[len(_REPLICA_PREFIX):].rsplit("#", 2)
    return parts[0] if len(parts) == 3 and parts[1] == deployment else None


def model_route(model: str) -> str:
    """The HTTP path prefix of a model's API."""
    return f"/v2/models/{model}"
