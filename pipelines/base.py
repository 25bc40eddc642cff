"""What a pipeline is: Python code that turns a request into member calls and an answer.

A pipeline runs inside a ``CompositeEndpoint`` replica, which gives it its members (routers that
follow each member's versions and batch its rows) and serves it over v2 like any model. Write one
by subclassing ``Pipeline``: name the members, implement ``infer`` on v2 tensors (a batch of rows),
and optionally ``handle_json`` for a plain JSON route. Config-driven ensembles are a ``Pipeline``
too (``pipelines.ensemble.Ensemble``), built from ``ensemble_scheduling``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import numpy as np

from backends.errors import ModelNotFound
from backends.model_config import ModelConfig

__all__ = ["Pipeline", "MemberCalls"]


class MemberCalls(Protocol):
    """How a pipeline calls its members. Replicas pass ``deployments.composites.members.Members``;
    unit tests pass a fake. A protocol, so this package never imports the Ray side."""

    async def call(self, member: str, inputs: dict[str, np.ndarray], version: int | None = None,
                   step: str | None = None) -> dict[str, np.ndarray]:
        """Run ``member`` on ``inputs``; raises ``StepFailed`` naming the step and member."""


class Pipeline(ABC):
    """Base class of Python pipelines.

    Attributes:
        members: the models this pipeline calls (class attribute; the controller loads it only
            when each of them is in the repository).
    """

    members: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ModelConfig, calls: MemberCalls) -> None:
        self.config = config
        self.calls = calls

    @classmethod
    def member_names(cls, config: ModelConfig) -> tuple[str, ...]:
        """The member model names (a config-driven pipeline reads them from its config)."""
        return cls.members

    @abstractmethod
    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """v2 tensors in (already checked against the config's inputs), named outputs out."""

    async def handle_json(self, payload: Any) -> Any:
        """The plain JSON route: a JSON document in, one out. Pipelines without one answer 404."""
        raise ModelNotFound(f"pipeline {self.config.name!r} has no plain JSON route; use its v2 infer endpoint")
