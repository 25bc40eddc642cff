"""Model handles for Python callers inside the cluster.

    handle = get_model_handle("fraud")
    outputs = await handle.infer.remote({"features": np.zeros((2, 16), np.float32)})
    outputs = await handle.infer.remote({...}, version=2)     # a specific version

The call goes through the front door (``deployments.ingress.front_door``), so it is validated and
batched with HTTP traffic.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.names import FRONT_DOOR_APP, FRONT_DOOR_DEPLOYMENT

__all__ = ["get_model_handle", "ModelHandle"]


class _Infer:
    def __init__(self, handle: Any, model: str) -> None:
        self._handle, self._model = handle, model

    def remote(self, inputs: dict, version: int | None = None) -> Any:
        """A Serve ``DeploymentResponse``: await it for the named output arrays."""
        return self._handle.infer.remote(self._model, inputs, version)


class ModelHandle:
    """One model's Python entry point: ``.infer.remote(inputs, version=None)`` -> dict of arrays."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._handle = serve.get_deployment_handle(FRONT_DOOR_DEPLOYMENT, app_name=FRONT_DOOR_APP)
        self.infer = _Infer(self._handle, model)

    def ready(self, version: int | None = None) -> Any:
        """A response that resolves to True when the model (version) can answer."""
        return self._handle.ready.remote(self.model, version)


def get_model_handle(model: str) -> ModelHandle:
    """The handle of ``model``: ``await handle.infer.remote(inputs, version=None)`` -> dict of arrays."""
    return ModelHandle(model)
