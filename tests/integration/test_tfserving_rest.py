"""TF Serving's REST API over plain HTTP, for models of every framework: status, metadata, ``:predict``
in row and columnar form, answers equal to TensorFlow computing the SavedModel directly, and TF
Serving-shaped errors (never a 500 for a bad body)."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
import requests
from repository_helpers import APPLICANTS, BODY, ROW, wait_for

pytestmark = pytest.mark.integration


def test_status_lists_versions_in_tf_servings_states(url: str) -> None:
    status = requests.get(f"{url}/v1/models/fraud2", timeout=30).json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "AVAILABLE")]
    assert status[0]["status"] == {"error_code": "OK", "error_message": ""}
    one = requests.get(f"{url}/v1/models/fraud2/versions/1", timeout=30).json()["model_version_status"]
    assert [s["version"] for s in one] == ["1"]
    broken = requests.get(f"{url}/v1/models/corrupt", timeout=30)  # its only version failed to load
    assert broken.status_code == 200, broken.text
    (row,) = broken.json()["model_version_status"]
    assert row["state"] == "END" and row["status"]["error_code"] == "UNKNOWN"
    assert "model.onnx" in row["status"]["error_message"]


def test_metadata_gives_a_serving_default_signature_for_any_framework(url: str) -> None:
    meta = requests.get(f"{url}/v1/models/fraud/metadata", timeout=30).json()  # an ONNX model
    assert meta["model_spec"] == {"name": "fraud", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    features = signature["inputs"]["features"]
    assert features["dtype"] == "DT_FLOAT" and [d["size"] for d in features["tensor_shape"]["dim"]] == ["-1", "16"]
    assert set(signature["outputs"]) == {"fraud_probability"}


def test_predict_row_and_columnar_match_tensorflow(url: str, tf_credit_score: np.ndarray) -> None:
    rows = requests.post(f"{url}/v1/models/credit_score:predict", json={"instances": APPLICANTS.tolist()}, timeout=30)
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose(np.array(rows.json()["predictions"]), tf_credit_score, rtol=1e-5, atol=1e-6)
    columns = requests.post(f"{url}/v1/models/credit_score/versions/1:predict",
                            json={"signature_name": "serving_default", "inputs": {"applicant": APPLICANTS.tolist()}},
                            timeout=30)
    assert columns.status_code == 200, columns.text
    np.testing.assert_allclose(np.array(columns.json()["outputs"]), tf_credit_score, rtol=1e-5, atol=1e-6)


def test_predict_on_an_ensemble_with_named_instances(url: str) -> None:
    """Several inputs and outputs: each instance and each prediction is an object."""
    instances = [{"transaction": ROW[0].tolist(), "applicant": a.tolist()} for a in APPLICANTS]
    answer = requests.post(f"{url}/v1/models/risk_ensemble:predict", json={"instances": instances}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 3 and set(predictions[0]) == {"fraud_probability", "credit_score"}
    v2 = requests.post(f"{url}/v2/models/risk_ensemble/infer", timeout=60, json={"inputs": [
        {"name": "transaction", "shape": [3, 16], "datatype": "FP32", "data": np.repeat(ROW, 3, 0).ravel().tolist()},
        {"name": "applicant", "shape": [3, 8], "datatype": "FP32", "data": APPLICANTS.ravel().tolist()}]}).json()
    scores = next(o["data"] for o in v2["outputs"] if o["name"] == "credit_score")
    np.testing.assert_allclose([p["credit_score"][0] for p in predictions], scores, rtol=1e-6)


def test_b64_strings_in_and_strings_out_through_a_pipeline(url: str) -> None:
    """DT_STRING inputs as {"b64": ...} and as text; string outputs come back as text."""
    application = {"amount": 3800, "merchant_category": "crypto", "hour": 3, "account_age_days": 4,
                   "distance_km": 900, "transactions_24h": 14, "annual_income": 21000, "monthly_debt": 1400,
                   "credit_history_years": 1, "credit_utilization": 0.95, "late_payments": 5}
    instance = {k: [{"b64": base64.b64encode(v.encode()).decode()}] if isinstance(v, str) else [float(v)]
                for k, v in application.items()}
    answer = requests.post(f"{url}/v1/models/loan_decision:predict", json={"instances": [instance]}, timeout=60)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    plain = requests.post(f"{url}/pipelines/loan_decision", json=application, timeout=60).json()
    assert prediction["decision"] == [plain["decision"]] and isinstance(prediction["reasons"][0], str)
    as_text = dict(instance, merchant_category=["crypto"])  # a plain string is a DT_STRING value too
    again = requests.post(f"{url}/v1/models/loan_decision:predict", json={"instances": [as_text]}, timeout=60)
    assert again.json()["predictions"][0]["decision"] == prediction["decision"]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("credit_score:predict", {"instances": [[1.0, 2.0]]}, 400, "applicant"),
    ("credit_score:predict", {"instances": [[1] * 8], "inputs": [[1] * 8]}, 400, "Not allowed to have both"),
    ("credit_score:predict", {"rows": []}, 400, "Missing 'inputs' or 'instances' key"),
    ("credit_score:predict", {"instances": [["x"] * 8]}, 400, "expects DT_FLOAT"),
    ("credit_score:predict", {"signature_name": "nope", "instances": [[1] * 8]}, 400, "not found in signature def"),
    ("credit_score:classify", {"examples": []}, 400, "'examples' is empty"),
    ("credit_score:regress", {"examples": [{"x": 1.0}]}, 400, "not a regress signature"),
    ("nothing_here:predict", {"instances": [[1]]}, 404, "nothing_here"),
    ("credit_score/versions/9:predict", {"instances": [[1] * 8]}, 404, "9"),
])
def test_bad_requests_get_tf_serving_errors(url: str, path: str, body: dict, status: int, message: str) -> None:
    answer = requests.post(f"{url}/v1/models/{path}", json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"], answer.text


def test_the_rest_api_port_serves_v1_only(served: dict) -> None:
    rest = served["rest"]
    answer = requests.post(f"{rest}/v1/models/fraud:predict", json={"instances": ROW.tolist()}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1, answer.text
    assert requests.get(f"{rest}/v2/models/fraud", timeout=30).status_code == 404


def test_the_rest_api_port_serves_prometheus_text_at_the_monitoring_path(served: dict) -> None:
    """TF Serving's --monitoring_config_file path on its REST port: the numbers /metrics has, this model's
    predict counted; /metrics itself is not on that port."""
    rest = served["rest"]
    assert requests.post(f"{rest}/v1/models/fraud:predict", json={"instances": ROW.tolist()}, timeout=30).ok
    deadline = time.monotonic() + 20  # replicas report their numbers every second
    while True:
        answer = requests.get(served["tf_metrics"], timeout=30)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain"), answer.text
        counted = [line for line in answer.text.splitlines()
                   if line.startswith('nv_inference_request_success{model="fraud"')]
        if counted and float(counted[0].split()[-1]) >= 1:
            break
        assert time.monotonic() < deadline, answer.text[:2000]
        time.sleep(0.5)
    assert requests.get(f"{rest}/metrics", timeout=30).status_code == 404
    assert requests.get(f"{served['url']}/monitoring/prometheus/metrics", timeout=30).status_code == 404


def test_version_labels_set_through_the_repository_api_move_with_no_failed_request(served: dict) -> None:
    """PUT /v2/repository/models/{m}/labels: labels name served versions, are addressable at once in v2 and
    TF Serving paths, move under traffic with no failed request, and bad ones change nothing."""
    import threading

    url = served["url"]
    labels_url = f"{url}/v2/repository/models/fraud2/labels"

    def labelled(label: str) -> requests.Response:
        return requests.post(f"{url}/v2/models/fraud2/versions/{label}/infer", json=BODY, timeout=30)

    assert requests.put(labels_url, json={"version_labels": {}}, timeout=60).ok  # whatever an earlier test set
    assert requests.get(labels_url, timeout=30).json() == {"version_labels": {}}
    answer = requests.put(labels_url, json={"version_labels": {"stable": 1}}, timeout=60)
    assert answer.status_code == 200 and answer.json() == {"version_labels": {"stable": 1}}, answer.text
    wait_for(lambda: labelled("stable").status_code == 200, 20, "label stable served")
    failures, answered, stop = [], set(), threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            reply = labelled("stable")
            (answered.add(reply.json()["model_version"]) if reply.ok else failures.append(reply.text))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.5)
        assert requests.put(labels_url, json={"version_labels": {"stable": 2, "canary": 1}}, timeout=60).ok
        wait_for(lambda: "2" in answered, 20, "stable moved to 2")
        time.sleep(0.5)
    finally:
        stop.set()
        sender.join()
    assert not failures and answered == {"1", "2"}, (failures[:3], answered)
    tf_answer = requests.post(f"{served['rest']}/v1/models/fraud2/labels/canary:predict",
                              json={"instances": ROW.tolist()}, timeout=30)
    assert tf_answer.status_code == 200, tf_answer.text
    for body, message in (({"version_labels": {"stable": 9}}, "names version 9, which does not serve"),
                          ({"version_labels": {"7": 1}}, "is not a label"), ({"version_labels": [1]}, "JSON object")):
        refused = requests.put(labels_url, json=body, timeout=60)
        assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    assert requests.get(labels_url, timeout=30).json() == {"version_labels": {"canary": 1, "stable": 2}}
    assert requests.put(labels_url, json={"version_labels": {}}, timeout=60).ok
    wait_for(lambda: labelled("stable").status_code == 404, 20, "label stable gone")
    assert requests.put(f"{url}/v2/repository/models/nothing_here/labels", json={"version_labels": {}},
                        timeout=60).status_code == 404
