"""An ensemble or pipeline as the data plane sees it: a ``Servable`` that runs code over members.

Each request is checked against the composite's own signature (the ``input``/``output`` of its
config, so bad input is a 400 naming the ensemble's input, before any member is called), then the
pipeline runs; its member calls go through ``Members``, whose routers batch each member's rows.
The composite counts its own requests; the member calls it makes count as the member's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.errors import ConfigError, ModelNotFound, RequestTimeout, status_of
from backends.model_config import ModelConfig
from deployments.composites.members import Members
from deployments.dataplane.plane import ModelDescription
from deployments.observability.metrics import Recorder, failure_reason
from deployments.protocol.v2 import validate_inputs
from pipelines.spec import pipeline_class

__all__ = ["CompositeModel"]


class CompositeModel:
    """One ensemble or pipeline in one replica.

    Args:
        model: the composite's name.
        config: its config (signature, steps, parameters).
        version: the version it reports (its newest version folder, 1 when it has none).
        controller: the repository controller's actor name; members then follow its tables.
        static: member tables and handles when there is no controller (see ``Members``).
        recorder: where its requests are counted (None: not counted).

    Raises:
        ConfigError: the config declares no signature, or names no importable pipeline.
    """

    def __init__(self, model: str, config: ModelConfig, version: int = 1, controller: str | None = None,
                 static: Mapping[str, Mapping[str, Any]] | None = None, recorder: Recorder | None = None) -> None:
        self._model, self._config, self._version = model, config, version
        signature = config.signature()
        if signature is None:
            raise ConfigError(f"{model}/config.pbtxt: input/output: an ensemble or pipeline declares its signature")
        self._signature = signature
        self._recorder = recorder
        cls = pipeline_class(config)
        self._members = Members(model, cls.member_names(config), controller, static, recorder)
        self.pipeline = cls(config, self._members)

    async def infer(self, inputs: dict[str, np.ndarray], version: str | int | None = None,
                    timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        start = time.perf_counter()
        try:
            self._check_version(version)
            rows = validate_inputs(inputs, self._signature, self._config.max_batch_size)
            outputs = await self._run(inputs, timeout_s)
        except Exception as exc:
            if self._recorder is not None:
                self._recorder.failure(self._model, str(self._version), failure_reason(status_of(exc)),
                                       time.perf_counter() - start)
            raise
        if self._recorder is not None:  # the whole request: its members' own numbers are theirs
            duration_s = time.perf_counter() - start
            self._recorder.series(self._model, str(self._version)).succeeded(rows, duration_s, 0.0, duration_s,
                                                                             int(time.time() * 1000))
        return self._version, outputs

    async def _run(self, inputs: dict[str, np.ndarray], timeout_s: float | None) -> dict[str, np.ndarray]:
        if not timeout_s:
            return await self.pipeline.infer(inputs)
        try:
            return await asyncio.wait_for(self.pipeline.infer(inputs), timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"model {self._model!r}: no answer within {timeout_s * 1000:.0f} ms "
                                 f"(the request's timeout)") from None

    def default_version(self) -> str:
        return str(self._version)

    def _check_version(self, version: str | int | None) -> None:
        if version is not None and str(version) != str(self._version):
            raise ModelNotFound(f"model {self._model!r} has no version {version!r}; served: {self._version}")

    async def describe_model(self, version: int | None = None) -> ModelDescription:
        """The composite's own signature."""
        self._check_version(version)
        return ModelDescription(self._model, (str(self._version),), self._config.platform, self._signature,
                                self._config.max_batch_size)

    async def ready(self, version: int | None = None) -> bool:
        """Ready when every member can serve."""
        self._check_version(version)
        return await self._members.ready()

    def stats(self) -> dict:
        """Member batches this replica formed, per member and version."""
        return {"members": self._members.stats()}
