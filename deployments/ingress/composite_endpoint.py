"""The deployment that serves an ensemble or pipeline as a model: ``/v2/models/{name}``.

Its replicas hold a data plane over a ``CompositeModel`` and serve it through the same v2 HTTP
transport as a model endpoint, plus a pipeline's plain JSON route. It is deployed as the
``endpoint`` deployment of the model's application, so the server ingress, the repository index
and the controller's restart adoption treat it as any model's endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backends.errors import InvalidRequest
from backends.model_config import ModelConfig
from deployments.composites.composite_model import CompositeModel
from deployments.dataplane.auth import AuthPolicy
from deployments.dataplane.plane import DataPlane
from deployments.ingress.http import HttpReply, json_reply
from deployments.ingress.v2_http import V2Deployment, V2HttpApi
from deployments.observability.hub import metrics_enabled, replica_recorder
from deployments.observability.logs import configure_logging
from deployments.protocol.limits import limits_for

__all__ = ["CompositeEndpoint"]


class CompositeEndpoint(V2Deployment):
    """v2 endpoint of one ensemble or pipeline: the arguments of ``CompositeModel``, plus ``auth``
    (an ``AuthPolicy.to_dict()``; None: no API keys)."""

    def __init__(self, model: str, config: ModelConfig, version: int = 1, controller: str | None = None,
                 static: Mapping[str, Mapping[str, Any]] | None = None, auth: dict | None = None) -> None:
        configure_logging(f"composite-{model}")
        recorder = replica_recorder(metrics_enabled(config))
        self._composite = CompositeModel(model, config, version, controller, static, recorder)
        plane = DataPlane(model, self._composite, limits_for(config), AuthPolicy.from_dict(auth), recorder)
        self._api = V2HttpApi(plane, self._plain_json)

    async def _plain_json(self, body: bytes) -> HttpReply:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        return json_reply(await self._composite.pipeline.handle_json(payload))

    async def ready(self, version: int | None = None) -> bool:
        """Ready when every member can serve."""
        return await self._composite.ready(version)

    async def stats(self) -> dict:
        """Member batches this replica formed, per member and version."""
        return self._composite.stats()
