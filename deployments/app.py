"""Turn a model repository into Serve applications, and deploy them.

Three kinds of application (names in ``deployments.names``):

* ``{model}:v{n}``       one per served version: the ``model`` deployment, no HTTP route;
* ``{model}``            one per model at ``/v2/models/{model}``: the ``endpoint`` deployment;
* ``infergrid:server``   one at ``/``: server endpoints, unknown and failed models.

The builders here are also import paths for a Serve config file (``infergrid config``), so
``serve deploy`` and ``infergrid serve`` run exactly the same applications.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ray import serve
from ray.serve import Application

from backends.model_config import ModelConfig
from deployments.endpoint import ModelEndpoint
from deployments.model import ModelVersion
from deployments.names import SERVER_APP, endpoint_app, model_route, version_app
from deployments.repository.scan import ModelEntry, RepositorySnapshot, scan_model, scan_repository
from deployments.server import ServerIngress

__all__ = ["AppSpec", "plan_repository", "deploy_repository", "version_application", "endpoint_application",
           "server_application", "build_version_app", "build_endpoint_app", "build_server_app"]

logger = logging.getLogger("infergrid")

DEFAULT_REPLICA_CPUS = 0.5
ENDPOINT_CPUS = 0.1
SERVER_CPUS = 0.05
# Serve writes an access-log line per request by default: ~5% of the endpoint's CPU at full load.
QUIET_LOGS = {"enable_access_log": False}


@dataclass(frozen=True)
class AppSpec:
    """One application to run: what, under which name, at which route (None = no HTTP)."""

    name: str
    app: Application
    route_prefix: str | None


def _replica_options(config: ModelConfig, gpu_available: bool) -> dict:
    groups = config.instance_group
    replicas = sum(g.count for g in groups) or 1
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


def version_application(entry: ModelEntry, version: int, gpu_available: bool) -> Application:
    """The application holding one version's replicas."""
    config = entry.config
    assert config is not None
    options = _replica_options(config, gpu_available)
    threads = int(config.parameter("intra_op_threads", "0") or 0) or max(1, round(options["ray_actor_options"]["num_cpus"]))
    deployment = serve.deployment(ModelVersion, name="model").options(**options)
    return deployment.bind(entry.name, version, str(entry.versions[version]), config, threads)


def endpoint_application(model: str, versions: list[int], max_batch_size: int = 0, replicas: int = 1) -> Application:
    """The application serving one model's HTTP API and batching its requests."""
    deployment = serve.deployment(ModelEndpoint, name="endpoint").options(
        num_replicas=replicas,
        max_ongoing_requests=max(256, 4 * max_batch_size),
        ray_actor_options={"num_cpus": ENDPOINT_CPUS},
        user_config={"versions": versions},
        logging_config=QUIET_LOGS,
    )
    return deployment.bind(model)


def server_application(index: dict[str, dict]) -> Application:
    """The ``/`` application: server endpoints and unknown or failed models."""
    deployment = serve.deployment(ServerIngress, name="server").options(
        max_ongoing_requests=256, ray_actor_options={"num_cpus": SERVER_CPUS})
    return deployment.bind(index)


def _gpu_available() -> bool:
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def plan_repository(snapshot: RepositorySnapshot, gpu_available: bool) -> tuple[list[AppSpec], dict[str, dict]]:
    """Version applications for every servable model, and the index of every model."""
    specs, index = [], {}
    for name, entry in snapshot.models.items():
        if entry.error:
            logger.error("model %s is unavailable: %s", name, entry.error)
            index[name] = {"versions": [], "reason": entry.error}
            continue
        for warning in entry.config.warnings if entry.config else ():
            logger.warning("%s", warning)
        versions = entry.served_versions
        index[name] = {"versions": versions, "reason": None, "max_batch_size": entry.config.max_batch_size,
                       "endpoint_replicas": int(entry.config.parameter("endpoint_replicas", "1"))}
        specs += [AppSpec(version_app(name, v), version_application(entry, v, gpu_available), None) for v in versions]
    return specs, index


_ERROR_LINE = re.compile(r"^backends\.errors\.\w+: (.+)$", re.MULTILINE)


def failure_reason(message: str) -> str:
    """The informative line of a replica's start-up traceback (our own error's message if present)."""
    ours = _ERROR_LINE.findall(message)
    if ours:
        return ours[-1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else message


def _wait_for(names: list[str], timeout_s: float) -> dict[str, str]:
    """Wait until each application is RUNNING or failed; returns {name: failure message}."""
    deadline = time.monotonic() + timeout_s
    pending, failures = set(names), {}
    while pending and time.monotonic() < deadline:
        statuses = serve.status().applications
        for name in list(pending):
            app = statuses.get(name)
            if app is None:
                continue
            if app.status == "RUNNING":
                pending.discard(name)
            elif app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                details = "; ".join(d.message for d in app.deployments.values() if d.message) or app.message
                failures[name] = failure_reason(details)
                pending.discard(name)
        time.sleep(0.25)
    failures.update({name: f"not running after {timeout_s:.0f} s" for name in pending})
    return failures


def deploy_repository(root: Path, timeout_s: float = 300.0) -> dict[str, dict]:
    """Deploy every model of a repository; a model that fails is reported, never fatal.

    Returns:
        The index: ``{model: {"versions": [...], "reason": str | None}}``.
    """
    snapshot = scan_repository(root)
    version_specs, index = plan_repository(snapshot, _gpu_available())
    if version_specs:
        serve.run_many([serve.RunTarget(s.app, s.name, s.route_prefix) for s in version_specs],
                       wait_for_applications_running=False)
    failures = _wait_for([s.name for s in version_specs], timeout_s)
    for app_name, message in failures.items():
        model = app_name.rpartition(":v")[0]
        logger.error("%s failed to load: %s", app_name, message)
        serve.delete(app_name, _blocking=False)
        entry = index[model]
        entry["versions"] = [v for v in entry["versions"] if version_app(model, v) != app_name]
        if not entry["versions"]:
            entry["reason"] = f"{app_name} failed to load: {message}"
    fronts = [serve.RunTarget(endpoint_application(name, e["versions"], e["max_batch_size"], e["endpoint_replicas"]),
                              endpoint_app(name), model_route(name))
              for name, e in index.items() if not e["reason"]]
    fronts.append(serve.RunTarget(server_application(index), SERVER_APP, "/"))
    serve.run_many(fronts, wait_for_applications_running=False)
    stuck = _wait_for([t.name for t in fronts], timeout_s)
    if stuck:
        logger.error("endpoints failed to start: %s", stuck)
    return index


# --- builders for a Serve config file (``serve deploy``); each takes the file's ``args`` ---

def build_version_app(args: dict) -> Application:
    """``import_path: deployments.app:build_version_app`` with args {repository, model, version}."""
    entry = scan_model(Path(args["repository"]) / args["model"])
    if entry.error:
        raise ValueError(entry.error)
    return version_application(entry, int(args["version"]), _gpu_available())


def build_endpoint_app(args: dict) -> Application:
    """``import_path: deployments.app:build_endpoint_app``; args {model, versions, max_batch_size, replicas}."""
    return endpoint_application(args["model"], [int(v) for v in args["versions"]], int(args.get("max_batch_size", 0)),
                                int(args.get("replicas", 1)))


def build_server_app(args: dict) -> Application:
    """``import_path: deployments.app:build_server_app`` with args {repository}."""
    _, index = plan_repository(scan_repository(Path(args["repository"])), gpu_available=False)
    return server_application(index)
