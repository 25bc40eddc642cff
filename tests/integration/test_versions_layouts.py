"""Several kept versions (unversioned = newest), and models served without any config.pbtxt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.integration

ROWS = np.random.default_rng(20).standard_normal((2, 16)).astype(np.float32)


def direct(path: Path) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(None, {"features": ROWS})[0]


def infer(url: str, route: str) -> dict:
    body = {"inputs": [{"name": "features", "shape": [2, 16], "datatype": "FP32", "data": ROWS.tolist()}]}
    response = requests.post(f"{url}/v2/models/{route}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_unversioned_goes_to_newest_and_each_version_is_addressable(url: str, served: dict) -> None:
    repo = served["repository"]
    v1, v2 = direct(repo / "fraud2/1/model.onnx"), direct(repo / "fraud2/2/model.onnx")
    assert not np.allclose(v1, v2)  # the versions really differ
    newest = infer(url, "fraud2")
    assert newest["model_version"] == "2"
    np.testing.assert_allclose(np.array(newest["outputs"][0]["data"]).reshape(2, 1), v2, rtol=1e-5)
    older = infer(url, "fraud2/versions/1")
    assert older["model_version"] == "1"
    np.testing.assert_allclose(np.array(older["outputs"][0]["data"]).reshape(2, 1), v1, rtol=1e-5)
    meta = requests.get(f"{url}/v2/models/fraud2", timeout=10).json()
    assert meta["versions"] == ["2", "1"]
    assert requests.get(f"{url}/v2/models/fraud2/versions/1", timeout=10).json()["versions"] == ["1"]


@pytest.mark.parametrize("model, file", [("bare_onnx", "bare_onnx/model.onnx"),
                                         ("tfserving_layout", "tfserving_layout/1/model.onnx")])
def test_models_without_config_take_their_signature_from_the_model(url: str, served: dict, model: str,
                                                                    file: str) -> None:
    meta = requests.get(f"{url}/v2/models/{model}", timeout=10).json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    result = infer(url, model)
    np.testing.assert_allclose(np.array(result["outputs"][0]["data"]).reshape(2, 1),
                               direct(served["repository"] / file), rtol=1e-5)
