"""Serve applications for ensembles and pipelines.

Three ways to run one:

* under ``infergrid serve``: the repository controller checks the composite
  (``pipelines.spec.check_composite``) and deploys ``composite_application`` as the model's
  application; members are the repository's models, followed by name through the controller;
* alone: ``serve run deployments.applications.ensembles:standalone_app [model=loan_decision]
  [repository=DIR]`` builds ``standalone_application``, one
  application holding the pipeline and one replica set per member (their newest versions), with
  fixed routes: no controller and no hot swaps;
* in a Serve config (``infergrid config``): ``build_composite_app``, calling the members' version
  applications listed beside it.
"""

from __future__ import annotations

from pathlib import Path

from ray import serve
from ray.serve import Application

from backends.errors import ConfigError
from deployments.applications.builders import (
    ENDPOINT_CPUS,
    QUIET_LOGS,
    gpu_available,
    http_admission,
    pin_code_version,
    version_application,
)
from deployments.dataplane.table import route_for
from deployments.ingress.composite_endpoint import CompositeEndpoint
from deployments.names import ENDPOINT_DEPLOYMENT, version_app
from deployments.repository.scan import ModelEntry, scan_model
from pipelines.spec import check_composite, composite_tag, composite_version, member_names

__all__ = ["composite_application", "standalone_application", "standalone_app", "build_composite_app",
           "DEFAULT_REPOSITORY"]

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "examples" / "model_repository"
COMPOSITE_MAX_ONGOING = 1024  # requests wait on members, not on this replica's CPU


def _deployment(replicas: int, code_version: str | None) -> serve.Deployment:
    deployment = serve.deployment(CompositeEndpoint, name=ENDPOINT_DEPLOYMENT).options(
        num_replicas=replicas, **http_admission(COMPOSITE_MAX_ONGOING),
        ray_actor_options={"num_cpus": ENDPOINT_CPUS}, logging_config=QUIET_LOGS)
    # Same code version + same arguments: redeploying after a controller restart changes nothing.
    return pin_code_version(deployment, code_version)


def composite_application(entry: ModelEntry, controller: str, auth: dict | None = None) -> Application:
    """The model application of a composite under the repository controller."""
    config = entry.config
    assert config is not None
    version = composite_version(entry.served_versions)
    deployment = _deployment(config.replica_count, composite_tag(config, version))
    return deployment.bind(entry.name, config, version, controller, None, auth)


def _checked(repository: Path, model: str) -> tuple[ModelEntry, dict[str, ModelEntry]]:
    """The composite's entry and its members' entries, after the load-time checks.

    Raises:
        ConfigError: the composite or a member cannot be read, or fails the checks.
    """
    entry = scan_model(repository / model)
    if entry.error or entry.config is None:
        raise ConfigError(entry.error or f"{model}: no config")
    members = {name: scan_model(repository / name) for name in member_names(entry.config)}
    check_composite(entry.config, {n: m.config if (repository / n).is_dir() else None for n, m in members.items()})
    for name, member in members.items():
        if member.error or member.config is None:
            raise ConfigError(f"member {name!r}: {member.error}")
    return entry, members


def standalone_application(repository: Path, model: str, gpu: bool | None = None) -> Application:
    """One application with the composite and its members' newest versions (``serve run``).

    Raises:
        ConfigError: the composite or a member cannot be read, or fails the load-time checks.
    """
    entry, members = _checked(Path(repository), model)
    gpu = gpu_available() if gpu is None else gpu
    static = {}
    for name, member in members.items():
        version = member.served_versions[0]
        key = f"{name}_v{version}"
        bound = version_application(member, version, gpu, deployment_name=key)
        static[name] = {"routes": [route_for(version, key, member.config).to_dict()], "handles": {key: bound}}
    return _deployment(1, None).bind(model, entry.config, composite_version(entry.served_versions), None, static)


def build_composite_app(args: dict) -> Application:
    """``import_path: deployments.applications.ensembles:build_composite_app`` with args {repository, model, auth}: a Serve
    config's composite, calling the version applications ``infergrid config`` lists for its members
    (fixed routes, no controller)."""
    repository = Path(args["repository"])
    entry, members = _checked(repository, args["model"])
    static = {name: {"routes": [route_for(v, version_app(name, v), member.config).to_dict()
                                for v in member.served_versions]}
              for name, member in members.items()}
    deployment = _deployment(entry.config.replica_count, None)
    return deployment.bind(entry.name, entry.config, composite_version(entry.served_versions), None, static, args.get("auth"))


def standalone_app(args: dict[str, str]) -> Application:
    """``serve run deployments.applications.ensembles:standalone_app [model=NAME] [repository=PATH]``:
    a pipeline (default ``loan_decision``) and its members in one application (plain JSON at
    ``POST /``, v2 at ``POST /infer``), no controller needed."""
    return standalone_application(Path(args.get("repository") or DEFAULT_REPOSITORY),
                                  args.get("model") or "loan_decision")
