"""Helpers for tests that change the served repository: fraud copies with known outputs, waiting."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from ray import serve

ROW = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16)
APPLICANTS = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(3, 8)  # credit_score's input, 3 rows
BODY = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": ROW.ravel().tolist()}]}


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def config_for(name: str, **changes: str) -> str:
    from build_repository import FRAUD_CONFIG

    text = FRAUD_CONFIG.replace('name: "fraud"', f'name: "{name}"')
    for old, new in changes.items():
        text = text.replace(old, new)
    return text


def output_of(version_dir: Path) -> float:
    import onnxruntime as ort

    return float(ort.InferenceSession(str(version_dir / "model.onnx")).run(None, {"features": ROW})[0][0, 0])


def write_version(model_dir: Path, version: int, seed: int, atomic: bool = False) -> float:
    """Write a fraud model with ``seed`` weights as ``version``; returns its expected output for ROW.

    Atomic: built in a hidden folder and renamed into place. Otherwise written where it lands, so the
    controller sees the folder before its file is complete.
    """
    from build_repository import build_fraud

    target = model_dir / str(version)
    build_into = model_dir / f".building-{version}" if atomic else target
    build_fraud(build_into, seed=seed)
    expected = output_of(build_into)
    if atomic:
        os.rename(build_into, target)
    return expected


def version_apps(model: str) -> set[str]:
    return {name for name in serve.status().applications if name.startswith(f"{model}:v")}


def index_rows(url: str, model: str) -> list[dict]:
    response = requests.post(f"{url}/v2/repository/index", timeout=30)
    assert response.status_code == 200, response.text
    return [row for row in response.json() if row["name"] == model]




def reload_tf_config(models_stub, text: str) -> None:
    """TF Serving's ModelService.HandleReloadConfigRequest with a ModelServerConfig in text format."""
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    assert models_stub.HandleReloadConfigRequest(request, timeout=240).status.error_code == 0
