"""TF Serving's gRPC API (``tensorflow.serving.PredictionService`` and ``ModelService``) of the front door.

A transport over the same doors as v2 and TF Serving REST: a ``Predict`` reaches the model's
``Door`` (routing, batching, limits, metrics: the data plane's), so a TF Serving gRPC request can
share a batch with v2 and REST ones. The codec is ``deployments.protocol.tfserving_grpc``; the
method wrapper, key check and status mapping ``deployments.ingress.grpc_base``. TF Serving serves
both services on one port (8500 there; ``--tf-grpc-port`` here).

* ``Predict``, ``GetModelMetadata`` (``signature_def``), ``ModelService.GetModelStatus``: every model,
  ``model_spec`` by name, ``version`` or ``version_label``; the call's deadline bounds the wait.
* ``Classify`` / ``Regress``: a SavedModel's classification or regression signature on ``tf.Example`` s
  (``deployments.protocol.tfserving_examples``), as on REST.
* ``ModelService.HandleReloadConfigRequest``: the controller serves the new ``ModelServerConfig``'s
  models, policies and labels in place of those named so far, and it answers once they loaded (an
  invalid config: INVALID_ARGUMENT, nothing changes).
* ``MultiInference``: UNIMPLEMENTED (the generated base's answer).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from backends.errors import InvalidRequest, ModelNotFound, Overloaded
from deployments.ingress.gateway import Door, Gateway
from deployments.ingress.grpc_base import GrpcServicer, Registration, rpc
from deployments.ingress.tfserving_http import run_examples, tf_version_status
from deployments.protocol.tfserving_examples import classify_response, examples_from_input, regress_response
from deployments.protocol.tfserving_rest import DEFAULT_SIGNATURE
from deployments.protocol.tfserving_apis import tf_serving_apis
from deployments.protocol.tfserving_grpc import (
    decode_predict_request,
    encode_predict_response,
    metadata_response,
    spec_version,
    status_response,
)
from deployments.settings import INFLIGHT_ENV

__all__ = ["TfPredictionService", "TfModelService", "tf_serving_registration"]

apis = tf_serving_apis()
_RELOAD_SETTLE_S = 10.0  # how long a reload's answer waits for this replica to follow the controller


async def _door_and_version(servicer: GrpcServicer, spec: Any) -> tuple[Door, int | None]:
    """The door ``model_spec`` names and its version number (a label resolved; None: the latest)."""
    if not spec.name:
        raise InvalidRequest("model_spec.name is missing")
    asked = spec_version(spec)
    door = await servicer._door(spec.name, f"Servable not found for request: "
                                           f"{f'Specific({spec.name}, {asked})' if asked else f'Latest({spec.name})'}")
    try:
        return door, door.version_number(asked)
    except ModelNotFound:
        raise ModelNotFound(f"Unrecognized servable version label: {asked}") from None


class TfPredictionService(GrpcServicer, apis.prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over a front-door replica's ``Gateway``."""

    @rpc("inference")
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - TF's names
        door, version = await _door_and_version(self, request.model_spec)
        if self._gateway.overloaded(door):
            raise Overloaded(f"model {door.served.name!r}: {door.inflight} requests in flight in this front-door "
                             f"replica ({INFLIGHT_ENV}); retry later")
        door.inflight += 1
        try:
            described = await door.describe(None if version is None else str(version))
            inputs = decode_predict_request(request, described.signature, door.served.limits)
            answered, outputs = await door.infer_versioned(inputs, None if version is None else str(version),
                                                           context.time_remaining())
        finally:
            door.inflight -= 1
        return encode_predict_response(request.model_spec.name, answered, outputs, list(request.output_filter),
                                       [s.name for s in described.signature.outputs])

    @rpc("inference")
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        door, version = await _door_and_version(self, request.model_spec)
        described = await door.describe(None if version is None else str(version))
        number = version if version is not None else int(described.versions[0])
        return metadata_response(request, request.model_spec.name, number, described.signature,
                                 described.other_signatures)

    async def _examples(self, request: Any, kind: str) -> tuple[int, str, list]:
        door, version = await _door_and_version(self, request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        answered, result = await run_examples(door, kind, name, examples_from_input(request.input),
                                              None if version is None else str(version))
        return answered, name, result

    @rpc("inference")
    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        answered, name, result = await self._examples(request, "classify")
        return classify_response(request.model_spec.name, answered, name, result)

    @rpc("inference")
    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        answered, name, result = await self._examples(request, "regress")
        return regress_response(request.model_spec.name, answered, name, result)


class TfModelService(GrpcServicer, apis.model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: the status of a model's versions; config reloads."""

    @rpc("health")
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = request.model_spec
        if not spec.name:
            raise InvalidRequest("model_spec.name is missing")
        door = self._gateway.door(spec.name)
        asked = spec_version(spec)
        version = asked
        if asked is not None and not asked.isdigit():  # a label: the version it names now
            if door is None:
                raise ModelNotFound(f"Unrecognized servable version label: {asked}")
            version = str((await _door_and_version(self, spec))[1])
        return status_response(await tf_version_status(self._gateway.server, spec.name, version, door))

    @rpc("management")
    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        if request.config.WhichOneof("config") is None:
            raise InvalidRequest("ReloadConfigRequest.config: set model_config_list")
        await self._gateway.server.reload_tf_config(request.config.SerializeToString())
        await self._until_served(request.config.model_config_list.config)
        return apis.model_management_pb2.ReloadConfigResponse()  # status: error_code OK

    async def _until_served(self, configs: Any) -> None:
        """Answer a reload once this replica's doors show what it asked (each model there, its labels
        as configured), as TF Serving answers once the models are available; at most a few seconds."""
        deadline = asyncio.get_running_loop().time() + _RELOAD_SETTLE_S
        while asyncio.get_running_loop().time() < deadline:
            doors = [(self._gateway.door(c.name), dict(c.version_labels)) for c in configs]
            if all(door is not None and door.served.version_labels == labels for door, labels in doors):
                return
            await asyncio.sleep(0.05)


def tf_serving_registration(gateway: Gateway) -> Registration:
    """Both TF Serving services for one gRPC server; called on the data plane's loop, where ``gateway`` lives."""
    loop = asyncio.get_running_loop()
    prediction, models = TfPredictionService(gateway, loop), TfModelService(gateway, loop)

    def register(server: grpc.aio.Server) -> None:
        apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    return register
