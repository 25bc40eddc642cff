"""Start, find and stop the repository controller actor (driver side).

The controller is a named, detached actor: it outlives the process that started it (``serve
deploy`` style), Ray restarts it when it dies, and its calls are retried across a restart.
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.actor import ActorHandle

from deployments.control.controller import RepositoryController
from deployments.ingress.front_door import Listen
from deployments.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

__all__ = ["start_controller", "get_controller", "stop_controller"]

CONTROLLER_CPUS = 0.05


def start_controller(repository: Path | list[Path] | dict, mode: str = "poll", poll_secs: float = 1.0,
                     load_models: list[str] | None = None, gpu: bool = False,
                     auth: dict | None = None, listen: Listen | None = None,
                     front_door_replicas: int = 1, strict: bool = False) -> ActorHandle:
    """The running controller, or a new one for ``repository`` (or several, tritonserver's repeated
    ``--model-repository``: a model is its folder in the first that has it); does not wait for the
    first load.

    ``auth`` (an ``AuthPolicy.to_dict()``: key digests, never keys) goes to the front door and every
    composite; ``listen``: where the front door's replicas accept clients (default 127.0.0.1:8000);
    ``strict``: Triton's ``--strict-model-config=true``.
    """
    actor = ray.remote(RepositoryController).options(
        name=CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=-1, num_cpus=CONTROLLER_CPUS, max_concurrency=1000)
    if isinstance(repository, dict):  # {"roots": [...], "models": {name: folder}, "overrides": {name: ...}}
        roots: str | list[str] | dict = {"roots": [str(r) for r in repository.get("roots", [])],
                                         "models": {n: str(p) for n, p in repository.get("models", {}).items()},
                                         "overrides": dict(repository.get("overrides", {})),
                                         "batching": repository.get("batching"),
                                         "config_file": repository.get("config_file"),
                                         "torchserve": repository.get("torchserve")}
    else:
        roots = [str(r) for r in repository] if isinstance(repository, list | tuple) else str(repository)
    return actor.remote(roots, mode, poll_secs, list(load_models or []), gpu, auth, listen,
                        front_door_replicas, strict)


def get_controller() -> ActorHandle:
    """The controller of the connected Ray cluster.

    Raises:
        ValueError: no controller is running.
    """
    return ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)


def stop_controller() -> None:
    """Kill the controller for good (the applications it started keep running)."""
    try:
        ray.kill(get_controller(), no_restart=True)
    except ValueError:
        pass
