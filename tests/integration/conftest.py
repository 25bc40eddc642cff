"""One real Ray cluster and one deployed repository, shared by every integration test.

The repository is the example one plus three models that must fail in known ways: a bad config,
a corrupt model file, and a model that loads and warms up but raises on batches of two rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from deployments.launch.cli import serve_environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


POLL_SECS = 0.5
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
serve_environment()  # before ray.serve is imported anywhere: Serve reads these at import
# The front door's in-flight bound per model, lower than its default so a test can reach it; above
# every test's concurrency (32 at most) elsewhere.
os.environ.setdefault("INFERGRID_INFLIGHT_PER_MODEL", "48")

import ray  # noqa: E402
import requests  # noqa: E402
from ray import serve  # noqa: E402
from repository_helpers import APPLICANTS, BODY, config_for, version_apps, wait_for, write_version  # noqa: E402


def build_explodes(version_dir: Path, rows: int = 1) -> None:
    """An ONNX model that reshapes to a fixed [1, 4]: fine for one row, fails for two (``rows=-1``: a
    reshape to [-1, 4] that never fails)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([rows, 4], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "explodes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version_dir.mkdir(parents=True)
    onnx.save(model, str(version_dir / "model.onnx"))


@pytest.fixture(scope="session")
def test_repository(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served") / "repo"
    shutil.copytree(example_repository, root)
    (root / "broken").mkdir()
    (root / "broken" / "config.pbtxt").write_text('backend: "onnxruntime"\nmax_batch_size: "lots"\n')
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"\x00garbage")
    build_explodes(root / "explodes" / "1")
    # Two kept versions with different weights, and two folders with no config at all.
    from build_repository import FRAUD_CONFIG, build_fraud

    (root / "fraud2").mkdir()
    (root / "fraud2" / "config.pbtxt").write_text(
        FRAUD_CONFIG.replace('name: "fraud"', 'name: "fraud2"').replace("num_versions: 1", "num_versions: 2"))
    build_fraud(root / "fraud2" / "1", seed=1)
    build_fraud(root / "fraud2" / "2", seed=2)
    build_fraud(root / "bare_onnx")  # <repo>/bare_onnx/model.onnx, served as version 1
    build_fraud(root / "tfserving_layout" / "1", seed=3)
    (root / "explodes" / "config.pbtxt").write_text(
        'backend: "onnxruntime" max_batch_size: 4 '
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]')
    return root


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray with Serve (its own HTTP proxy on a free port, for ``serve run`` style tests;
    infergrid's front door listens elsewhere); yields the proxy's base URL.

    Twelve logical CPUs on a 2-core machine: the replicas reserve fractions of a CPU and mostly idle
    (the example models, the failing ones, and a test module's own models at once).
    """
    port = free_port()
    ray.init(address="local", num_cpus=12, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    ray.shutdown()


TF_METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's --monitoring_config_file default


@pytest.fixture(scope="session")
def served(ray_cluster: str, test_repository: Path) -> dict:
    """The test repository served by a polling controller; yields {"url", "index", "repository"}.

    Hot-swap tests add and remove model folders in this repository while it is served.
    """
    from deployments.control.client import start_controller
    from deployments.ingress.front_door import Listen

    port, grpc_port, rest_port, tf_grpc_port = free_port(), free_port(), free_port(), free_port()
    controller = start_controller(test_repository, mode="poll", poll_secs=POLL_SECS,
                                  listen=Listen("127.0.0.1", port, grpc_port, rest_port=rest_port,
                                                tf_grpc_port=tf_grpc_port, tf_metrics_path=TF_METRICS_PATH))
    index = ray.get(controller.wait_started.remote(), timeout=300)
    failed = {name for name, status in index.items() if status.reason}
    assert failed == {"broken", "corrupt"}, {name: index[name].reason for name in failed}
    assert all(status.endpoint for name, status in index.items() if name not in failed), index
    return {"url": f"http://127.0.0.1:{port}", "grpc": f"127.0.0.1:{grpc_port}", "serve_url": ray_cluster,
            "rest": f"http://127.0.0.1:{rest_port}", "tf_metrics": f"http://127.0.0.1:{rest_port}{TF_METRICS_PATH}",
            "tf_grpc": f"127.0.0.1:{tf_grpc_port}", "index": index,
            "repository": test_repository, "controller": controller}


@pytest.fixture(scope="session")
def run_async(served: dict) -> Iterator:
    """Run coroutines that use DeploymentHandles on one long-lived event loop.

    With Serve's throughput-optimised settings a handle's router lives on the caller's loop, so
    every handle call in the session must share one loop.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield lambda coro, timeout=60: asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture(scope="session")
def tf_credit_score(served: dict) -> np.ndarray:
    """credit_score's answers for APPLICANTS, from TensorFlow itself (the SavedModel's serving_default)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(served["repository"] / "credit_score" / "1" / "model.savedmodel"))
    signature = loaded.signatures["serving_default"]
    (output,) = signature(applicant=tf.constant(APPLICANTS)).values()
    return output.numpy()


@pytest.fixture(scope="session")
def url(served: dict) -> str:
    return served["url"]


@pytest.fixture
def new_model(served: dict) -> Iterator[Callable[..., Path]]:
    """Add a model folder (fraud copy) and wait until it serves; removed (and checked gone) after."""
    url, repository = served["url"], served["repository"]
    created: list[Path] = []

    def add(name: str, seed: int = 1, config: str | None = None) -> Path:
        model_dir = repository / name
        model_dir.mkdir()
        (model_dir / "config.pbtxt").write_text(config or config_for(name))
        write_version(model_dir, 1, seed, atomic=True)
        created.append(model_dir)
        wait_for(lambda: requests.post(f"{url}/v2/models/{name}/infer", json=BODY, timeout=30).status_code == 200,
                 60, f"model {name} to serve")
        return model_dir

    yield add
    for model_dir in created:
        shutil.rmtree(model_dir, ignore_errors=True)  # a test may have removed it already
    for model_dir in created:
        name = model_dir.name
        wait_for(lambda: requests.post(f"{url}/v2/models/{name}/infer", json=BODY, timeout=30).status_code == 404,
                 60, f"model {name} to be unloaded")
        wait_for(lambda: not version_apps(name) and name not in serve.status().applications, 60,
                 f"{name}'s applications to be deleted")
