"""A Serve config (the YAML that ``serve deploy`` takes) equivalent to ``infergrid serve``.

Pure: scans the repository and writes import paths and args; nothing is deployed or loaded here.
This is a fixed set of applications (what the repository holds now); following the repository and
hot swaps need the controller, which ``infergrid serve`` starts (also against a cluster, with
RAY_ADDRESS). An ensemble or pipeline is one application that calls its members' version
applications by name (``deployments.applications.ensembles:build_composite_app``).
"""

from __future__ import annotations

from pathlib import Path

from deployments.names import FRONT_DOOR_APP, endpoint_app, version_app
from deployments.repository.scan import scan_repository

__all__ = ["repository_serve_config"]


def repository_serve_config(repository: Path, host: str = "0.0.0.0", port: int = 8000,
                            auth: dict | None = None, front_door_replicas: int = 1) -> dict:
    """Applications for every servable model of ``repository`` (an absolute path on every node).

    ``auth``: an ``AuthPolicy.to_dict()`` (key digests, never keys) for the front door and composites.
    Serve's own HTTP proxy is off: the front door's replicas listen on ``host:port`` themselves.
    """
    snapshot = scan_repository(repository)
    secured = {"auth": auth} if auth else {}
    apps = []
    for name, entry in snapshot.models.items():
        if entry.error or entry.config is None:
            continue
        if entry.config.composite:  # an ensemble or pipeline: one application over its members' version apps
            apps.append({"name": endpoint_app(name), "route_prefix": None,
                         "import_path": "deployments.applications.ensembles:build_composite_app",
                         "args": {"repository": str(repository), "model": name, **secured}})
            continue
        for v in entry.served_versions:
            apps.append({"name": version_app(name, v), "route_prefix": None,
                         "import_path": "deployments.applications.builders:build_version_app",
                         "args": {"repository": str(repository), "model": name, "version": v}})
    apps.append({"name": FRONT_DOOR_APP, "route_prefix": None,
                 "import_path": "deployments.applications.builders:build_front_door_app",
                 "args": {"repository": str(repository), "host": host, "port": port,
                          "replicas": front_door_replicas, **secured}})
    return {"proxy_location": "Disabled", "applications": apps}
