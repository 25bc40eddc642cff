"""The front door: the Serve deployment whose replicas accept every client connection.

Each replica opens the listening socket itself (SO_REUSEPORT: several replicas on a node share
the port; scaling the front door is adding replicas) and runs infergrid's own HTTP listener
(``deployments.ingress.listener``) on a uvloop event loop in a thread of its own. Requests never
pass through Serve's HTTP proxy or its per-request machinery: they are parsed, checked and routed
by the replica's ``Gateway``, which batches them and makes one Ray call per batch to the version's
replicas (``deployments.dataplane.router``). Serve still runs, places, restarts and shows the
replicas; its own proxy is off (``proxy_location: Disabled``), so nothing else binds the port.
KServe v2 gRPC (``deployments.ingress.grpc_v2``) and TF Serving's gRPC API
(``deployments.ingress.grpc_tfserving``) are served by the same replicas over the same ``Gateway``,
their servers on a loop of their own (``deployments.ingress.loops`` says why).

Every handle call the replica makes happens on that one loop (with Serve's throughput-optimised
settings a handle's router lives on the loop that first used it); Serve's own methods
(``infer``, ``ready``, ``stats`` for Python callers) hop onto it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from deployments.dataplane.auth import AuthPolicy
from deployments.dataplane.router import replica_identity
from deployments.dataplane.table import Route, ServedModel
from deployments.ingress.gateway import Gateway
from deployments.ingress.listener import HttpListener
from deployments.ingress.loops import LoopThread
from deployments.ingress.server import EXTENSIONS, server_version
from deployments.observability.logs import configure_logging
from deployments.repository.status import ModelStatus
from deployments.settings import current

__all__ = ["FrontDoor", "Listen"]

logger = logging.getLogger("infergrid")

_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Listen:
    """Where the front door's replicas listen: HTTP on ``port``, KServe v2 gRPC on ``grpc_port``,
    Triton's metrics-only port ``metrics_port``, TF Serving's REST port ``rest_port`` and its gRPC port
    ``tf_grpc_port`` (on ``grpc_host``) (0: off); an empty host is ``host``."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0
    grpc_host: str = ""
    metrics_port: int = 0
    metrics_host: str = ""
    rest_port: int = 0
    tf_grpc_port: int = 0
    tf_metrics_path: str = ""  # TF Serving's --monitoring_config_file: Prometheus text there on rest_port
    ts_inference_port: int = 0  # TorchServe's inference API (/ping, /predictions/...), 8080 in TorchServe
    ts_metrics_port: int = 0  # TorchServe's metrics API (GET /metrics, its ts_* names), 8082 in TorchServe
    ts_management_port: int = 0  # TorchServe's management API (/models...), 8081 in TorchServe
    ts_host: str = ""  # TorchServe's three ports (config.properties' addresses); empty: host
    ts_model_api: bool = False  # TorchServe's --enable-model-api: register and unregister allowed


class FrontDoor:
    """One front-door replica.

    Args:
        listen: host and port of the HTTP listener.
        controller: the repository controller's actor name: the served models and their tables
            are followed from it. None: a fixed set (``static``), for a ``serve deploy`` config.
        auth: an ``AuthPolicy.to_dict()`` (None: no API keys).
        static: without a controller, each served model with its fixed table.
        index: without a controller, what the server API reports (failed models included).
    """

    def __init__(self, listen: Listen, controller: str | None = None, auth: dict | None = None,
                 static: list[tuple[ServedModel, list[Route]]] | None = None,
                 index: dict[str, ModelStatus] | None = None) -> None:
        configure_logging("frontdoor")
        self._listen = listen
        self._door_loop = LoopThread("infergrid-frontdoor")
        watcher = replica_identity() if controller else None
        policy = AuthPolicy.from_dict(auth)
        self._gateway: Gateway = self._door_loop.run(self._start(policy, controller, watcher, static or [], index or {}),
                                           _START_TIMEOUT_S)

    async def _start(self, auth: AuthPolicy, controller: str | None, watcher, static, index) -> Gateway:
        gateway = Gateway(auth, controller, index, watcher, current().inflight_per_model)
        for served, routes in static:
            await gateway.add(served, list(routes))
        self._listener = HttpListener(gateway.http, gateway.precheck, gateway.release)
        await self._listener.start(self._listen.host, self._listen.port)
        self._metrics_listener = None
        if self._listen.metrics_port:
            self._metrics_listener = HttpListener(gateway.metrics_only, gateway.precheck, gateway.release)
            await self._metrics_listener.start(self._listen.metrics_host or self._listen.host,
                                               self._listen.metrics_port)
        self._rest_listener = None
        if self._listen.rest_port:  # TF Serving's REST port (8501 in TF Serving): its /v1 paths only
            gateway.tf_metrics_path = self._listen.tf_metrics_path
            self._rest_listener = HttpListener(gateway.tf_serving_only, gateway.tf_serving_precheck, gateway.release)
            await self._rest_listener.start(self._listen.host, self._listen.rest_port)
        self._ts_listeners = await self._start_torchserve(gateway)
        self._grpc = await self._start_grpc(gateway)
        if controller:
            self._follow = asyncio.get_running_loop().create_task(gateway.follow_models())
        logger.info("front door listening on http://%s:%d (gRPC: %s, TF Serving gRPC: %s, metrics port: %s)",
                    self._listen.host, self._listen.port, self._listen.grpc_port or "off",
                    self._listen.tf_grpc_port or "off", self._listen.metrics_port or "off")
        return gateway

    async def _start_torchserve(self, gateway: Gateway) -> list[HttpListener]:
        """TorchServe's inference (/ping, /predictions/...), management (/models...) and metrics (GET /metrics)
        ports, each 0: off."""
        from deployments.ingress.torchserve_http import TorchServeInference, TorchServeMetrics
        from deployments.ingress.torchserve_management import TorchServeManagement

        listeners = []
        for port, served in ((self._listen.ts_inference_port, lambda: TorchServeInference(gateway)),
                             (self._listen.ts_management_port,
                              lambda: TorchServeManagement(gateway, self._listen.ts_model_api)),
                             (self._listen.ts_metrics_port, lambda: TorchServeMetrics(gateway))):
            if port:
                api = served()
                listener = HttpListener(api.answer, api.precheck, gateway.release)
                await listener.start(self._listen.ts_host or self._listen.host, port)
                listeners.append(listener)
        return listeners

    async def _start_grpc(self, gateway: Gateway):
        """KServe v2 gRPC on ``grpc_port`` and TF Serving's on ``tf_grpc_port`` (each 0: off), one loop thread."""
        endpoints = []
        grpc_host = self._listen.grpc_host or self._listen.host
        if self._listen.grpc_port:
            from deployments.ingress.grpc_v2 import v2_registration

            endpoints.append((grpc_host, self._listen.grpc_port,
                              v2_registration(gateway, "infergrid", server_version(), EXTENSIONS)))
        if self._listen.tf_grpc_port:
            from deployments.ingress.grpc_tfserving import tf_serving_registration

            endpoints.append((grpc_host, self._listen.tf_grpc_port, tf_serving_registration(gateway)))
        if not endpoints:
            return None
        from deployments.ingress.grpc_base import start_grpc_servers

        return await start_grpc_servers(endpoints)

    async def infer(self, model: str, inputs: dict[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        """Python entry point (``deployments.dataplane.handles``): validated and batched with HTTP traffic."""
        return await self._door_loop.call(self._gateway.infer(model, inputs, version))

    async def ready(self, model: str, version: int | None = None) -> bool:
        """True when this replica can answer ``model`` (``version``)."""
        return await self._door_loop.call(self._gateway.ready([model]) if version is None
                                   else self._gateway.ready_version(model, version))

    async def stats(self) -> dict:
        """This replica's batch counters, per model and version."""
        return await self._door_loop.call(self._async_stats())

    async def _async_stats(self) -> dict:
        return self._gateway.stats()

    def check_health(self) -> None:
        """Serve's health check: the listener's thread must be alive."""
        if not self._door_loop.is_alive():
            raise RuntimeError("the front door's event loop thread died")
        if self._grpc is not None and not self._grpc.is_alive():
            raise RuntimeError("the front door's gRPC event loop thread died")

    def __del__(self) -> None:
        door_loop = getattr(self, "_door_loop", None)
        loop = door_loop.loop if door_loop is not None else None
        for listener in (getattr(self, "_listener", None), getattr(self, "_metrics_listener", None),
                         getattr(self, "_rest_listener", None), *getattr(self, "_ts_listeners", ())):
            if loop is not None and listener is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(listener.stop(), loop)
