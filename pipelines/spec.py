"""What a composite model (ensemble or Python pipeline) is made of, and the checks it must pass to
load. Pure: no Ray, no frameworks, so the controller's checks and their unit tests are cheap.

A composite is a model folder whose config says ``platform: "ensemble"`` (Triton's
``ensemble_scheduling``) or ``backend: "python"`` with ``parameters { key: "pipeline" value: {
string_value: "pipelines.<module>:<Class>" } }``. It has no model files; its replicas call the
members' versions.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

from backends.errors import ConfigError
from backends.model_config import ModelConfig
from pipelines.base import Pipeline
from pipelines.graph import build_graph

__all__ = ["PIPELINE_PARAMETER", "pipeline_class", "member_names", "check_composite", "composite_version",
           "composite_tag"]

PIPELINE_PARAMETER = "pipeline"  # config parameter naming a Python pipeline: "pipelines.<module>:<Class>"
_ALLOWED_PACKAGE = "pipelines."


def pipeline_class(config: ModelConfig) -> type[Pipeline]:
    """The class that runs a composite model: ``Ensemble``, or the Python pipeline its config names.

    Only classes inside the ``pipelines`` package can be named: a repository config must not be
    able to import arbitrary code.

    Raises:
        ConfigError: the parameter is missing, outside ``pipelines``, or does not import.
    """
    if config.platform == "ensemble":
        from pipelines.ensemble import Ensemble

        return Ensemble
    where = f"{config.name}/config.pbtxt: parameters.{PIPELINE_PARAMETER}"
    path = config.parameter(PIPELINE_PARAMETER)
    if not path or ":" not in path:
        raise ConfigError(f'{where}: a python pipeline names its class, e.g. "pipelines.loan_decision:LoanDecision"')
    module_name, _, class_name = path.partition(":")
    if not module_name.startswith(_ALLOWED_PACKAGE):
        raise ConfigError(f"{where}: {path!r} is outside the pipelines package; only pipelines.* can be served")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise ConfigError(f"{where}: {path!r} is not a pipelines.base.Pipeline subclass")
    return cls


def member_names(config: ModelConfig) -> tuple[str, ...]:
    """The member models of a composite.

    Raises:
        ConfigError: a Python pipeline's class cannot be found.
    """
    return pipeline_class(config).member_names(config)


def check_composite(config: ModelConfig, members: Mapping[str, ModelConfig | None]) -> None:
    """Load-time checks: the class imports, every member is in the repository and is a model,
    and an ensemble's graph is sound (no cycle, nothing unmapped).

    Args:
        config: the composite's config.
        members: member configs by name; None for a member with no folder in the repository.

    Raises:
        ConfigError: with the file, the field and the reason.
    """
    names = member_names(config)
    if config.signature() is None:
        raise ConfigError(f"{config.name}/config.pbtxt: input/output: an ensemble or pipeline declares its inputs "
                          f"and outputs (they are its signature)")
    if config.platform == "ensemble":
        build_graph(config, members)
        return
    for name in names:
        member = members.get(name)
        if member is None:
            raise ConfigError(f"{config.name}/config.pbtxt: parameters.{PIPELINE_PARAMETER}: member {name!r} is not "
                              f"in the repository (missing member)")
        if member.composite:
            raise ConfigError(f"{config.name}/config.pbtxt: parameters.{PIPELINE_PARAMETER}: member {name!r} is "
                              f"itself an ensemble or pipeline; members must be models")


def composite_version(served_versions: Sequence[int]) -> int:
    """The version a composite reports: its newest version folder (1 when it has none)."""
    return max(served_versions or [1])


def composite_tag(config: ModelConfig, version: int) -> str:
    """What a composite's replicas run: changes exactly when its config or version does."""
    return hashlib.sha1(repr((replace(config, warnings=()), version)).encode()).hexdigest()[:10]
