"""The Serve applications infergrid runs: what each binds, with which options (no Serve calls here).

Three kinds of application (names in ``deployments.names``); none has a Serve HTTP route:

* ``{model}:v{n}@{tag}``   one per served version: the ``model`` deployment;
* ``infergrid:frontdoor``  one: the ``frontdoor`` deployment, whose replicas listen for every client
  (every model's API, the server endpoints, the repository API);
* ``{composite}``          one per ensemble or pipeline (``deployments.applications.ensembles``).

The repository controller (``deployments.control``) decides which to run and starts them through
``deployments.control.serve_calls``. The builders at the end are import paths for a Serve config
file (``infergrid config``), a fixed set of the same applications for ``serve deploy``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ray import serve
from ray.serve import Application

from backends.model_config import ModelConfig
from deployments.dataplane.model_version import ModelVersion
from deployments.dataplane.table import Route, ServedModel, route_for
from deployments.ingress.front_door import FrontDoor, Listen
from deployments.names import FRONT_DOOR_DEPLOYMENT, VERSION_DEPLOYMENT, endpoint_app, version_app
from deployments.observability.hub import metrics_enabled
from deployments.protocol.classification import read_labels
from deployments.protocol.limits import limits_for
from deployments.repository.autoscaling import serve_autoscaling_config
from deployments.repository.scan import ModelEntry, scan_model, scan_repository
from deployments.repository.status import ModelStatus, static_statuses

__all__ = ["AppSpec", "version_application", "front_door_application", "served_model", "gpu_available",
           "http_admission", "pin_code_version", "build_version_app", "build_front_door_app",
           "DEFAULT_REPLICA_CPUS", "ENDPOINT_CPUS", "FRONT_DOOR_CPUS", "QUIET_LOGS"]

logger = logging.getLogger("infergrid")

DEFAULT_REPLICA_CPUS = 0.5
ENDPOINT_CPUS = 0.1  # a composite's replicas
FRONT_DOOR_CPUS = 0.5
# Serve writes an access-log line per request by default: ~5% of the endpoint's CPU at full load.
QUIET_LOGS = {"enable_access_log": False}


def http_admission(max_ongoing: int) -> dict:
    """Deployment options that bound what waits in an HTTP replica.

    Past ``max_ongoing_requests`` Serve queues a direct-ingress request inside the replica, without
    limit by default: under overload every connection then waits seconds for a slot, even for the
    answer "queue full". With ``max_queued_requests`` Serve answers 503 + Retry-After at once,
    before the request is read, so memory and rejection latency stay bounded.
    """
    return {"max_ongoing_requests": max_ongoing, "max_queued_requests": max_ongoing}


@dataclass(frozen=True)
class AppSpec:
    """One application to run: what, under which name, at which route (None = no HTTP)."""

    name: str
    app: Application
    route_prefix: str | None


def _replica_options(config: ModelConfig, gpu_available: bool) -> dict:
    groups = config.instance_group
    replicas = config.replica_count
    kinds = {g.kind for g in groups} or {"KIND_AUTO"}
    use_gpu = "KIND_GPU" in kinds or ("KIND_AUTO" in kinds and gpu_available)
    if any(g.gpus for g in groups):
        logger.warning("%s: instance_group.gpus is not supported on Ray (GPUs are assigned by Ray); ignored",
                       config.name)
    num_cpus = float(config.parameter("num_cpus", str(DEFAULT_REPLICA_CPUS)))
    actor = {"num_cpus": num_cpus}
    if use_gpu:
        actor["num_gpus"] = float(config.parameter("gpu_fraction", "1"))
    scaling = {"num_replicas": replicas} if config.autoscaling is None else \
        {"autoscaling_config": serve_autoscaling_config(config.autoscaling)}
    return {**scaling, "ray_actor_options": actor, "max_ongoing_requests": 64,
            "max_constructor_retry_count": 1, "logging_config": QUIET_LOGS}


def pin_code_version(deployment: serve.Deployment, code_version: str | None) -> serve.Deployment:
    """Give a deployment a fixed code version, so redeploying it only to change ``num_replicas`` or
    ``user_config`` updates the running replicas in place instead of restarting them.

    Serve gives every imperative deploy a random code version (which restarts replicas); the
    ``version`` option that fixed it is only open to Serve itself now, hence ``_internal``.
    """
    if code_version is None:
        return deployment
    return deployment.options(version=code_version, _internal=True)


def version_application(entry: ModelEntry, version: int, gpu_available: bool, tag: str | None = None,
                        deployment_name: str = VERSION_DEPLOYMENT) -> Application:
    """The application holding one version's replicas; ``tag`` (what it loads) pins its code version.

    ``deployment_name`` differs only where several versions are deployments of one application
    (a pipeline run alone with ``serve run``).
    """
    config = entry.config
    assert config is not None
    options = _replica_options(config, gpu_available)
    threads = int(config.parameter("intra_op_threads", "0") or 0) or max(1, round(options["ray_actor_options"]["num_cpus"]))
    deployment = pin_code_version(serve.deployment(ModelVersion, name=deployment_name).options(**options), tag)
    return deployment.bind(entry.name, version, str(entry.versions[version]), config, threads)


def served_model(entry: ModelEntry, app: str = "") -> ServedModel:
    """How the front door answers for ``entry``: its limits and metrics switch; a composite by its ``app``."""
    config = entry.config
    assert config is not None
    return ServedModel(entry.name, bool(config.composite), app, metrics_enabled(config), limits_for(config),
                       config.triton, read_labels(entry.path, config.triton), dict(config.version_labels),
                       config.traffic.to_dict() if config.traffic is not None else {})


def front_door_application(listen: Listen, replicas: int = 1, controller: str | None = None,
                           auth: dict | None = None, static: list[tuple[ServedModel, list[Route]]] | None = None,
                           index: dict[str, ModelStatus] | None = None) -> Application:
    """The front door: ``replicas`` listeners on ``listen`` (SO_REUSEPORT), following the controller
    (or serving the fixed ``static`` models); ``auth`` an ``AuthPolicy.to_dict()`` (None: no keys)."""
    deployment = serve.deployment(FrontDoor, name=FRONT_DOOR_DEPLOYMENT).options(
        num_replicas=replicas, ray_actor_options={"num_cpus": FRONT_DOOR_CPUS}, logging_config=QUIET_LOGS,
        max_ongoing_requests=1024, health_check_period_s=5)
    return pin_code_version(deployment, "frontdoor").bind(listen, controller, auth, static, index)


def gpu_available() -> bool:
    """True when the Ray cluster has a GPU (KIND_AUTO then means GPU replicas)."""
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


# --- builders for a Serve config file (``serve deploy``); each takes the file's ``args`` ---

def build_version_app(args: dict) -> Application:
    """``import_path: deployments.applications.builders:build_version_app`` with args {repository, model, version}."""
    entry = scan_model(Path(args["repository"]) / args["model"])
    if entry.error:
        raise ValueError(entry.error)
    return version_application(entry, int(args["version"]), gpu_available())


def build_front_door_app(args: dict) -> Application:
    """``import_path: deployments.applications.builders:build_front_door_app`` with args {repository, host,
    port, replicas, auth}: the front door over what the repository holds now (no controller)."""
    repository = Path(args["repository"])
    snapshot = scan_repository(repository)
    static = []
    for name, entry in snapshot.models.items():
        if entry.error or entry.config is None:
            continue
        if entry.config.composite:
            static.append((served_model(entry, endpoint_app(name)), []))
            continue
        routes = [route_for(v, version_app(name, v), entry.config) for v in entry.served_versions]
        static.append((served_model(entry), routes))
    listen = Listen(str(args.get("host", "0.0.0.0")), int(args.get("port", 8000)))
    return front_door_application(listen, int(args.get("replicas", 1)), auth=args.get("auth"), static=static,
                                  index=static_statuses(snapshot))
