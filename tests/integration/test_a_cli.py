"""``infergrid serve`` as a user runs it (its own embedded Ray, clean SIGTERM), in explicit model control
mode, driven by ``infergrid models list|load|unload``: only the API changes what is served. It runs
with API keys (``--api-keys``): every route is checked for 401/403, the keys never reach a log.

Named to run first, before the session's shared cluster starts (two embedded Rays on one host at
once would share Ray's default ports and folders).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

pytestmark = pytest.mark.integration

BODY = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
INFERENCE_KEY, MANAGEMENT_KEY = "ik-7f3a9c1e55d2", "mk-41b8e02d9a6f"
AS_INFERENCE = {"Authorization": f"Bearer {INFERENCE_KEY}"}
AS_MANAGEMENT = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}


def models_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deployments.launch.cli", "models", *args, "--url", url],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "INFERGRID_API_KEY": MANAGEMENT_KEY})


def infer(url: str, model: str, version: int | str | None = None, headers: dict | None = None) -> requests.Response:
    route = f"{model}/versions/{version}" if version else model
    return requests.post(f"{url}/v2/models/{route}/infer", json=BODY, timeout=60,
                         headers=AS_INFERENCE if headers is None else headers)


def index(url: str) -> dict[tuple[str, str | None], tuple[str, str]]:
    rows = requests.post(f"{url}/v2/repository/index", timeout=30, headers=AS_MANAGEMENT).json()
    return {(r["name"], r.get("version")): (r["state"], r.get("reason", "")) for r in rows}


@pytest.fixture
def explicit_repository(example_repository: Path, tmp_path: Path) -> Path:
    from build_repository import FRAUD_CONFIG, build_fraud

    root = tmp_path / "repo"
    shutil.copytree(example_repository / "fraud", root / "fraud")
    (root / "spare").mkdir()
    (root / "spare" / "config.pbtxt").write_text(
        FRAUD_CONFIG.replace('name: "fraud"', 'name: "spare"').replace("latest { num_versions: 1 }", "all { }"))
    build_fraud(root / "spare" / "1", seed=11)
    build_fraud(root / "spare" / "2", seed=12)
    return root


def own_address() -> str | None:
    """This machine's address on its outward interface (no packet is sent), None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_explicit_mode_serves_only_what_the_api_loads(explicit_repository: Path, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "serve.log"
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({INFERENCE_KEY: "inference", MANAGEMENT_KEY: "management"}))
    with log.open("w") as out:
        process = subprocess.Popen(
            # tritonserver's spellings of the flags (ours are aliases: --repository, --port).
            [sys.executable, "-m", "deployments.launch.cli", "serve", "--model-repository", str(explicit_repository),
             "--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(metrics_port),
             "--model-control-mode", "explicit", "--load-model", "fraud", "--strict-model-config=false",
             "--log-verbose", "0", "--api-keys", str(keys)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "READY" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        text = log.read_text()
        assert f"{url}/v2/models/fraud/infer" in text and "Ray dashboard    http" in text
        assert "front door does not serve" not in text, text[-3000:]
        assert "API keys         2 (inference, management); open without a key: health, metrics, docs" in text
        assert index(url) == {("fraud", "1"): ("READY", ""), ("spare", None): ("UNAVAILABLE", "unloaded")}
        assert infer(url, "fraud").json()["model_version"] == "1"
        assert infer(url, "spare").status_code == 503
        check_api_keys(url)
        # Triton's metrics port: /metrics (open without a key, like the HTTP port's) and nothing else.
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
        assert metrics.status_code == 200 and "nv_inference_request_success" in metrics.text, metrics.text[:300]
        assert requests.get(f"http://127.0.0.1:{metrics_port}/v2/models/fraud", timeout=30,
                            headers=AS_INFERENCE).status_code == 404

        # A new version on disk changes nothing until the API says so.
        from build_repository import build_fraud

        build_fraud(explicit_repository / "fraud" / "2", seed=5)
        time.sleep(3)
        assert infer(url, "fraud").json()["model_version"] == "1"
        loaded = models_cli(url, "load", "fraud")
        assert loaded.returncode == 0, loaded.stderr
        assert infer(url, "fraud").json()["model_version"] == "2"

        # version_policy all: both versions, each addressable; unloading the newest rolls back.
        assert models_cli(url, "load", "spare").returncode == 0
        meta = requests.get(f"{url}/v2/models/spare", timeout=30, headers=AS_INFERENCE)
        assert meta.status_code == 200 and meta.json()["versions"] == ["2", "1"], meta.text
        assert infer(url, "spare", 1).json()["model_version"] == "1"
        assert infer(url, "spare").json()["model_version"] == "2"
        assert models_cli(url, "unload", "spare", "--version", "2").returncode == 0
        assert infer(url, "spare").json()["model_version"] == "1"
        assert infer(url, "spare", 2).status_code == 404

        # A config given to the load API replaces config.pbtxt (Triton's parameters.config), in
        # Triton's JSON mapping: camelCase names, int64 as strings or numbers.
        override = tmp_path / "spare.json"
        override.write_text(json.dumps({
            "name": "spare", "backend": "onnxruntime", "maxBatchSize": 8,
            "input": [{"name": "features", "dataType": "TYPE_FP32", "dims": ["16"]}],
            "output": [{"name": "fraud_probability", "dataType": "TYPE_FP32", "dims": [1]}],
            "versionPolicy": {"specific": {"versions": ["2"]}}}))
        assert models_cli(url, "load", "spare", "--config", str(override)).returncode == 0
        meta = requests.get(f"{url}/v2/models/spare", timeout=30, headers=AS_INFERENCE).json()
        assert meta["versions"] == ["2"] and meta["inputs"][0]["shape"] == [-1, 16]

        assert models_cli(url, "unload", "fraud").returncode == 0
        assert infer(url, "fraud").status_code == 503
        assert index(url)[("fraud", None)] == ("UNAVAILABLE", "unloaded")
        listed = models_cli(url, "list")
        assert listed.returncode == 0 and "spare" in listed.stdout and "READY" in listed.stdout

        missing = models_cli(url, "load", "nope")
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr
        bad = requests.post(f"{url}/v2/repository/models/spare/load",
                            json={"parameters": {"config": '{"max_batch_size": "many"}'}}, timeout=60,
                            headers=AS_MANAGEMENT)
        assert bad.status_code == 400 and "max_batch_size" in bad.json()["error"]
        assert infer(url, "spare").status_code == 200, "a bad load request leaves the served model alone"

        text = log.read_text() + ray_session_logs()
        assert INFERENCE_KEY not in text and MANAGEMENT_KEY not in text, "an API key reached a log"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def check_api_keys(url: str) -> None:
    """401 without or with an unknown key, 403 for the wrong role, open health/metrics/docs: the front
    door checks the key before it reads a body, for model and server paths alike."""
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": INFERENCE_KEY}):
        refused = infer(url, "fraud", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["WWW-Authenticate"].startswith("Bearer") and "key" in refused.json()["error"]
        assert requests.get(f"{url}/v2/models/fraud", headers=headers, timeout=30).status_code == 401
        assert requests.post(f"{url}/v2/repository/index", headers=headers, timeout=30).status_code == 401
        assert requests.get(f"{url}/v2", headers=headers, timeout=30).status_code == 401
    assert infer(url, "fraud", headers=AS_MANAGEMENT).status_code == 200  # management may infer
    assert requests.get(f"{url}/v2/models/fraud", headers=AS_INFERENCE, timeout=30).status_code == 200
    forbidden = requests.post(f"{url}/v2/repository/models/spare/load", headers=AS_INFERENCE, timeout=30)
    assert forbidden.status_code == 403 and "management" in forbidden.json()["error"]
    assert requests.post(f"{url}/v2/repository/index", headers=AS_INFERENCE, timeout=30).status_code == 403
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/fraud/ready", "/metrics", "/openapi.json",
                 "/v2/models/fraud/stats"):
        assert requests.get(f"{url}{path}", timeout=30).status_code == 200, path
    assert requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]["/v2/models/{model}/infer"]
    bad_name = requests.post(f"{url}/v2/repository/models/..%2F..%2Fetc/load", headers=AS_MANAGEMENT, timeout=30)
    assert bad_name.status_code in (400, 404), bad_name.text


def ray_session_logs() -> str:
    """Every log file of the Ray session this test's server started (the newest session)."""
    logs = Path("/tmp/ray/session_latest/logs")
    text = []
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 20_000_000:
            text.append(path.read_text(errors="replace"))
    return "\n".join(text)


def session_processes(session: int) -> list[str]:
    """Every process still in the session ``infergrid serve`` was started in (Ray's too), but zombies."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True)
    rows = [line.split(None, 3) for line in listing.stdout.splitlines()]
    return [" ".join(row) for row in rows if len(row) >= 3 and row[1] == str(session) and not row[2].startswith("Z")]


def start_server(repository: Path | list[Path], port: int, log: Path, *extra: str,
                 cwd: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    repositories = [a for r in (repository if isinstance(repository, list) else [repository])
                    for a in ("--model-repository", str(r))]
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "deployments.launch.cli", "serve", *repositories,
                                    "--port", str(port), "--grpc-port", "0", *extra],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
    deadline = time.monotonic() + 400
    while "READY" not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    # READY follows the front door's own answer for every model (it once waited out its timeout).
    assert "front door does not serve" not in log.read_text(), log.read_text()[-3000:]
    return process


def stop_server(process: subprocess.Popen, port: int, log: Path) -> None:
    """SIGTERM: the server exits 0, nothing of it is left, and the port is free again."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not session_processes(process.pid), session_processes(process.pid)
    with socket.socket() as probe:  # nothing listens any more ...
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket() as rebind:  # ... and the port can be bound again at once
        rebind.bind(("127.0.0.1", port))


def test_24_models_stop_cleanly_and_the_port_serves_again(example_repository: Path, tmp_path: Path) -> None:
    """One front door for 24 models; SIGTERM leaves no process behind, and a new server starts on
    the same port (a leftover listener used to make the next start fail: "cannot bind socket")."""
    from build_repository import FRAUD_CONFIG

    root = tmp_path / "many"
    for i in range(24):
        name = f"fraud{i:02d}"
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(FRAUD_CONFIG.replace('name: "fraud"', f'name: "{name}"'))
        shutil.copy(example_repository / "fraud" / "1" / "model.onnx", root / name / "1" / "model.onnx")
    base = tmp_path / "tf_base"  # TF Serving's layout: <base>/<version>/
    for version in (1, 2):
        (base / str(version)).mkdir(parents=True)
        shutil.copy(root / "fraud07" / "1" / "model.onnx", base / str(version) / "model.onnx")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Beside them TF Serving's one-model start (--model_name, --model_base_path: newest version).
    process = start_server(root, port, tmp_path / "first.log", "--model_name", "tfs", "--model_base_path", str(base))
    try:
        assert requests.get(f"{url}/v2/health/ready", timeout=60).status_code == 200
        for name in ("fraud00", "fraud23"):
            assert infer(url, name, headers={}).json()["model_name"] == name
        assert infer(url, "tfs", headers={}).json()["model_version"] == "2"
        stop_server(process, port, tmp_path / "first.log")
        # One model is enough to show the port serves again; two repositories (tritonserver's
        # repeated --model-repository) serve as one, a name in both from the first; and TF Serving's
        # --model_config_file beside them (its version policy and labels), on its REST port.
        again, other = tmp_path / "again", tmp_path / "other"
        shutil.copytree(root / "fraud07", again / "fraud07")
        shutil.copytree(root / "fraud08", other / "fraud08")
        (other / "fraud07").mkdir()  # a stray copy in the second repository: not served from there
        config_file = tmp_path / "models.config"
        config_file.write_text(f"""model_config_list {{ config {{
            name: 'tfs' base_path: '{base}' model_platform: 'tensorflow'
            model_version_policy {{ all {{ }} }}
            version_labels {{ key: 'stable' value: 1 }} version_labels {{ key: 'canary' value: 2 }} }} }}""")
        batching = tmp_path / "batching.txt"
        batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 50000 }\n"
                            "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n")
        monitoring = tmp_path / "monitoring.config"
        monitoring.write_text('prometheus_config { enable: true path: "/tf/metrics" }')
        rest_port, grpc_port, tf_grpc_port = free_port(), free_port(), free_port()
        process = start_server([again, other], port, tmp_path / "second.log", "--model_config_file", str(config_file),
                               "--rest_api_port", str(rest_port), "--grpc-port", str(grpc_port), "--enable_batching",
                               "--batching_parameters_file", str(batching), "--tf-grpc-port", str(tf_grpc_port),
                               "--model_config_file_poll_wait_seconds", "1", "--monitoring_config_file",
                               str(monitoring), "--enable_per_model_batching_parameters")
        assert infer(url, "fraud07", headers={}).status_code == 200
        assert infer(url, "fraud08", headers={}).json()["model_name"] == "fraud08"
        assert f"infergrid serving {again},{other},tfs={base}" in (tmp_path / "second.log").read_text()
        check_version_labels(url, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}")
        check_tf_grpc_labels(f"127.0.0.1:{tf_grpc_port}")
        check_tf_batching(url, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{tf_grpc_port}")
        tf_metrics = requests.get(f"http://127.0.0.1:{rest_port}/tf/metrics", timeout=30)  # --monitoring_config_file
        assert tf_metrics.status_code == 200 and 'nv_inference_exec_count{model="tfs"' in tf_metrics.text
        check_config_file_followed(url, config_file, base, tmp_path)
        stop_server(process, port, tmp_path / "second.log")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def check_version_labels(url: str, rest: str, grpc_url: str) -> None:
    """TF Serving's labels (stable -> 1, canary -> 2) address a version over TF REST, v2 HTTP and v2
    gRPC alike."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    assert client.is_model_ready("tfs", "canary") and not client.is_model_ready("tfs", "beta")
    features = grpcclient.InferInput("features", [1, 16], "FP32")
    features.set_data_from_numpy(np.zeros((1, 16), np.float32))
    answer = client.infer("tfs", [features], model_version="stable").get_response()
    assert answer.model_version == "1"
    client.close()
    tf_answer = requests.post(f"{rest}/v1/models/tfs/labels/canary:predict", timeout=60,
                              json={"instances": [BODY["inputs"][0]["data"]]})
    assert tf_answer.status_code == 200 and len(tf_answer.json()["predictions"]) == 1, tf_answer.text
    status = requests.get(f"{rest}/v1/models/tfs/labels/stable", timeout=60).json()
    assert [s["version"] for s in status["model_version_status"]] == ["1"], status
    assert requests.get(f"{rest}/v1/models/tfs", timeout=60).json()["model_version_status"][0]["version"] == "2"
    for label, version in (("stable", "1"), ("canary", "2")):
        assert infer(url, "tfs", label, headers={}).json()["model_version"] == version
    assert infer(url, "tfs", "beta", headers={}).status_code == 404
    unknown = requests.get(f"{rest}/v1/models/tfs/labels/beta", timeout=60)
    assert unknown.status_code == 404 and "beta" in unknown.json()["error"], unknown.text


def tf_predict_request(label: str | None = None, version: int | None = None):
    """A TF Serving ``PredictRequest`` for one row of tfs, built by TF Serving's own client modules."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tfs"
    if label:
        request.model_spec.version_label = label
    if version:
        request.model_spec.version.value = version
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 16), np.float32)))
    return request


def check_tf_grpc_labels(tf_grpc_url: str) -> None:
    """--tf-grpc-port: TF Serving's PredictionService and ModelService, a version by model_spec.version_label."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(tf_grpc_url) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for label, version in (("stable", 1), ("canary", 2)):
            assert stub.Predict(tf_predict_request(label), timeout=60).model_spec.version.value == version
        with pytest.raises(grpc.RpcError) as failure:
            stub.Predict(tf_predict_request("beta"), timeout=60)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND and "beta" in failure.value.details()
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "tfs", "version_label": "stable"}),
            timeout=60)
        assert [s.version for s in status.model_version_status] == [1]


def check_config_file_followed(url: str, config_file: Path, base: Path, tmp_path: Path) -> None:
    """--model_config_file_poll_wait_seconds: a rewritten config file moves the labels with no failed request
    and no new load, and serves a model it adds; a text that does not parse changes nothing; a model it no
    longer names goes."""
    import threading

    extra = tmp_path / "extra_base"
    shutil.copytree(base, extra)
    (extra / "2" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }")  # its SavedModel's own
    failures, answered, stop = [], set(), threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            answer = infer(url, "tfs", "stable", headers={})
            if answer.status_code != 200:
                failures.append(answer.text)
            else:
                answered.add(answer.json()["model_version"])

    loads_before = ray_session_logs().count("model tfs: loading version")
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(1)
        config_file.write_text(f"""model_config_list {{
            config {{ name: 'tfs' base_path: '{base}' model_version_policy {{ all {{ }} }}
                     version_labels {{ key: 'stable' value: 2 }} version_labels {{ key: 'canary' value: 1 }} }}
            config {{ name: 'tfs_extra' base_path: '{extra}' }} }}""")
        deadline = time.monotonic() + 120
        while "2" not in answered or infer(url, "tfs_extra", headers={}).status_code != 200:
            assert time.monotonic() < deadline, (answered, failures)
            time.sleep(0.5)
        time.sleep(1)
    finally:
        stop.set()
        sender.join()
    assert not failures, failures[:3]
    assert answered == {"1", "2"} and infer(url, "tfs", "canary", headers={}).json()["model_version"] == "1"
    assert ray_session_logs().count("model tfs: loading version") == loads_before  # labels moved, nothing loaded
    # --enable_per_model_batching_parameters: tfs_extra's batching_params.pbtxt, tfs the shared file's
    assert requests.get(f"{url}/v2/models/tfs_extra/config", timeout=60).json()["max_batch_size"] == 4
    assert requests.get(f"{url}/v2/models/tfs/config", timeout=60).json()["max_batch_size"] == 8
    config_file.write_text("model_config_list { config { name: 'tfs' bogus_field: 1 } }")
    deadline = time.monotonic() + 30
    while "still serving its last good config" not in ray_session_logs():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert infer(url, "tfs", "stable", headers={}).json()["model_version"] == "2"
    assert infer(url, "tfs_extra", headers={}).status_code == 200
    config_file.write_text(f"""model_config_list {{ config {{ name: 'tfs' base_path: '{base}'
        model_version_policy {{ all {{ }} }} version_labels {{ key: 'stable' value: 2 }} }} }}""")
    deadline = time.monotonic() + 60
    while infer(url, "tfs_extra", headers={}).status_code != 404:  # a model no longer named goes
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert infer(url, "tfs", "stable", headers={}).json()["model_version"] == "2"
    assert infer(url, "tfs", "canary", headers={}).status_code == 404  # a label no longer named


def check_tf_batching(url: str, rest: str, tf_grpc_url: str) -> None:
    """--enable_batching: tfs (no config.pbtxt of its own) combines concurrent :predict requests, REST and
    gRPC, into batches of up to max_batch_size rows, as its Triton statistics show."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(tf_grpc_url)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def predict(index: int) -> int:
        if index % 2:
            return 200 if stub.Predict(tf_predict_request(version=2), timeout=60).outputs else 500
        return requests.post(f"{rest}/v1/models/tfs/versions/2:predict", timeout=60,
                             json={"instances": [BODY["inputs"][0]["data"]]}).status_code

    with ThreadPoolExecutor(16) as pool, channel:
        assert set(pool.map(predict, range(48))) == {200}
    deadline, sizes = time.monotonic() + 15, set()
    while sum(sizes) < 2 and time.monotonic() < deadline:  # the statistics are reported each second
        time.sleep(0.5)
        stats = requests.get(f"{url}/v2/models/tfs/versions/2/stats", timeout=60).json()["model_stats"][0]
        sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    assert sizes and 1 < max(sizes) <= 8, stats["batch_stats"]
    config = requests.get(f"{url}/v2/models/tfs/config", timeout=60).json()
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["max_queue_delay_microseconds"] == 50000


def test_exit_on_error_stops_the_server_when_a_model_fails(tmp_path: Path) -> None:
    """tritonserver's --exit-on-error=true: a model that fails to load stops the server (exit 1),
    naming the model and the reason."""
    (tmp_path / "repo" / "broken").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "config.pbtxt").write_text('backend: "onnxruntime"\nmax_batch_size: "lots"\n')
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "deployments.launch.cli", "serve", "--model-repository", str(tmp_path / "repo"),
         "--http-port", str(free_port()), "--grpc-port", "0", "--metrics-port", "0", "--exit-on-error=true"],
        capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "broken failed to load" in done.stderr and "max_batch_size" in done.stderr, done.stderr[-2000:]
    assert "--exit-on-error=true: stopping" in done.stderr

