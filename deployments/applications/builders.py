"""The Serve applications infergrid runs: what each binds, with which options (no Serve calls here).

Three kinds of application (names in ``deployments.names``):

* ``{model}:v{n}@{tag}`` one per served version: the ``model`` deployment, no HTTP route;
* ``{model}``            one per model at ``/v2/models/{model}``: the ``endpoint`` deployment;
* ``infergrid:server``   one at ``/``: server endpoints, the repository API, unknown and failed models.

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
from deployments.ingress.model_endpoint import ModelEndpoint
from deployments.ingress.server import ServerIngress
from deployments.names import ENDPOINT_DEPLOYMENT, VERSION_DEPLOYMENT
from deployments.protocol.limits import RequestLimits
from deployments.repository.scan import ModelEntry, scan_model, scan_repository
from deployments.repository.status import ModelStatus, static_statuses

__all__ = ["AppSpec", "version_application", "endpoint_application", "server_application", "gpu_available",
           "http_admission", "pin_code_version", "build_version_app", "build_endpoint_app", "build_server_app",
           "DEFAULT_REPLICA_CPUS", "ENDPOINT_CPUS", "SERVER_CPUS", "QUIET_LOGS"]

logger = logging.getLogger("infergrid")

DEFAULT_REPLICA_CPUS = 0.5
ENDPOINT_CPUS = 0.1
SERVER_CPUS = 0.05
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
    return {"num_replicas": replicas, "ray_actor_options": actor, "max_ongoing_requests": 64,
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


def endpoint_application(model: str, routes: list[dict], max_batch_size: int = 0, replicas: int = 1,
                         controller: str | None = None, metrics: bool = True,
                         limits: RequestLimits | None = None, auth: dict | None = None) -> Application:
    """The application serving one model's HTTP API and batching its requests.

    ``routes`` is the table to start with; with a ``controller`` the replicas follow its table.
    ``metrics`` false: the model's requests are not counted (``parameters.metrics``); ``limits``:
    its request size limits (``parameters.max_request_bytes`` ...), as the endpoint starts; ``auth``:
    an ``AuthPolicy.to_dict()`` its replicas enforce (None: no API keys).
    """
    deployment = serve.deployment(ModelEndpoint, name=ENDPOINT_DEPLOYMENT).options(
        num_replicas=replicas,
        **http_admission(max(256, 4 * max_batch_size)),
        ray_actor_options={"num_cpus": ENDPOINT_CPUS},
        user_config={"routes": routes},
        logging_config=QUIET_LOGS,
    )
    return pin_code_version(deployment, "endpoint").bind(model, controller, metrics, limits, auth)


def server_application(index: dict[str, ModelStatus], controller: str | None = None,
                       auth: dict | None = None) -> Application:
    """The ``/`` application: server endpoints, the repository API, unknown or failed models."""
    deployment = serve.deployment(ServerIngress, name="server").options(
        **http_admission(256), ray_actor_options={"num_cpus": SERVER_CPUS}, logging_config=QUIET_LOGS)
    return deployment.bind(index, controller, auth)


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


def build_endpoint_app(args: dict) -> Application:
    """``import_path: deployments.applications.builders:build_endpoint_app``; args {model, routes, max_batch_size, replicas, auth}."""
    return endpoint_application(args["model"], list(args["routes"]), int(args.get("max_batch_size", 0)),
                                int(args.get("replicas", 1)), metrics=bool(args.get("metrics", True)),
                                auth=args.get("auth"))


def build_server_app(args: dict) -> Application:
    """``import_path: deployments.applications.builders:build_server_app`` with args {repository, auth}: a fixed index."""
    return server_application(static_statuses(scan_repository(Path(args["repository"]))), auth=args.get("auth"))
