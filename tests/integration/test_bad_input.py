"""Every kind of bad input gets its status and a message naming the field; serving goes on."""

from __future__ import annotations

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.integration

GOOD = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def fraud_input(**overrides: object) -> dict:
    return {"inputs": [{**GOOD["inputs"][0], **overrides}]}


CASES = [
    ("post", "/v2/models/fraud/infer", b"{oops", 400, "not valid JSON"),
    ("post", "/v2/models/fraud/infer", {"nothing": 1}, 400, "'inputs'"),
    ("post", "/v2/models/fraud/infer", fraud_input(shape=[1, 15], data=[0.5] * 15), 400, "input 'features': shape"),
    ("post", "/v2/models/fraud/infer", fraud_input(datatype="FP64"), 400, "input 'features': datatype FP64"),
    ("post", "/v2/models/fraud/infer", fraud_input(datatype="FLOAT"), 400, "unknown datatype"),
    ("post", "/v2/models/fraud/infer", fraud_input(data=[0.5] * 3), 400, "needs 16 elements"),
    ("post", "/v2/models/fraud/infer", fraud_input(data=["x"] * 16), 400, "must be numbers"),
    ("post", "/v2/models/fraud/infer", fraud_input(name="feats"), 400, "unknown input 'feats'"),
    ("post", "/v2/models/fraud/infer", fraud_input(shape=[65, 16], data=[0.1] * 1040), 400, "max_batch_size 64"),
    ("post", "/v2/models/fraud/infer", {**GOOD, "outputs": [{"name": "nope"}]}, 400, "unknown output 'nope'"),
    ("post", "/v2/models/nope/infer", GOOD, 404, "unknown model 'nope'"),
    ("post", "/v2/models/fraud/versions/7/infer", GOOD, 404, "no version '7'"),
    ("get", "/v2/models/fraud/infer", None, 405, "POST"),
    ("get", "/v2/models/fraud/whatever", None, 404, "no route"),
    ("post", "/v2/models/broken/infer", GOOD, 503, "broken/config.pbtxt:2:17"),
    ("post", "/v2/models/corrupt/infer", GOOD, 503, "corrupt"),
    ("post", "/v2/models/explodes/infer",
     {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}]}, 500, "model 'explodes'"),
]


@pytest.mark.parametrize("method, path, body, status, message", CASES, ids=[f"{c[3]}-{c[4][:24]}" for c in CASES])
def test_bad_input_status_and_message(url: str, method: str, path: str, body: object, status: int,
                                      message: str) -> None:
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = getattr(requests, method)(url + path, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    healthy = requests.post(f"{url}/v2/models/fraud/infer", json=GOOD, timeout=30)
    assert healthy.status_code == 200


def test_failing_batch_does_not_take_the_model_down(url: str) -> None:
    path = f"{url}/v2/models/explodes/infer"
    bad = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}]}
    good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
    assert requests.post(path, json=bad, timeout=30).status_code == 500
    response = requests.post(path, json=good, timeout=30)
    assert response.status_code == 200
    assert np.allclose(response.json()["outputs"][0]["data"], [1, 2, 3, 4])
