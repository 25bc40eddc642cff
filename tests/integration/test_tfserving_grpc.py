"""TF Serving's gRPC API through its own client stubs (``tensorflow-serving-api``) and ``tf.make_tensor_proto``:
Predict for models of every framework (answers equal to TensorFlow computing the SavedModel), metadata,
status, strings, versions, and TF Serving's status codes for bad requests (never INTERNAL)."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import requests
from repository_helpers import APPLICANTS, ROW, reload_tf_config

pytestmark = pytest.mark.integration

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture(scope="module")
def channel(served: dict):
    with grpc.insecure_channel(served["tf_grpc"]) as opened:
        yield opened


@pytest.fixture(scope="module")
def predictions(channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(model: str, inputs: dict, version: int | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict_matches_tensorflow_and_reads_as_tf_serving_clients_read(predictions, tf_credit_score) -> None:
    response = predictions.Predict(predict_request("credit_score", {"applicant": APPLICANTS}), timeout=30)
    assert response.model_spec.name == "credit_score" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    (name,) = response.outputs
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[name]), tf_credit_score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(response.outputs[name].float_val, tf_credit_score.ravel(), rtol=1e-5, atol=1e-6)


def test_typed_fields_and_versions(predictions, url: str) -> None:
    """float_val instead of tensor_content, a named version, output_filter on a model of two versions."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fraud2"
    request.model_spec.version.value = 1
    tensor = request.inputs["features"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=16)
    tensor.float_val.extend(ROW.ravel().tolist())
    request.output_filter.append("fraud_probability")
    response = predictions.Predict(request, timeout=30)
    assert response.model_spec.version.value == 1
    v2 = requests.post(f"{url}/v2/models/fraud2/versions/1/infer", timeout=30, json={"inputs": [
        {"name": "features", "shape": [1, 16], "datatype": "FP32", "data": ROW.ravel().tolist()}]}).json()
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["fraud_probability"]).ravel(),
                               v2["outputs"][0]["data"], rtol=1e-6)
    latest = predictions.Predict(predict_request("fraud2", {"features": ROW}), timeout=30)
    assert latest.model_spec.version.value == 2


def test_strings_through_a_pipeline(predictions, url: str) -> None:
    application = {"amount": 3800, "merchant_category": "crypto", "hour": 3, "account_age_days": 4,
                   "distance_km": 900, "transactions_24h": 14, "annual_income": 21000, "monthly_debt": 1400,
                   "credit_history_years": 1, "credit_utilization": 0.95, "late_payments": 5}
    inputs = {k: np.array([[v.encode()]], dtype=object) if isinstance(v, str) else np.array([[v]], np.float32)
              for k, v in application.items()}
    response = predictions.Predict(predict_request("loan_decision", inputs), timeout=60)
    plain = requests.post(f"{url}/pipelines/loan_decision", json=application, timeout=60).json()
    assert response.outputs["decision"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(response.outputs["decision"]).ravel()[0].decode() == plain["decision"]


def test_metadata_and_status(channel, predictions) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "fraud"  # an ONNX model: a serving_default signature all the same
    response = predictions.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    features = signatures.signature_def["serving_default"].inputs["features"]
    assert features.dtype == tf.float32.as_datatype_enum and [d.size for d in features.tensor_shape.dim] == [-1, 16]
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fraud2"}),
                                   timeout=30)
    state = get_model_status_pb2.ModelVersionStatus.State.Name
    assert [(s.version, state(s.state)) for s in status.model_version_status] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    broken = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "corrupt"}),
                                   timeout=30)
    (row,) = broken.model_version_status
    assert state(row.state) == "END" and "model.onnx" in row.status.error_message


def _bad_predicts() -> list:
    unknown_input = predict_request("credit_score", {"applicant": APPLICANTS, "extra": APPLICANTS})
    wrong_signature = predict_request("credit_score", {"applicant": APPLICANTS})
    wrong_signature.model_spec.signature_name = "nope"
    short = predict_request("credit_score", {"applicant": APPLICANTS})
    short.inputs["applicant"].tensor_content = short.inputs["applicant"].tensor_content[:-4]
    return [
        (predict_request("credit_score", {"applicant": APPLICANTS.astype(np.float64)}), "INVALID_ARGUMENT",
         "DT_DOUBLE"),
        (unknown_input, "INVALID_ARGUMENT", "extra"),
        (wrong_signature, "INVALID_ARGUMENT", "nope"),
        (short, "INVALID_ARGUMENT", "tensor_content"),
        (predict_request("credit_score", {"applicant": APPLICANTS[:, :3]}), "INVALID_ARGUMENT", "applicant"),
        (predict_request("nothing_here", {"x": APPLICANTS}), "NOT_FOUND", "nothing_here"),
        (predict_request("credit_score", {"applicant": APPLICANTS}, version=9), "NOT_FOUND", "9"),
    ]


@pytest.mark.parametrize("index", range(7))
def test_bad_requests_get_tf_serving_codes(predictions, index: int) -> None:
    request, code, message = _bad_predicts()[index]
    with pytest.raises(grpc.RpcError) as failure:
        predictions.Predict(request, timeout=30)
    assert failure.value.code().name == code and message in failure.value.details(), failure.value.details()


def test_unserved_calls_say_why(predictions) -> None:
    no_field = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "fraud"})
    with pytest.raises(grpc.RpcError) as failure:
        predictions.GetModelMetadata(no_field, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata_field" in failure.value.details()
    classify = classification_pb2.ClassificationRequest(model_spec={"name": "credit_score"})
    with pytest.raises(grpc.RpcError) as failure:
        predictions.Classify(classify, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "example_list" in failure.value.details()
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    with pytest.raises(grpc.RpcError) as failure:  # its serving_default predicts
        predictions.Classify(classify, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a classify signature" in \
        failure.value.details()
    answer = predictions.Predict(predict_request("credit_score", {"applicant": APPLICANTS}), timeout=30)
    assert len(answer.outputs) == 1  # the replica still answers


def test_a_config_reload_serves_exactly_its_models(channel, served: dict, tmp_path) -> None:
    """ModelService.HandleReloadConfigRequest: a model it names is served (its policy and labels too) when
    the call returns, labels move with a second reload, a bad config changes nothing, and an empty list
    leaves only the repository's own models."""
    from build_repository import build_fraud

    base = tmp_path / "reloaded"
    build_fraud(base / "1", seed=4)
    build_fraud(base / "2", seed=5)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    rest = served["rest"]
    labelled = f"""model_config_list {{ config {{ name: 'tf_reloaded' base_path: '{base}'
        model_version_policy {{ all {{ }} }} version_labels {{ key: 'stable' value: %d }} }} }}"""
    try:
        reload_tf_config(models, labelled % 1)
        answer = requests.post(f"{rest}/v1/models/tf_reloaded/labels/stable:predict", json={"instances": ROW.tolist()},
                               timeout=30)
        assert answer.status_code == 200, answer.text
        status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "tf_reloaded", "version_label": "stable"}), timeout=30)
        assert [s.version for s in status.model_version_status] == [1]
        reload_tf_config(models, labelled % 2)
        status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "tf_reloaded", "version_label": "stable"}), timeout=30)
        assert [s.version for s in status.model_version_status] == [2]
        missing = f"model_config_list {{ config {{ name: 'x' base_path: '{tmp_path}/none' }} }}"
        for bad, field in ((missing, "base_path"),
                           ("model_config_list { config { name: 'x' base_path: 'relative/x' } }", "relative"),
                           ("model_config_list { config { name: 'bad name!' base_path: '/x' } }", "name")):
            with pytest.raises(grpc.RpcError) as failure:
                reload_tf_config(models, bad)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in failure.value.details()
        assert requests.get(f"{rest}/v1/models/tf_reloaded/labels/stable", timeout=30).status_code == 200
    finally:
        reload_tf_config(models, "model_config_list { }")
    deadline = time.monotonic() + 60
    while requests.get(f"{rest}/v1/models/tf_reloaded", timeout=30).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert requests.post(f"{rest}/v1/models/fraud:predict", json={"instances": ROW.tolist()}, timeout=30).ok


def _warmup_file(version_dir, features: np.ndarray) -> None:
    """assets.extra/tf_serving_warmup_requests as TF Serving's guide writes it (tf.io.TFRecordWriter)."""
    from tensorflow_serving.apis import prediction_log_pb2

    request = predict_request("any", {"features": features})
    (version_dir / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(version_dir / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for _ in range(3):
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())


def test_savedmodel_warmup_records_run_before_a_version_serves(channel, served: dict, tmp_path) -> None:
    """A version whose warm-up records run is served; one whose records fail in the model never serves,
    and the reload says why, naming the record."""
    from build_repository import build_fraud

    good, bad = tmp_path / "warm_good", tmp_path / "warm_bad"
    build_fraud(good / "1", seed=6)
    build_fraud(bad / "1", seed=7)
    _warmup_file(good / "1", ROW.astype(np.float32))
    _warmup_file(bad / "1", np.zeros((1, 5), np.float32))  # 5 features where the model takes 16
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    try:
        with pytest.raises(grpc.RpcError) as failure:
            reload_tf_config(models, f"""model_config_list {{ config {{ name: 'warm_good' base_path: '{good}' }}
                                                      config {{ name: 'warm_bad' base_path: '{bad}' }} }}""")
        assert "could not load warm_bad" in failure.value.details(), failure.value.details()
        assert "tf_serving_warmup_requests[0]" in failure.value.details(), failure.value.details()
        assert "warm_good" not in failure.value.details().split("could not load")[1]
        answer = requests.post(f"{served['rest']}/v1/models/warm_good:predict", json={"instances": ROW.tolist()},
                               timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        reload_tf_config(models, "model_config_list { }")
