"""The KServe v2 gRPC transport (``inference.GRPCInferenceService``) of the front door.

Glue only, like the HTTP transport: ``deployments.ingress.grpc_base`` checks the caller's key, runs
each method on the data plane's loop and maps failures to gRPC statuses; the codec
(``deployments.protocol.v2_grpc``) turns messages into named numpy tensors; the model's ``Door`` in
the ``Gateway`` answers (validation, batching, metrics, timeouts are the data plane's). Triton's
messages, from ``tritonclient``, so ``tritonclient.grpc`` works unchanged. Not here yet: shared
memory, trace and log settings (UNIMPLEMENTED, as the base servicer answers).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

from backends.errors import InvalidRequest, ModelNotFound, Overloaded, unwrap_error
from deployments.dataplane.plane import served_versions
from deployments.dataplane.traffic import REQUEST_PARAMETERS
from deployments.ingress.gateway import Gateway
from deployments.ingress.grpc_base import GrpcServicer, Registration, rpc
from deployments.ingress.loops import run_on
from deployments.ingress.v2_http import request_timeout_s
from deployments.observability.hub import hub_handle
from deployments.observability.logs import CLIENT_ID, REQUEST_ID, new_request_id
from deployments.observability.metrics import triton_statistics
from deployments.protocol.v2_grpc import (
    decode_grpc_infer,
    encode_grpc_infer,
    grpc_model_metadata,
    pb,
    statistics_message,
)
from deployments.repository.triton_schema import from_dict
from deployments.settings import INFLIGHT_ENV

__all__ = ["GrpcV2", "v2_registration"]


class GrpcV2(GrpcServicer, service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC inference service over a front-door replica's ``Gateway``."""

    def __init__(self, gateway: Gateway, data_loop: asyncio.AbstractEventLoop, server_name: str,
                 server_version: str, extensions: list[str]) -> None:
        super().__init__(gateway, data_loop)
        self._name, self._version, self._extensions = server_name, server_version, extensions

    # --- health and metadata --------------------------------------------------------------------
    @rpc("health")
    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - Triton's method names
        return pb.ServerLiveResponse(live=True)

    @rpc("health")
    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=await self._gateway.ready(await self._gateway.server.serving()))

    @rpc("health")
    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        door = self._gateway.door(request.name)
        if door is None:
            return pb.ModelReadyResponse(ready=False)
        try:
            version = door.version_number(request.version or None)  # a number or a version label
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=await door.ready(version))

    @rpc("inference")
    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(name=self._name, version=self._version, extensions=self._extensions)

    @rpc("inference")
    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        door = await self._door(request.name)
        described = await door.describe(request.version or None)
        return grpc_model_metadata(described.name, list(described.versions), described.platform, described.signature)

    @rpc("inference")
    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        door = await self._door(request.name)
        config = from_dict(await door.model_config(request.version or None), f"{request.name} config")
        return pb.ModelConfigResponse(config=config)

    # --- inference ------------------------------------------------------------------------------
    async def _infer(self, request: Any) -> Any:
        door = await self._door(request.model_name)
        if self._gateway.overloaded(door):
            raise Overloaded(f"model {door.served.name!r}: {door.inflight} requests in flight in this front-door "
                             f"replica ({INFLIGHT_ENV}); retry later")
        door.inflight += 1
        token = REQUEST_ID.set(request.id or new_request_id())
        try:
            decoded = decode_grpc_infer(request, door.served.limits)
            if decoded.id:
                CLIENT_ID.set(decoded.id)
            REQUEST_PARAMETERS.set(decoded.parameters)  # a traffic policy may be sticky on one
            timeout_s = request_timeout_s(None, decoded.parameters.get("timeout"))
            version, outputs = await door.infer_versioned(decoded.inputs, decoded.version or None, timeout_s)
            return encode_grpc_infer(decoded, str(version), outputs, door.served.labels, door.served.config)
        finally:
            door.inflight -= 1
            REQUEST_ID.reset(token)

    @rpc("inference")
    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._infer(request)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any],  # noqa: N802
                               context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Each request of the stream answered in order; a failed one answers with its error message."""
        try:
            self._authorise(context, "inference", "ModelStreamInfer")
        except Exception as exc:  # noqa: BLE001 - refused before any request is read
            await self._abort(context, exc)
        async for request in request_iterator:
            try:
                yield pb.ModelStreamInferResponse(infer_response=await run_on(self._data_loop, self._infer(request)))
            except Exception as exc:  # noqa: BLE001 - the stream goes on
                yield pb.ModelStreamInferResponse(error_message=str(unwrap_error(exc)))

    # --- statistics and the repository ---------------------------------------------------------
    @rpc("metrics")
    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        merged = await hub_handle().collect.remote()
        door = self._gateway.door(request.name) if request.name else None
        served = await served_versions(door.describe) if door is not None else ()
        return statistics_message(triton_statistics(merged, request.name or None, request.version or None, served))

    @rpc("management")
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        rows = await self._gateway.server.repository_index(request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version or "", state=r.state,
                                                  reason=r.reason) for r in rows])

    @rpc("management")
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        config = request.parameters["config"].string_param if "config" in request.parameters else None
        await self._gateway.server.load(request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    @rpc("management")
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        version = None
        if "version" in request.parameters:
            raw = request.parameters["version"]
            text = raw.string_param if raw.WhichOneof("parameter_choice") == "string_param" else str(raw.int64_param)
            if not text.isdigit():
                raise InvalidRequest(f"parameters.version must be a version number, got {text!r}")
            version = int(text)
        await self._gateway.server.unload(request.model_name, version)
        return pb.RepositoryModelUnloadResponse()


def v2_registration(gateway: Gateway, server_name: str, server_version: str, extensions: list[str]) -> Registration:
    """``GRPCInferenceService`` for a gRPC server; called on the data plane's loop, where ``gateway`` lives."""
    servicer = GrpcV2(gateway, asyncio.get_running_loop(), server_name, server_version, extensions)
    return functools.partial(service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, servicer)
