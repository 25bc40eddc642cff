"""TF Serving's Classify and Regress on a SavedModel with classification and regression signatures (built
as TF Serving's guides build them, tf.compat.v1 signature defs over serialized tf.Example), over REST and
through the tensorflow-serving-api stubs: answers equal to TensorFlow running the signatures directly, and
TF Serving-shaped errors for the wrong signature or a bad body."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from repository_helpers import reload_tf_config

pytestmark = pytest.mark.integration

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

MODEL = "tf_examples"
WEIGHTS = np.array([[1.0, -1.0], [0.5, 0.5], [-2.0, 1.0]], np.float32)
ROWS = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]


def build_examples_model(path: Path) -> None:
    """serving_default: x -> y; classify and regress: serialized tf.Example with feature x (3 floats)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x = v1.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([3], tf.float32)})["x"]
        scores = tf.nn.softmax(tf.matmul(x, WEIGHTS))
        classes = tf.tile(tf.constant([["no", "yes"]]), [tf.shape(x)[0], 1])
        value = tf.reduce_sum(x * tf.constant([0.1, 0.2, 0.3]), axis=1, keepdims=True)
        raw = v1.placeholder(tf.float32, [None, 3], name="x")
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": v1.saved_model.predict_signature_def({"x": raw}, {"y": tf.matmul(raw, WEIGHTS)}),
                "classify": v1.saved_model.classification_signature_def(serialized, classes, scores),
                "regress": v1.saved_model.regression_signature_def(serialized, value)})
            builder.save()


def serialized_examples(rows: list[list[float]]) -> list[bytes]:
    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=row))})).SerializeToString() for row in rows]


@pytest.fixture(scope="module")
def channel(served: dict):
    with grpc.insecure_channel(served["tf_grpc"]) as opened:
        yield opened


@pytest.fixture(scope="module")
def examples_model(served: dict, channel, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The model served (through a config reload); yields TensorFlow's own answers for ROWS."""
    base = tmp_path_factory.mktemp("examples") / MODEL
    build_examples_model(base / "1")
    loaded = tf.saved_model.load(str(base / "1"))
    inputs = tf.constant(serialized_examples(ROWS))
    expected = {"classify": {k: v.numpy() for k, v in loaded.signatures["classify"](inputs=inputs).items()},
                "regress": loaded.signatures["regress"](inputs=inputs)["outputs"].numpy()}
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    reload_tf_config(models, f"model_config_list {{ config {{ name: '{MODEL}' base_path: '{base}' }} }}")
    yield expected
    reload_tf_config(models, "model_config_list { }")


def test_rest_classify_and_regress_match_tensorflow(served: dict, examples_model: dict) -> None:
    url = f"{served['rest']}/v1/models/{MODEL}"
    answer = requests.post(f"{url}:classify", timeout=30, json={
        "signature_name": "classify", "examples": [{"x": row} for row in ROWS]})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert [[label for label, _ in row] for row in result] == [["no", "yes"]] * 2
    np.testing.assert_allclose([[score for _, score in row] for row in result], examples_model["classify"]["scores"],
                               rtol=1e-5)
    answer = requests.post(f"{url}/versions/1:regress", timeout=30, json={
        "signature_name": "regress", "context": {"x": ROWS[0]}, "examples": [{}, {"x": ROWS[1]}]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["result"], examples_model["regress"].ravel(), rtol=1e-5)


def test_grpc_classify_and_regress_match_tensorflow(channel, examples_model: dict) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = classification_pb2.ClassificationRequest(model_spec={"name": MODEL, "signature_name": "classify"})
    for example in serialized_examples(ROWS):
        request.input.example_list.examples.add().ParseFromString(example)
    response = stub.Classify(request, timeout=30)
    assert response.model_spec.version.value == 1 and response.model_spec.signature_name == "classify"
    scores = [[c.score for c in row.classes] for row in response.result.classifications]
    np.testing.assert_allclose(scores, examples_model["classify"]["scores"], rtol=1e-5)
    assert [c.label for c in response.result.classifications[1].classes] == ["no", "yes"]
    request = regression_pb2.RegressionRequest(model_spec={"name": MODEL, "signature_name": "regress"})
    listed = request.input.example_list_with_context
    listed.context.ParseFromString(serialized_examples(ROWS[:1])[0])
    listed.examples.add()
    listed.examples.add().ParseFromString(serialized_examples(ROWS[1:])[0])
    values = [r.value for r in stub.Regress(request, timeout=30).result.regressions]
    np.testing.assert_allclose(values, examples_model["regress"].ravel(), rtol=1e-5)


def test_metadata_lists_every_signature_with_its_method(served: dict, examples_model: dict) -> None:
    answer = requests.get(f"{served['rest']}/v1/models/{MODEL}/metadata", timeout=30)
    defs = answer.json()["metadata"]["signature_def"]["signature_def"]
    assert {name: d["method_name"] for name, d in defs.items()} == {
        "serving_default": "tensorflow/serving/predict", "classify": "tensorflow/serving/classify",
        "regress": "tensorflow/serving/regress"}, answer.text
    assert defs["classify"]["inputs"]["inputs"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize(("model", "body", "message"), [
    (MODEL, {"examples": [{"x": ROWS[0]}]}, "not a classify signature"),  # serving_default predicts
    (MODEL, {"signature_name": "regress", "examples": [{"x": ROWS[0]}]}, "not a classify signature"),
    (MODEL, {"signature_name": "nope", "examples": [{"x": ROWS[0]}]}, "nope"),
    (MODEL, {"signature_name": "classify", "examples": [{"x": [[1, 2]]}]}, "nested list"),
    (MODEL, {"signature_name": "classify", "examples": [{"x": [1.0]}]}, "x"),  # 1 float where 3 are read
    ("fraud", {"signature_name": "classify", "examples": [{"x": 1}]}, "classify"),  # an ONNX model
])
def test_bad_classify_requests_get_tf_serving_errors(served: dict, examples_model: dict, model: str, body: dict,
                                                     message: str) -> None:
    answer = requests.post(f"{served['rest']}/v1/models/{model}:classify", json=body, timeout=30)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    assert requests.post(f"{served['rest']}/v1/models/{MODEL}:regress", timeout=30, json={
        "signature_name": "regress", "examples": [{"x": ROWS[0]}]}).status_code == 200  # still serving
