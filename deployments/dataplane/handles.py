"""DeploymentHandles for Python callers inside the cluster.

    handle = get_model_handle("fraud")
    outputs = await handle.infer.remote({"features": np.zeros((2, 16), np.float32)})
    outputs = await handle.infer.remote({...}, version=2)     # a specific version

The call goes through the model's endpoint, so it is validated and batched with HTTP traffic.
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.names import ENDPOINT_DEPLOYMENT, endpoint_app

__all__ = ["get_model_handle"]


def get_model_handle(model: str) -> DeploymentHandle:
    """The handle of a model's endpoint; ``.infer.remote(inputs, version=None)`` -> dict of arrays."""
    return serve.get_deployment_handle(ENDPOINT_DEPLOYMENT, app_name=endpoint_app(model))
