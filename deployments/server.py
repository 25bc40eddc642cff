"""The server ingress at ``/``: server-level v2 endpoints and every path no model endpoint owns.

Model endpoints own ``/v2/models/{model}``; requests reach this deployment for ``/v2``, the health
endpoints, the repository index, and models that are unknown (404) or failed to load (503 with the
reason). It knows the repository through its index, given at deploy time.
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import PackageNotFoundError, version

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from backends.errors import ModelNotFound, ModelNotReady
from deployments.http import error_response, json_response
from deployments.names import ENDPOINT_DEPLOYMENT, endpoint_app

__all__ = ["ServerIngress", "server_version"]

_MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)")
EXTENSIONS = ["binary_tensor_data"]  # model_repository once load/unload exist


def server_version() -> str:
    """The installed infergrid version."""
    try:
        return version("infergrid")
    except PackageNotFoundError:
        return "0+unknown"


class ServerIngress:
    """Index: ``{model: {"versions": [..], "reason": str | None}}``; a reason marks a failed model."""

    def __init__(self, index: dict[str, dict]) -> None:
        self._index = index

    def _serving(self) -> list[str]:
        return [name for name, entry in self._index.items() if not entry.get("reason")]

    async def _ready(self) -> bool:
        async def one(model: str) -> bool:
            handle = serve.get_deployment_handle(ENDPOINT_DEPLOYMENT, app_name=endpoint_app(model))
            try:
                return await asyncio.wait_for(handle.ready.remote(), 5)
            except Exception:  # noqa: BLE001 - unreachable means not ready
                return False
        return all(await asyncio.gather(*(one(m) for m in self._serving())))

    def repository_index(self) -> list[dict]:
        """Triton's ``POST /v2/repository/index`` rows."""
        rows = []
        for name, entry in sorted(self._index.items()):
            reason = entry.get("reason")
            versions = entry.get("versions") or [None]
            for v in versions:
                row = {"name": name, "state": "UNAVAILABLE" if reason else "READY", "reason": reason or ""}
                if v is not None:
                    row["version"] = str(v)
                rows.append(row)
        return rows

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request, request.url.path.rstrip("/") or "/")
        except Exception as exc:  # noqa: BLE001 - one renderer for every failure
            return error_response(exc)

    async def _dispatch(self, request: Request, path: str) -> Response:
        if path == "/v2/health/live":
            return json_response({"live": True})
        if path == "/v2/health/ready":
            ready = await self._ready()
            return json_response({"ready": ready}, 200 if ready else 503)
        if path == "/v2":
            return json_response({"name": "infergrid", "version": server_version(), "extensions": EXTENSIONS})
        if path == "/v2/repository/index" and request.method == "POST":
            return json_response(self.repository_index())
        match = _MODEL_PATH.match(path)
        if match:
            model = match.group("model")
            entry = self._index.get(model)
            if entry and entry.get("reason"):
                raise ModelNotReady(f"model {model!r} is unavailable: {entry['reason']}")
            if entry:
                raise ModelNotReady(f"model {model!r} is starting")
            raise ModelNotFound(f"unknown model {model!r}; served: {', '.join(self._serving()) or 'none'}")
        raise ModelNotFound(f"no route {request.method} {request.url.path}")
