"""TF Serving's gRPC messages and services (the ``tensorflow-serving-api`` package) without TensorFlow.

Those generated modules import TensorFlow's own messages (``tensorflow.core.framework.tensor_pb2``
and friends), which live inside the ``tensorflow`` package; importing them the ordinary way first
runs ``tensorflow/__init__.py``: the whole runtime, seconds and hundreds of MB in every front-door
replica, and the ingress must never import a framework. The message modules themselves need only
protobuf, and the sub-packages they sit in have empty ``__init__`` files, so while they load a bare
stand-in for the top package (its ``__path__`` the real one) takes ``tensorflow``'s place in
``sys.modules``; it is removed again at once. A later real ``import tensorflow`` (in a test, say)
runs normally and finds the message modules already loaded, as it would have loaded them itself.
Where TensorFlow is already imported, nothing is stood in.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import cache

__all__ = ["tf_serving_apis"]

_MODULES = ("model_pb2", "predict_pb2", "get_model_metadata_pb2", "get_model_status_pb2", "classification_pb2",
            "regression_pb2", "model_management_pb2", "prediction_log_pb2", "prediction_service_pb2_grpc",
            "model_service_pb2_grpc")


@cache
def tf_serving_apis() -> types.SimpleNamespace:
    """``tensorflow_serving.apis``' modules by name, plus ``tensor_pb2``, ``types_pb2``,
    ``tensor_shape_pb2``, ``meta_graph_pb2`` and ``example_pb2`` from ``tensorflow.core``.

    Raises:
        ImportError: ``tensorflow-serving-api`` or TensorFlow's message modules are not installed.
    """
    stub = None
    if "tensorflow" not in sys.modules:
        spec = importlib.util.find_spec("tensorflow")  # finds the package without running it
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("TF Serving's gRPC API needs TensorFlow's message modules (tensorflow/core/...): "
                              "install tensorflow-cpu")
        stub = types.ModuleType("tensorflow")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = stub
    try:
        found = {name: importlib.import_module(f"tensorflow_serving.apis.{name}") for name in _MODULES}
        for package, name in (("framework", "tensor_pb2"), ("framework", "types_pb2"),
                              ("framework", "tensor_shape_pb2"), ("protobuf", "meta_graph_pb2"),
                              ("example", "example_pb2")):
            found[name] = importlib.import_module(f"tensorflow.core.{package}.{name}")
    finally:
        if stub is not None and sys.modules.get("tensorflow") is stub:
            del sys.modules["tensorflow"]
    return types.SimpleNamespace(**found)
