"""The deployment that serves an ensemble or pipeline as a model: ``/v2/models/{name}``.

It checks each request against the composite's own signature (the ``input``/``output`` of its
config, so bad input is a 400 naming the ensemble's input, before any member is called), runs the
pipeline, and answers in v2 like any model endpoint. It is deployed as the ``endpoint`` deployment of
the model's application, so the server ingress, the repository index and the controller's restart
adoption treat it as any model's endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.responses import Response

from backends.errors import ConfigError, InvalidRequest, ModelNotFound, RequestTimeout, ServingError
from backends.model_config import ModelConfig
from deployments.dataplane.auth import AuthPolicy
from deployments.ingress.v2_http import V2Endpoint
from deployments.ingress.http import json_response
from deployments.observability.logs import configure_logging
from deployments.observability.metrics import failure_reason
from deployments.observability.hub import metrics_enabled, replica_recorder
from deployments.protocol.limits import limits_for
from deployments.protocol.v2 import model_metadata, validate_inputs
from deployments.composites.members import Members
from pipelines.spec import pipeline_class

__all__ = ["CompositeEndpoint"]


class CompositeEndpoint(V2Endpoint):
    """v2 endpoint of one ensemble or pipeline.

    Args:
        model: the composite's name.
        config: its config (signature, steps, parameters).
        version: the version it reports (its newest version folder, 1 when it has none).
        controller: the repository controller's actor name; members then follow its tables.
        static: member tables and handles when there is no controller (see ``Members``).
        auth: an ``AuthPolicy.to_dict()``; None: no API keys.
    """

    def __init__(self, model: str, config: ModelConfig, version: int = 1, controller: str | None = None,
                 static: Mapping[str, Mapping[str, Any]] | None = None, auth: dict | None = None) -> None:
        self._model, self._config, self._version = model, config, version
        self._auth = AuthPolicy.from_dict(auth)
        signature = config.signature()
        if signature is None:
            raise ConfigError(f"{model}/config.pbtxt: input/output: an ensemble or pipeline declares its signature")
        self._signature = signature
        self._limits = limits_for(config)
        configure_logging(f"composite-{model}")
        self._recorder = replica_recorder(metrics_enabled(config))
        cls = pipeline_class(config)
        self._members = Members(model, cls.member_names(config), controller, static, self._recorder)
        self._pipeline = cls(config, self._members)

    async def _infer(self, inputs: dict[str, np.ndarray], version: str | int | None,
                     timeout_s: float | None = None) -> tuple[int, dict[str, np.ndarray]]:
        start = time.perf_counter()
        try:
            self._check_version(version)
            rows = validate_inputs(inputs, self._signature, self._config.max_batch_size)
            if timeout_s:
                try:
                    outputs = await asyncio.wait_for(self._pipeline.infer(inputs), timeout_s)
                except TimeoutError:
                    raise RequestTimeout(f"model {self._model!r}: no answer within {timeout_s * 1000:.0f} ms "
                                         f"(the request's timeout)") from None
            else:
                outputs = await self._pipeline.infer(inputs)
        except Exception as exc:
            if self._recorder is not None:
                status = exc.http_status if isinstance(exc, ServingError) else 500
                self._recorder.failure(self._model, str(self._version), failure_reason(status),
                                       time.perf_counter() - start)
            raise
        if self._recorder is not None:  # the whole request: its members' own numbers are theirs
            duration_s = time.perf_counter() - start
            self._recorder.series(self._model, str(self._version)).succeeded(rows, duration_s, 0.0, duration_s,
                                                                             int(time.time() * 1000))
        return self._version, outputs

    def _default_version(self) -> str:
        return str(self._version)

    def _check_version(self, version: str | int | None) -> None:
        if version is not None and str(version) != str(self._version):
            raise ModelNotFound(f"model {self._model!r} has no version {version!r}; served: {self._version}")

    async def metadata(self, version: int | None = None) -> dict:
        """The v2 model metadata object (the composite's own signature)."""
        self._check_version(version)
        return model_metadata(self._model, [str(self._version)], self._config.platform, self._signature)

    async def ready(self, version: int | None = None) -> bool:
        """Ready when every member can serve."""
        self._check_version(version)
        return await self._members.ready()

    async def stats(self) -> dict:
        """Member batches this replica formed, per member and version."""
        return {"members": self._members.stats()}

    async def _post_root(self, body: bytes) -> Response:
        return await self._plain_json(body)

    async def _plain_json(self, body: bytes) -> Response:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        return json_response(await self._pipeline.handle_json(payload))
