"""A model's configuration as Triton reports it (``GET /v2/models/{m}/config``, gRPC ``ModelConfig``).

Triton returns the config it serves with, not the file: what ``config.pbtxt`` left out is completed
from the model (``--strict-model-config=false``, Triton's default since 22.x). Clients rely on that:
``perf_analyzer`` and ``model_analyzer`` read ``max_batch_size``, ``input``/``output`` and the batching
blocks from it before they send anything. Completed here, as Triton completes them: name, platform
and backend, inputs and outputs (from the loaded model's signature), the version policy, and the
instance groups (named ``<model>_<index>``, ``KIND_GPU`` or ``KIND_CPU`` as placed). Pure: no Ray.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from google.protobuf.message import Message

from backends.signature import ModelSignature, TensorSpec
from deployments.repository.triton_schema import from_dict, to_triton_json

__all__ = ["effective_config", "config_message"]

# The backend Triton names for each platform it reports.
_BACKEND_OF_PLATFORM = {"onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch",
                        "tensorflow_savedmodel": "tensorflow", "python": "python"}


def _tensor(spec: TensorSpec, batching: bool) -> dict:
    dims = list(spec.shape[1:] if batching and spec.shape else spec.shape)
    data_type = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"
    return {"name": spec.name, "data_type": data_type, "dims": dims}


def _instance_groups(config: dict, model: str, device: str) -> list[dict]:
    on_gpu = device.startswith("cuda")
    groups = [dict(group) for group in config.get("instance_group", [])] or [{}]
    for index, group in enumerate(groups):
        group.setdefault("name", f"{model}_{index}")
        group.setdefault("count", 1)
        if group.get("kind", "KIND_AUTO") == "KIND_AUTO":
            group["kind"] = "KIND_GPU" if on_gpu else "KIND_CPU"
        if group["kind"] == "KIND_GPU":
            group.setdefault("gpus", [0])
    return groups


def config_message(parsed: Mapping, name: str, platform: str, signature: ModelSignature, max_batch_size: int,
                   device: str = "cpu") -> Message:
    """The completed config as Triton's ``ModelConfig`` message (what gRPC ``ModelConfig`` returns).

    Args:
        parsed: the config as parsed (``ModelConfig.triton``: only the fields the file set).
        name, platform, signature, max_batch_size, device: the model as its serving version
            describes itself (``ModelDescription``); ``platform`` in Triton's spelling.
    """
    config = copy.deepcopy(dict(parsed))
    config["name"] = name
    if platform and platform != "python":
        config.setdefault("platform", platform)
    backend = _BACKEND_OF_PLATFORM.get(platform)
    if backend and not config.get("backend"):
        config["backend"] = backend
    config.setdefault("max_batch_size", max_batch_size)
    batching = int(config["max_batch_size"]) > 0
    if not config.get("input"):
        config["input"] = [_tensor(spec, batching) for spec in signature.inputs]
    if not config.get("output"):
        config["output"] = [_tensor(spec, batching) for spec in signature.outputs]
    config.setdefault("version_policy", {"latest": {"num_versions": 1}})
    if platform != "ensemble":
        config["instance_group"] = _instance_groups(config, name, device)
    return from_dict(config, f"{name} config")


def effective_config(parsed: Mapping, name: str, platform: str, signature: ModelSignature, max_batch_size: int,
                     device: str = "cpu") -> dict:
    """The completed config as Triton's HTTP API writes it (every field, the proto's names)."""
    return to_triton_json(config_message(parsed, name, platform, signature, max_batch_size, device))
