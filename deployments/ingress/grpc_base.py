"""What every gRPC service of the front door shares: the method wrapper, the servicer's checks, the server.

Each method runs the same way whatever the service (KServe v2's ``deployments.ingress.grpc_v2``, TF
Serving's ``deployments.ingress.grpc_tfserving``): the caller's key from the ``authorization``
metadata is checked for the method's operation group (the HTTP policy), the work runs on the data
plane's loop (the front door's, where the ``Gateway`` lives, so rows from every protocol batch
together and the gateway is only ever touched from one thread), and a failure becomes a gRPC status
through ``backends.errors.status_of``, the one place an error gets its status.

The ``grpc.aio`` servers run on one loop of their own (``deployments.ingress.loops`` says why).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from backends.errors import ModelNotFound, Overloaded, status_of, unwrap_error
from deployments.dataplane.traffic import REQUEST_HEADERS, REQUEST_PARAMETERS
from deployments.ingress.gateway import Door, Gateway
from deployments.ingress.loops import LoopThread, run_on
from deployments.protocol.v2_grpc import GRPC_CODES

__all__ = ["GrpcServer", "GrpcServicer", "rpc", "start_grpc_servers", "Registration"]

logger = logging.getLogger("infergrid")

MAX_MESSAGE_BYTES = 1 << 30  # gRPC's own cap; each model's max_request_bytes is checked per message
Registration = Callable[[grpc.aio.Server], None]  # adds one service's servicer to a server


async def _with_metadata(context: grpc.aio.ServicerContext, work: Awaitable[Any]) -> Any:
    """Run ``work`` with the call's metadata as the request's headers (sticky traffic keys)."""
    REQUEST_HEADERS.set({name: value for name, value in context.invocation_metadata() or ()
                         if isinstance(value, str)})
    REQUEST_PARAMETERS.set(None)  # a v2 decoder sets the request's own
    return await work


def rpc(group: str) -> Callable:
    """Check the caller's key for ``group``, run the method on the data plane's loop, map any failure
    to its gRPC status."""
    def decorate(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def handler(self: GrpcServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                self._authorise(context, group, method.__name__)
                return await run_on(self._data_loop, _with_metadata(context, method(self, request, context)))
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                await self._abort(context, exc)
        return handler
    return decorate


class GrpcServicer:
    """The checks a servicer over a front-door replica's ``Gateway`` makes (mixed into each service's
    generated base class)."""

    def __init__(self, gateway: Gateway, data_loop: asyncio.AbstractEventLoop) -> None:
        self._gateway = gateway
        self._data_loop = data_loop

    def _authorise(self, context: grpc.aio.ServicerContext, group: str, what: str) -> None:
        key = next((value for name, value in context.invocation_metadata() or () if name == "authorization"), None)
        self._gateway.authorise(group, key, what)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        cause = unwrap_error(exc)
        status = status_of(cause)
        if status >= 500 and not isinstance(cause, Overloaded):
            logger.warning("gRPC request failed (%d): %s", status, cause)
        await context.abort(getattr(grpc.StatusCode, GRPC_CODES.get(status, "INTERNAL")), str(cause))

    async def _door(self, model: str, missing: str | None = None) -> Door:
        """The model's door; ``missing``: the message when there is none (default: "unknown model")."""
        door = self._gateway.door(model)
        if door is None:
            await self._gateway.server.not_served(model)
            raise ModelNotFound(missing or f"unknown model {model!r}")
        return door


class GrpcServer:
    """The front door's gRPC servers and the thread whose loop runs them."""

    def __init__(self, servers: list[grpc.aio.Server], thread: LoopThread) -> None:
        self.servers, self._thread = servers, thread

    def is_alive(self) -> bool:
        return self._thread.is_alive()


async def start_grpc_servers(endpoints: list[tuple[str, int, Registration]]) -> GrpcServer:
    """Serve each (host, port, registration) (SO_REUSEPORT: replicas on a node share a port), all from
    one loop thread of their own."""
    thread = LoopThread("infergrid-grpc")
    servers = [await thread.call(_serve(register, host, port)) for host, port, register in endpoints]
    return GrpcServer(servers, thread)


async def _serve(register: Registration, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                      ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                                      ("grpc.so_reuseport", 1)])
    register(server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server
