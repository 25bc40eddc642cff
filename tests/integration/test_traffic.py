"""Traffic policies on the shared cluster, under load: a 90/10 split over 10,000 requests lands within the
binomial 99.9% interval, weights changed ten times under load fail no request, a shadow's copies are
compared and counted, sticky keys keep their version (over HTTP and gRPC) and only the expected share
moves when weights change, a rollback restores the policy before, a promote (through the CLI) sends
everything to one version while the other stays addressable, a policy naming a missing version
changes nothing, and a guard trips on a candidate made to fail and sets its weight to 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from repository_helpers import BODY, ROW, config_for, wait_for, write_version

from bench.traffic import Traffic
from conftest import build_explodes

pytestmark = pytest.mark.integration

Z_999 = 3.29  # two-sided 99.9%


def _within(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= Z_999 * (n * p * (1 - p)) ** 0.5


def _policy(url: str, model: str, change: dict) -> requests.Response:
    return requests.post(f"{url}/v2/repository/models/{model}/traffic", json=change, timeout=120)


def _two_versions(url: str, new_model, name: str, seed: int) -> None:
    """A fraud copy ``name`` serving versions 1 and 2 (weights from ``seed`` and ``seed + 1``)."""
    model_dir = new_model(name, seed=seed, config=config_for(name, **{"num_versions: 1": "num_versions: 2"}))
    write_version(model_dir, 2, seed=seed + 1, atomic=True)
    wait_for(lambda: requests.post(f"{url}/v2/models/{name}/versions/2/infer", json=BODY, timeout=30).ok, 60,
             "version 2 to serve")


ENSEMBLE = """name: "sticky_ens" platform: "ensemble" max_batch_size: 64
input [ { name: "features" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "p" data_type: TYPE_FP32 dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "sticky" model_version: -1 input_map { key: "features" value: "features" }
                               output_map { key: "fraud_probability" value: "p" } } ] }
"""


def _ensemble_follows_the_member_policy(url: str, repository: Path, keys: list[str]) -> None:
    """An ensemble calling ``sticky`` gets, for each key, what the key's version of ``sticky`` answers."""
    folder = repository / "sticky_ens"
    folder.mkdir()
    (folder / "config.pbtxt").write_text(ENSEMBLE)
    try:
        wait_for(lambda: requests.post(f"{url}/v2/models/sticky_ens/infer", json=BODY, timeout=30).ok, 90,
                 "the ensemble to serve")
        with requests.Session() as session:
            for key in keys:
                direct = session.post(f"{url}/v2/models/sticky/infer", json=BODY, headers={"X-User-Id": key},
                                      timeout=30).json()["outputs"][0]["data"]
                composite = session.post(f"{url}/v2/models/sticky_ens/infer", json=BODY, headers={"X-User-Id": key},
                                         timeout=30).json()["outputs"][0]["data"]
                assert composite == direct, key
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        wait_for(lambda: requests.post(f"{url}/v2/models/sticky_ens/infer", json=BODY, timeout=30).status_code
                 == 404, 60, "the ensemble to be unloaded")


def _versions_by_key(url: str, model: str, keys: list[str]) -> list[str]:
    with requests.Session() as session:
        return [session.post(f"{url}/v2/models/{model}/infer", json=BODY, headers={"X-User-Id": key},
                             timeout=30).json()["model_version"] for key in keys]


def test_a_split_holds_its_proportions_and_changes_under_load_fail_nothing(served: dict, new_model) -> None:
    url = served["url"]
    _two_versions(url, new_model, "split", 1)
    bad = _policy(url, "split", {"policy": {"weights": {"1": 50, "9": 50}}})
    assert bad.status_code == 400 and "version 9" in bad.json()["error"], bad.text
    assert requests.get(f"{url}/v2/repository/models/split/traffic", timeout=30).json()["policy"] is None
    set_split = _policy(url, "split", {"policy": {"weights": {"1": 90, "2": 10}}})
    assert set_split.status_code == 200, set_split.text
    traffic = Traffic(f"{url}/v2/models/split/infer", BODY, connections=8).start()
    try:
        wait_for(lambda: len(traffic.replies) >= 10_000, 180, "10,000 replies")
    finally:
        replies = traffic.stop()
    assert all(r.status == 200 for r in replies), [r for r in replies if r.status != 200][:3]
    to_two = sum(1 for r in replies if r.version == "2")
    assert _within(to_two, len(replies), 0.10), (to_two, len(replies))
    # Ten changes of the weights under load: no request fails, each takes effect.
    traffic = Traffic(f"{url}/v2/models/split/infer", BODY, connections=8).start()
    try:
        for change in range(10):
            weights = {"1": 100 - 10 * change, "2": 10 * change} if change else {"1": 0, "2": 100}
            assert _policy(url, "split", {"policy": {"weights": weights}}).status_code == 200
            time.sleep(0.3)
    finally:
        replies = traffic.stop()
    assert len(replies) > 200 and all(r.status == 200 for r in replies), [r for r in replies if r.status != 200][:3]
    assert {r.version for r in replies} == {"1", "2"}
    # Shadow: every request copied to version 2, compared and counted; the client only ever sees version 1.
    shadowed = {"weights": {"1": 100, "2": 0}, "shadow": {"version": 2, "share": 1.0, "threshold": 0.5}}
    assert _policy(url, "split", {"policy": shadowed}).status_code == 200
    with requests.Session() as session:
        answers = [session.post(f"{url}/v2/models/split/infer", json=BODY, timeout=30) for _ in range(50)]
    assert {(a.status_code, a.json()["model_version"]) for a in answers} == {(200, "1")}

    def compared() -> float:
        text = requests.get(f"{url}/metrics", timeout=30).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(
            'infergrid_shadow_requests_total{') and 'model="split"' in line and 'outcome="compared"' in line)

    assert wait_for(lambda: compared() >= 50, 30, "50 shadow copies compared")
    # infergrid models compare: both versions' numbers and the shadow's agreement over a 3 s window.
    traffic = Traffic(f"{url}/v2/models/split/infer", BODY, connections=4).start()
    try:
        shown = subprocess.run([sys.executable, "-m", "deployments.launch.cli", "models", "compare", "split", "1", "2",
                                "--seconds", "3", "--url", url], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    finally:
        traffic.stop()
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["version", "qps", "errors", "p50", "ms", "p99", "ms"], shown.stdout
    assert float(lines[1].split()[1]) > 10 and lines[2].split()[0] == "2", shown.stdout
    assert lines[3].startswith("shadow 2 of 1:") and "agreement" in lines[3], shown.stdout


def test_sticky_keys_keep_their_version_and_rollback_restores(served: dict, new_model) -> None:
    import tritonclient.grpc as grpcclient

    url = served["url"]
    _two_versions(url, new_model, "sticky", 3)
    ninety = {"weights": {"1": 90, "2": 10}, "sticky": {"header": "x-user-id"}}
    assert _policy(url, "sticky", {"policy": ninety}).status_code == 200
    keys = [f"user-{i}" for i in range(400)]
    first = _versions_by_key(url, "sticky", keys)
    assert first == _versions_by_key(url, "sticky", keys)  # the same key, the same version
    assert _within(first.count("2"), len(keys), 0.10), first.count("2")
    client = grpcclient.InferenceServerClient(served["grpc"])
    inputs = [grpcclient.InferInput("features", [1, 16], "FP32")]
    inputs[0].set_data_from_numpy(ROW)
    over_grpc = [client.infer("sticky", inputs, headers={"x-user-id": key}).get_response().model_version
                 for key in keys[:40]]
    assert over_grpc == first[:40]  # gRPC metadata is the same key
    _ensemble_follows_the_member_policy(url, served["repository"], keys[:40])
    assert _policy(url, "sticky", {"policy": {**ninety, "weights": {"1": 50, "2": 50}}}).status_code == 200
    second = _versions_by_key(url, "sticky", keys)
    moved = [(a, b) for a, b in zip(first, second) if a != b]
    assert all(move == ("1", "2") for move in moved) and _within(len(moved), len(keys), 0.40), moved[:5]
    rolled = _policy(url, "sticky", {"rollback": True})
    assert rolled.status_code == 200 and rolled.json()["policy"] == ninety, rolled.text
    assert _versions_by_key(url, "sticky", keys) == first
    # Sticky on a v2 request parameter instead of a header.
    assert _policy(url, "sticky", {"policy": {"weights": {"1": 50, "2": 50}, "sticky": {"parameter": "user_id"}}}
                   ).status_code == 200

    def by_parameter(user: int) -> str:
        body = {**BODY, "parameters": {"user_id": user}}
        return requests.post(f"{url}/v2/models/sticky/infer", json=body, timeout=30).json()["model_version"]

    chosen = [by_parameter(user) for user in range(30)]
    assert chosen == [by_parameter(user) for user in range(30)] and set(chosen) == {"1", "2"}
    # The CLI: promote version 2; version 1 stays loaded and addressable by number.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    promoted = subprocess.run([sys.executable, "-m", "deployments.launch.cli", "models", "traffic", "sticky",
                               "--promote", "2", "--url", url], capture_output=True, text=True, env=env, timeout=120)
    assert promoted.returncode == 0, promoted.stderr
    assert set(_versions_by_key(url, "sticky", keys[:50])) == {"2"}
    one = requests.post(f"{url}/v2/models/sticky/versions/1/infer", json=BODY, timeout=30)
    assert one.status_code == 200 and one.json()["model_version"] == "1"
    assert np.isfinite(one.json()["outputs"][0]["data"][0])
    shown = subprocess.run([sys.executable, "-m", "deployments.launch.cli", "models", "traffic", "sticky", "--url",
                            url], capture_output=True, text=True, env=env, timeout=60)
    assert '"2": 100' in shown.stdout and '"1": 0' in shown.stdout, shown.stdout


def test_a_guard_sets_a_failing_candidate_to_weight_zero(served: dict) -> None:
    url, folder = served["url"], served["repository"] / "guarded"
    build_explodes(folder / "1", rows=-1)  # answers any batch
    build_explodes(folder / "2")  # fails every request of two rows: the candidate made to fail
    (folder / "config.pbtxt").write_text(
        'backend: "onnxruntime" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ] version_policy: { all { } }')
    two_rows = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}]}
    try:
        wait_for(lambda: requests.post(f"{url}/v2/models/guarded/versions/2/infer", json=two_rows,
                                       timeout=30).status_code == 500, 90, "both versions to serve")
        guard = {"window": 20, "max_error_rate": 0.05}
        assert _policy(url, "guarded", {"policy": {"weights": {"1": 50, "2": 50}, "guard": guard}}).status_code == 200
        with requests.Session() as session:
            statuses = [session.post(f"{url}/v2/models/guarded/infer", json=two_rows, timeout=30).status_code
                        for _ in range(200)]
        assert 0 < statuses.count(500) <= 25 and set(statuses[-100:]) == {200}, statuses
        shown = wait_for(lambda: (lambda t: t if t["policy"]["weights"] == {"1": 50, "2": 0} else None)(
            requests.get(f"{url}/v2/repository/models/guarded/traffic", timeout=30).json()), 30, "the trip recorded")
        assert shown["events"][-1]["event"] == "trip" and "error rate" in shown["events"][-1]["reason"]
        rows = requests.post(f"{url}/v2/repository/index", json={}, timeout=30).json()
        [row] = [r for r in rows if r["name"] == "guarded" and r.get("version") == "2"]
        assert row["state"] == "READY" and row["reason"].startswith("traffic guard tripped: error rate"), row
        assert wait_for(lambda: any(line.startswith("infergrid_traffic_guard_events_total{") and 'model="guarded"' in line
                                    and 'event="trip"' in line and line.endswith(" 1.0")
                                    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines()),
                        30, "the trip counted")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        wait_for(lambda: requests.post(f"{url}/v2/models/guarded/infer", json=two_rows, timeout=30).status_code
                 == 404, 60, "guarded to be unloaded")


SHADOWED_MODEL = '''
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        if {mode!r} == "fail":
            raise RuntimeError("this shadow always fails")
        time.sleep({delay})
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
'''


def test_a_slow_or_failing_shadow_leaves_the_primary_alone(served: dict) -> None:
    url, folder = served["url"], served["repository"] / "shadowed"
    for version, mode, delay in ((1, "ok", 0.0), (2, "ok", 0.6), (3, "fail", 0.0)):
        (folder / str(version)).mkdir(parents=True)
        (folder / str(version) / "model.py").write_text(SHADOWED_MODEL.format(mode=mode, delay=delay))
    (folder / "config.pbtxt").write_text(
        'backend: "python" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ] instance_group [ { kind: KIND_CPU } ] '
        'version_policy: { all { } }')
    row = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
    try:
        wait_for(lambda: requests.post(f"{url}/v2/models/shadowed/versions/3/infer", json=row,
                                       timeout=30).status_code == 500, 120, "the three versions to serve")
        for shadow in (2, 3):  # slow (0.6 s a batch), then failing
            policy = {"weights": {"1": 100}, "shadow": {"version": shadow, "share": 1.0, "timeout_ms": 2000}}
            assert _policy(url, "shadowed", {"policy": policy}).status_code == 200
            took, answers = [], []
            with requests.Session() as session:
                for _ in range(60):
                    started = time.monotonic()
                    answers.append(session.post(f"{url}/v2/models/shadowed/infer", json=row, timeout=30))
                    took.append(time.monotonic() - started)
            assert {(a.status_code, a.json()["model_version"]) for a in answers} == {(200, "1")}, shadow
            assert sorted(took)[int(0.99 * len(took)) - 1] < 0.45, (shadow, sorted(took)[-5:])  # never waited

        def outcomes() -> set[str]:
            return {line.split('outcome="')[1].split('"')[0] for line in requests.get(
                f"{url}/metrics", timeout=30).text.splitlines()
                if line.startswith("infergrid_shadow_requests_total{") and 'model="shadowed"' in line}

        assert wait_for(lambda: {"failed", "compared"} <= outcomes(), 30, "shadow outcomes counted")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        wait_for(lambda: requests.post(f"{url}/v2/models/shadowed/infer", json=row, timeout=30).status_code == 404,
                 60, "shadowed to be unloaded")
