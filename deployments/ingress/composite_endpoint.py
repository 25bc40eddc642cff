"""The deployment that serves an ensemble or pipeline as a model: ``/v2/models/{name}``.

Its replicas hold a data plane over a ``CompositeModel`` and serve it through the same v2 HTTP
transport as a model (``V2HttpApi``), plus a pipeline's plain JSON route. The front door forwards
the composite's requests here through a handle (``V2Deployment.http``); ``serve run`` of
``deployments.applications.ensembles:standalone_app`` reaches it through Serve's own HTTP proxy
(``__call__``). It is the ``endpoint`` deployment of the composite's application, which is how the
controller's restart adoption recognises a running composite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backends.errors import InvalidRequest
from backends.model_config import ModelConfig
from deployments.composites.composite_model import CompositeModel
from deployments.dataplane.auth import AuthPolicy
from deployments.dataplane.plane import DataPlane
from deployments.ingress.http import HttpReply, json_reply
from deployments.ingress.v2_http import TIMEOUT_HEADER, V2Deployment, V2HttpApi
from deployments.observability.hub import metrics_enabled, replica_recorder
from deployments.observability.logs import REQUEST_ID_HEADER, configure_logging
from deployments.protocol.limits import limits_for
from deployments.protocol.v2 import HEADER_LENGTH

__all__ = ["CompositeEndpoint"]


class CompositeEndpoint(V2Deployment):
    """v2 endpoint of one ensemble or pipeline: the arguments of ``CompositeModel``, plus ``auth``
    (an ``AuthPolicy.to_dict()``; None: no API keys)."""

    def __init__(self, model: str, config: ModelConfig, version: int = 1, controller: str | None = None,
                 static: Mapping[str, Mapping[str, Any]] | None = None, auth: dict | None = None) -> None:
        configure_logging(f"composite-{model}")
        recorder = replica_recorder(metrics_enabled(config))
        self._composite = CompositeModel(model, config, version, controller, static, recorder)
        plane = DataPlane(model, self._composite, limits_for(config), AuthPolicy.from_dict(auth), recorder,
                          config.triton)
        self._api = V2HttpApi(plane, self._plain_json)

    async def _plain_json(self, body: bytes) -> HttpReply:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        return json_reply(await self._composite.pipeline.handle_json(payload))

    async def __call__(self, request: Request) -> Response:
        """``serve run`` (no front door): the v2 API and plain JSON below Serve's route prefix."""
        path = request.url.path[len(request.scope.get("root_path", "")):]
        body = await request.body() if request.method == "POST" else b""
        reply = await self._api.reply(request.method, path, request.headers.get(HEADER_LENGTH), body,
                                      request.headers.get(REQUEST_ID_HEADER), request.headers.get(TIMEOUT_HEADER))
        return reply.to_response()

    async def ready(self, version: int | None = None) -> bool:
        """Ready when every member can serve."""
        return await self._composite.ready(version)

    async def model_config(self, version: int | None = None) -> dict:
        """The composite's config as Triton reports it (for the front door's gRPC ``ModelConfig``)."""
        return await self._api.plane.model_config(version)

    async def stats(self) -> dict:
        """Member batches this replica formed, per member and version."""
        return self._composite.stats()
