"""Ensembles and pipelines on the session's cluster: the example risk_ensemble and loan_decision,
and composites each test adds to the served repository (and removes after).

Expected answers always come from calling the members by hand over HTTP, so every check compares
the composite with what a client would compute on its own.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from ray import serve
from repository_helpers import index_rows, output_of, wait_for, write_version

from bench.traffic import Traffic
from pipelines.loan_decision import credit_features, decide, fraud_features, records_to_tensors

pytestmark = pytest.mark.integration

APPLICATIONS = [
    {"amount": 42.5, "merchant_category": "grocery", "hour": 18, "account_age_days": 2900, "distance_km": 3,
     "transactions_24h": 2, "annual_income": 85000, "monthly_debt": 900, "credit_history_years": 14,
     "credit_utilization": 0.12, "late_payments": 0},
    {"amount": 3800, "merchant_category": "crypto", "hour": 3, "account_age_days": 4, "distance_km": 900,
     "transactions_24h": 14, "annual_income": 21000, "monthly_debt": 1400, "credit_history_years": 1,
     "credit_utilization": 0.95, "late_payments": 5},
    {"amount": 640, "merchant_category": "electronics", "account_age_days": 400, "annual_income": 48000},
]


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def v2_infer(url: str, model: str, tensors: dict[str, np.ndarray]) -> requests.Response:
    body = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "FP32", "data": a.ravel().tolist()}
                       for n, a in tensors.items()]}
    return requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)


def member_output(url: str, model: str, name: str, array: np.ndarray) -> np.ndarray:
    """What a client gets calling one member itself."""
    response = v2_infer(url, model, {name: array})
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def ensemble_config(name: str, steps: list[tuple[str, str, str, str, str]], inputs: dict[str, int],
                    outputs: dict[str, int], max_batch_size: int = 64) -> str:
    """A config.pbtxt for an ensemble; steps are (member, member input, tensor in, member output, tensor out)."""
    def tensors(spec: dict[str, int]) -> str:
        return ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ {d} ] }}' for n, d in spec.items())
    body = ",\n".join(f'{{ model_name: "{m}" model_version: -1 input_map {{ key: "{mi}" value: "{ti}" }} '
                      f'output_map {{ key: "{mo}" value: "{to}" }} }}' for m, mi, ti, mo, to in steps)
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
            f"input [ {tensors(inputs)} ]\noutput [ {tensors(outputs)} ]\n"
            f"ensemble_scheduling {{ step [\n{body}\n] }}\n")


@pytest.fixture
def new_composite(served: dict) -> Iterator[Callable[..., Path]]:
    """Add an ensemble or pipeline folder; wait until it serves (or, ``fails``, until the index has
    its reason). Removed after, and its application checked gone."""
    url, repository = served["url"], served["repository"]
    created: list[Path] = []

    def add(name: str, config: str, fails: bool = False) -> Path:
        folder = repository / name
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(config)
        created.append(folder)
        if fails:
            wait_for(lambda: any(row.get("reason") for row in index_rows(url, name)), 60, f"{name}'s failure")
        else:
            wait_for(lambda: requests.get(f"{url}/v2/models/{name}/ready", timeout=30).status_code == 200,
                     90, f"{name} to serve")
            time.sleep(2)  # Serve reloads HAProxy for the new route (see the hot-swap tests)
        return folder

    yield add
    for folder in created:
        shutil.rmtree(folder)
    for folder in created:
        wait_for(lambda folder=folder: folder.name not in serve.status().applications, 60,
                 f"{folder.name}'s application to be deleted")


def test_risk_ensemble_through_tritonclient_equals_its_members(url: str) -> None:
    rng = np.random.default_rng(40)
    transaction = rng.standard_normal((3, 16)).astype(np.float32)
    applicant = rng.standard_normal((3, 8)).astype(np.float32)
    c = client(url)
    assert c.is_model_ready("risk_ensemble")
    meta = c.get_model_metadata("risk_ensemble")
    assert meta["platform"] == "ensemble" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["transaction", "applicant"]
    assert [o["name"] for o in meta["outputs"]] == ["fraud_probability", "credit_score"]
    for binary in (True, False):
        inputs = []
        for name, array in (("transaction", transaction), ("applicant", applicant)):
            item = triton.InferInput(name, list(array.shape), "FP32")
            item.set_data_from_numpy(array, binary_data=binary)
            inputs.append(item)
        result = c.infer("risk_ensemble", inputs)
        np.testing.assert_allclose(result.as_numpy("fraud_probability"),
                                   member_output(url, "fraud", "features", transaction), rtol=1e-6)
        np.testing.assert_allclose(result.as_numpy("credit_score"),
                                   member_output(url, "credit_score", "applicant", applicant), rtol=1e-5)
    one = c.infer("risk_ensemble", inputs, outputs=[triton.InferRequestedOutput("credit_score")])
    assert [o["name"] for o in one.get_response()["outputs"]] == ["credit_score"]


def by_hand(url: str, records: list[dict]) -> list[dict]:
    """The loan decision a client computes itself: same features, both members, same rule."""
    columns, _ = records_to_tensors({"applications": records})
    fraud = member_output(url, "fraud", "features", fraud_features(columns)).reshape(-1)
    credit = member_output(url, "credit_score", "applicant", credit_features(columns)).reshape(-1)
    return [decide(float(f), float(s)).to_json() for f, s in zip(fraud, credit, strict=True)]


def test_loan_decision_json_route_equals_the_members_by_hand(url: str) -> None:
    expected = by_hand(url, APPLICATIONS)
    assert {d["decision"] for d in expected} >= {"approve", "decline"}  # the examples exercise the rule
    response = requests.post(f"{url}/pipelines/loan_decision", json={"applications": APPLICATIONS}, timeout=60)
    assert response.status_code == 200, response.text
    got = response.json()["decisions"]
    assert [d["decision"] for d in got] == [d["decision"] for d in expected]
    assert [d["reasons"] for d in got] == [d["reasons"] for d in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["fraud_probability"] == pytest.approx(theirs["fraud_probability"], abs=1e-5)
        assert mine["credit_score"] == pytest.approx(theirs["credit_score"], rel=1e-5)
    single = requests.post(f"{url}/pipelines/loan_decision", json=APPLICATIONS[0], timeout=60)
    assert single.status_code == 200 and single.json()["decision"] == expected[0]["decision"]
    # One hop shorter: the same JSON POSTed to the model's own path reaches the pipeline directly.
    direct = requests.post(f"{url}/v2/models/loan_decision", json={"applications": APPLICATIONS}, timeout=60)
    assert direct.status_code == 200 and direct.json() == response.json()


def test_loan_decision_v2_endpoint_through_tritonclient(url: str) -> None:
    expected = by_hand(url, APPLICATIONS)
    columns, _ = records_to_tensors({"applications": APPLICATIONS})
    inputs = []
    for name, array in columns.items():
        item = triton.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "FP32")
        item.set_data_from_numpy(array)
        inputs.append(item)
    result = client(url).infer("loan_decision", inputs)
    assert [d.decode() for d in result.as_numpy("decision").ravel()] == [d["decision"] for d in expected]
    assert [r.decode() for r in result.as_numpy("reasons").ravel()] == ["; ".join(d["reasons"]) for d in expected]
    np.testing.assert_allclose(result.as_numpy("fraud_probability").ravel(),
                               [d["fraud_probability"] for d in expected], atol=1e-5)


@pytest.mark.parametrize("body, status, words", [
    ({"inputs": [{"name": "transaction", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]},
     400, "applicant"),
    ({"inputs": [{"name": "transaction", "shape": [1, 15], "datatype": "FP32", "data": [0.0] * 15},
                 {"name": "applicant", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]}, 400, "transaction"),
    ({"inputs": [{"name": "transaction", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16},
                 {"name": "applicant", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]}, 400, "transaction"),
    ({"inputs": [{"name": "transaction", "shape": [65, 16], "datatype": "FP32", "data": [0.0] * 16 * 65},
                 {"name": "applicant", "shape": [65, 8], "datatype": "FP32", "data": [0.0] * 8 * 65}]}, 400, "64"),
])
def test_bad_ensemble_input_is_a_400_naming_the_ensemble_input(url: str, body: dict, status: int, words: str) -> None:
    response = requests.post(f"{url}/v2/models/risk_ensemble/infer", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_bad_pipeline_requests_name_the_field(url: str) -> None:
    record = {k: v for k, v in APPLICATIONS[0].items() if k != "annual_income"}
    response = requests.post(f"{url}/pipelines/loan_decision", json=record, timeout=30)
    assert response.status_code == 400 and "annual_income is required" in response.json()["error"]
    response = requests.post(f"{url}/pipelines/loan_decision", data=b"{not json", timeout=30)
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = requests.post(f"{url}/pipelines/risk_ensemble", json=APPLICATIONS[0], timeout=30)
    assert response.status_code == 404 and "no plain JSON route" in response.json()["error"]
    response = requests.post(f"{url}/pipelines/fraud", json={}, timeout=30)
    assert response.status_code == 404 and "not an ensemble or pipeline" in response.json()["error"]
    response = requests.post(f"{url}/pipelines/nothing_here", json={}, timeout=30)
    assert response.status_code == 404
    # The pipeline and its members still serve.
    assert requests.post(f"{url}/pipelines/loan_decision", json=APPLICATIONS[0], timeout=30).status_code == 200


def test_member_failure_is_a_500_naming_step_and_member(url: str, new_composite: Callable[..., Path]) -> None:
    new_composite("explodes_pair", ensemble_config(
        "explodes_pair", [("fraud", "features", "t", "fraud_probability", "p"), ("explodes", "x", "e", "y", "y")],
        {"t": 16, "e": 4}, {"p": 1, "y": 4}, max_batch_size=4))
    one = {"t": np.zeros((1, 16), np.float32), "e": np.ones((1, 4), np.float32)}
    assert v2_infer(url, "explodes_pair", one).status_code == 200
    two = {"t": np.zeros((2, 16), np.float32), "e": np.ones((2, 4), np.float32)}
    response = v2_infer(url, "explodes_pair", two)
    assert response.status_code == 500, response.text
    assert "'explodes_pair' step 1 (explodes) failed" in response.json()["error"]
    assert v2_infer(url, "explodes_pair", one).status_code == 200  # nothing was taken down


def test_a_member_that_goes_away_is_a_fast_503_naming_the_step(url: str, new_model: Callable[..., Path],
                                                               new_composite: Callable[..., Path]) -> None:
    model_dir = new_model("gone_member", seed=41)
    new_composite("gone_pair", ensemble_config(
        "gone_pair", [("gone_member", "features", "t", "fraud_probability", "p")], {"t": 16}, {"p": 1}))
    row = {"t": np.zeros((1, 16), np.float32)}
    assert v2_infer(url, "gone_pair", row).status_code == 200
    shutil.rmtree(model_dir)
    wait_for(lambda: v2_infer(url, "gone_member", {"features": row["t"]}).status_code == 404, 60, "the member gone")
    start = time.perf_counter()
    response = v2_infer(url, "gone_pair", row)
    assert time.perf_counter() - start < 5, "a call to a removed member must not wait for it"
    assert response.status_code == 503, response.text
    assert "'gone_pair' step 0 (gone_member) failed" in response.json()["error"]
    # The controller reports why the ensemble cannot work any more, and keeps it deployed.
    wait_for(lambda: "missing member" in (index_rows(url, "gone_pair")[0].get("reason") or ""), 30, "the reason")


@pytest.mark.parametrize("name, config, words", [
    ("ens_missing", ensemble_config("ens_missing", [("no_such_model", "x", "IN", "y", "OUT")], {"IN": 4}, {"OUT": 4}),
     ("step[0].model_name", "missing member")),
    ("ens_cycle", ensemble_config("ens_cycle", [
        ("fraud", "features", "back", "fraud_probability", "mid"),
        ("fraud", "features", "mid", "fraud_probability", "back"),
        ("credit_score", "applicant", "IN", "credit_score", "OUT")], {"IN": 8}, {"OUT": 1}),
     ("cycle", "step 0 (fraud) -> step 1 (fraud) -> step 0 (fraud)")),
    ("ens_unmapped", ensemble_config("ens_unmapped", [("fraud", "features", "IN", "fraud_probability", "p")],
                                     {"IN": 16}, {"p": 1, "never": 1}),
     ("unmapped tensor", "'never'")),
    ("pipe_outside", 'name: "pipe_outside" backend: "python" max_batch_size: 8 '
                     'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ] '
                     'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ] '
                     'parameters { key: "pipeline" value: { string_value: "os:system" } }',
     ("parameters.pipeline", "outside the pipelines package")),
])
def test_bad_ensembles_are_rejected_at_load_with_the_reason(url: str, new_composite: Callable[..., Path],
                                                            name: str, config: str, words: tuple[str, ...]) -> None:
    new_composite(name, config, fails=True)
    reason = index_rows(url, name)[0]["reason"]
    assert f"{name}/config.pbtxt" in reason and all(w in reason for w in words), reason
    response = requests.post(f"{url}/v2/models/{name}/infer", json={"inputs": []}, timeout=30)
    assert response.status_code == 503 and words[-1] in response.json()["error"]
    assert name not in serve.status().applications  # nothing was deployed for it


def test_concurrent_ensemble_requests_form_member_batches(url: str, new_composite: Callable[..., Path],
                                                          run_async: Callable) -> None:
    # One replica of its own, so its counters (one replica's) cover every request sent here.
    new_composite("batch_pair", ensemble_config(
        "batch_pair", [("fraud", "features", "t", "fraud_probability", "p"),
                       ("credit_score", "applicant", "a", "credit_score", "s")], {"t": 16, "a": 8}, {"p": 1, "s": 1}))
    row = {"t": np.zeros((1, 16), np.float32), "a": np.zeros((1, 8), np.float32)}

    def burst(_: int) -> list[int]:
        return [v2_infer(url, "batch_pair", row).status_code for _ in range(15)]

    with ThreadPoolExecutor(32) as pool:
        statuses = [s for batch in pool.map(burst, range(32)) for s in batch]
    assert statuses == [200] * len(statuses)
    async def replica_stats() -> dict:
        return await serve.get_app_handle("batch_pair").stats.remote()

    members = run_async(replica_stats())["members"]
    for member in ("fraud", "credit_score"):
        stats = members[member]["1"]
        assert stats["rows"] == stats["requests"] == len(statuses), (member, stats)
        assert stats["batches"] < stats["rows"] and stats["max_rows"] > 1, (member, stats)  # requests were combined


def test_ensemble_latency_is_its_slowest_member_not_the_sum(url: str, new_model: Callable[..., Path],
                                                            new_composite: Callable[..., Path]) -> None:
    """Both members are slowed on purpose: each waits 0.6 s in its dynamic-batching queue (a lone
    request waits the whole max_queue_delay), with no CPU spent, so timings hold on a busy machine."""
    from repository_helpers import config_for

    slow = {"dynamic_batching { ": "dynamic_batching { max_queue_delay_microseconds: 600000"}
    new_model("slow_a", seed=21, config=config_for("slow_a", **slow))
    new_model("slow_b", seed=22, config=config_for("slow_b", **slow))
    new_composite("slow_pair", ensemble_config(
        "slow_pair", [("slow_a", "features", "t", "fraud_probability", "a"),
                      ("slow_b", "features", "t", "fraud_probability", "b")], {"t": 16}, {"a": 1, "b": 1}))
    row = {"features": np.zeros((1, 16), np.float32)}

    def timed(call: Callable[[], requests.Response]) -> float:
        start = time.perf_counter()
        response = call()
        assert response.status_code == 200, response.text
        return time.perf_counter() - start

    members, ensembles = [], []
    for _ in range(3):
        a = timed(lambda: v2_infer(url, "slow_a", row))
        b = timed(lambda: v2_infer(url, "slow_b", row))
        members.append((a, b))
        ensembles.append(timed(lambda: v2_infer(url, "slow_pair", {"t": row["features"]})))
    slowest = statistics.median(max(a, b) for a, b in members)
    total = statistics.median(a + b for a, b in members)
    ensemble = statistics.median(ensembles)
    assert slowest >= 0.6 and total >= 1.2, members  # the slowing works
    assert ensemble < 0.75 * total, (ensemble, members)  # in parallel: near the slowest, not the sum
    assert ensemble >= 0.95 * 0.6, ensemble  # and it did wait for both


def test_member_hot_swap_under_load_fails_no_ensemble_request(url: str, new_model: Callable[..., Path],
                                                             new_composite: Callable[..., Path]) -> None:
    model_dir = new_model("fraud_member", seed=31)
    v1 = output_of(model_dir / "1")
    new_composite("swap_pair", ensemble_config(
        "swap_pair", [("fraud_member", "features", "t", "fraud_probability", "p"),
                      ("credit_score", "applicant", "a", "credit_score", "s")], {"t": 16, "a": 8}, {"p": 1, "s": 1}))
    from repository_helpers import ROW

    body = {"inputs": [{"name": "t", "shape": [1, 16], "datatype": "FP32", "data": ROW.ravel().tolist()},
                       {"name": "a", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8}]}
    traffic = Traffic(f"{url}/v2/models/swap_pair/infer", body, connections=16).start()
    try:
        time.sleep(2)
        v2 = write_version(model_dir, 2, seed=32, atomic=True)
        assert abs(v2 - v1) > 1e-4
        first = wait_for(lambda: next((r for r in traffic.replies if r.value is not None
                                       and abs(r.value - v2) < 1e-5), None), 90, "an ensemble reply from version 2")
        time.sleep(2)
    finally:
        replies = traffic.stop()
    failed = [r for r in replies if r.status != 200]
    assert not failed, f"{len(failed)} of {len(replies)} ensemble requests failed, e.g. {failed[:3]}"
    assert len(replies) > 100
    for reply in replies:
        assert reply.value == pytest.approx(v1, abs=1e-5) or reply.value == pytest.approx(v2, abs=1e-5), reply
    after = [r for r in replies if r.sent > first.received]
    assert after and all(r.value == pytest.approx(v2, abs=1e-5) for r in after)  # the flip reached the ensemble
    wait_for(lambda: not any(n.startswith("fraud_member:v1") for n in serve.status().applications), 60,
             "version 1 to be removed")
    assert [row["version"] for row in index_rows(url, "fraud_member")] == ["2"]


def test_pipeline_runs_alone_with_serve_run(url: str, served: dict) -> None:
    """``serve run deployments.applications.ensembles:standalone_app``: the pipeline and its own copies
    of both members."""
    from deployments.applications.ensembles import standalone_app

    serve.run(standalone_app({"repository": str(served["repository"])}), name="loan_alone", route_prefix="/loan-alone",
              blocking=False)
    try:
        wait_for(lambda: serve.status().applications["loan_alone"].status == "RUNNING", 120, "loan_alone to run")
        expected = by_hand(url, APPLICATIONS)

        def answer() -> requests.Response | None:
            try:  # Serve's own proxy (serve run); the new route may not be in it yet
                response = requests.post(f"{served['serve_url']}/loan-alone", json={"applications": APPLICATIONS}, timeout=60)
            except requests.RequestException:
                return None
            return response if response.status_code == 200 else None

        got = wait_for(answer, 30, "the standalone pipeline's route").json()["decisions"]
        assert [d["decision"] for d in got] == [d["decision"] for d in expected]
        for mine, theirs in zip(got, expected, strict=True):
            assert mine["credit_score"] == pytest.approx(theirs["credit_score"], rel=1e-5)
    finally:
        serve.delete("loan_alone")
