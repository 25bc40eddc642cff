"""A Serve config (the YAML that ``serve deploy`` takes) equivalent to ``infergrid serve``.

Pure: scans the repository and writes import paths and args; nothing is deployed or loaded here.
This is a fixed set of applications (what the repository holds now); following the repository and
hot swaps need the controller, which ``infergrid serve`` starts (also against a cluster, with
RAY_ADDRESS). An ensemble or pipeline is one application that calls its members' version
applications by name (``deployments.applications.ensembles:build_composite_app``).
"""

from __future__ import annotations

from pathlib import Path

from deployments.dataplane.table import route_for
from deployments.names import SERVER_APP, endpoint_app, model_route, version_app
from deployments.repository.scan import scan_repository

__all__ = ["repository_serve_config"]


def repository_serve_config(repository: Path, host: str = "0.0.0.0", port: int = 8000,
                            auth: dict | None = None) -> dict:
    """Applications for every servable model of ``repository`` (an absolute path on every node).

    ``auth``: an ``AuthPolicy.to_dict()`` (key digests, never keys) for every HTTP application's args.
    """
    snapshot = scan_repository(repository)
    secured = {"auth": auth} if auth else {}
    apps = []
    for name, entry in snapshot.models.items():
        if entry.error or entry.config is None:
            continue
        if entry.config.composite:  # an ensemble or pipeline: one application over its members' version apps
            apps.append({"name": endpoint_app(name), "route_prefix": model_route(name),
                         "import_path": "deployments.applications.ensembles:build_composite_app",
                         "args": {"repository": str(repository), "model": name, **secured}})
            continue
        versions = entry.served_versions
        routes = [route_for(v, version_app(name, v), entry.config).to_dict() for v in versions]
        for v in versions:
            apps.append({"name": version_app(name, v), "route_prefix": None,
                         "import_path": "deployments.applications.builders:build_version_app",
                         "args": {"repository": str(repository), "model": name, "version": v}})
        apps.append({"name": endpoint_app(name), "route_prefix": model_route(name),
                     "import_path": "deployments.applications.builders:build_endpoint_app",
                     "args": {"model": name, "routes": routes, "max_batch_size": entry.config.max_batch_size,
                              "replicas": int(entry.config.parameter("endpoint_replicas", "1")), **secured}})
    apps.append({"name": SERVER_APP, "route_prefix": "/", "import_path": "deployments.applications.builders:build_server_app",
                 "args": {"repository": str(repository), **secured}})
    return {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port}, "applications": apps}
