"""TF Serving's gRPC codec: TensorProto <-> numpy as TensorFlow reads and writes it, the request checks,
and the messages built without TensorFlow being imported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from backends.dtypes import v2_to_numpy
from backends.errors import InvalidRequest
from backends.signature import ModelSignature, TensorSpec
from deployments.protocol.tfserving_apis import tf_serving_apis
from deployments.protocol.tfserving_grpc import (
    array_to_tensor,
    decode_predict_request,
    encode_predict_response,
    metadata_response,
    spec_version,
    status_response,
    tensor_to_array,
)

apis = tf_serving_apis()
SIGNATURE = ModelSignature(inputs=(TensorSpec("x", "FP32", (-1, 3)), TensorSpec("tag", "BYTES", (-1, 1))),
                           outputs=(TensorSpec("y", "FP32", (-1, 1)), TensorSpec("z", "INT64", (-1,))))


def tensor(dtype: str, shape: list[int], **fields) -> object:
    proto = apis.tensor_pb2.TensorProto(dtype=apis.types_pb2.DataType.Value(dtype), **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def test_the_messages_load_without_importing_tensorflow() -> None:
    code = ("import sys\nfrom deployments.protocol.tfserving_grpc import apis\n"
            "assert apis.predict_pb2.PredictRequest\n"
            "print(sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.python')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16", "BF16", "INT8", "UINT8", "INT16", "UINT16", "INT32",
                                      "INT64", "UINT32", "UINT64", "BOOL"])
def test_every_numeric_dtype_round_trips_typed_and_as_tensor_content(datatype: str) -> None:
    array = (np.arange(6).reshape(2, 3) % 2 == 1) if datatype == "BOOL" else \
        np.arange(6, dtype=np.float32).reshape(2, 3).astype(v2_to_numpy(datatype))
    proto = array_to_tensor(array)
    assert not proto.tensor_content  # answers use the typed field, as TF Serving clients read them
    np.testing.assert_array_equal(tensor_to_array("x", proto, datatype), array)
    raw = tensor(apis.types_pb2.DataType.Name(proto.dtype), [2, 3], tensor_content=array.tobytes())
    np.testing.assert_array_equal(tensor_to_array("x", raw, datatype), array)


def test_typed_values_are_padded_as_tensorflow_pads_them() -> None:
    np.testing.assert_array_equal(tensor_to_array("x", tensor("DT_FLOAT", [2, 2], float_val=[7.0])),
                                  np.full((2, 2), 7.0, np.float32))
    np.testing.assert_array_equal(tensor_to_array("x", tensor("DT_INT32", [3], int_val=[1, 2])), [1, 2, 2])
    np.testing.assert_array_equal(tensor_to_array("x", tensor("DT_FLOAT", [2])), [0.0, 0.0])
    strings = tensor_to_array("s", tensor("DT_STRING", [2, 1], string_val=[b"a", b"\xff"]))
    assert strings.dtype == object and strings.tolist() == [[b"a"], [b"\xff"]]


@pytest.mark.parametrize(("proto", "datatype", "message"), [
    (tensor("DT_DOUBLE", [1], double_val=[1.0]), "FP32", "expects DT_FLOAT, but DT_DOUBLE"),
    (tensor("DT_FLOAT", [1], float_val=[1.0, 2.0]), None, "holds 1 values"),
    (tensor("DT_FLOAT", [2], tensor_content=b"\0" * 4), None, "needs 8 bytes"),
    (tensor("DT_STRING", [1], tensor_content=b"ab"), None, "string_val"),
    (tensor("DT_UINT8", [1], int_val=[300]), None, "do not fit DT_UINT8"),
    (tensor("DT_COMPLEX64", [1]), None, "unsupported dtype DT_COMPLEX64"),
    (apis.tensor_pb2.TensorProto(dtype=1, tensor_shape={"unknown_rank": True}), None, "unknown_rank"),
])
def test_bad_tensors_name_the_input_and_the_problem(proto, datatype: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match="input 'x'") as failure:
        tensor_to_array("x", proto, datatype)
    assert message in str(failure.value)


def predict(**inputs) -> object:
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def test_a_predict_request_is_checked_against_the_signature() -> None:
    good = predict(x=tensor("DT_FLOAT", [1, 3], float_val=[1, 2, 3]), tag=tensor("DT_STRING", [1, 1], string_val=[b"t"]))
    decoded = decode_predict_request(good, SIGNATURE)
    assert decoded["x"].tolist() == [[1, 2, 3]] and decoded["tag"].tolist() == [[b"t"]]
    with pytest.raises(InvalidRequest, match="alias not found in signature: w"):
        decode_predict_request(predict(x=good.inputs["x"], tag=good.inputs["tag"], w=good.inputs["x"]), SIGNATURE)
    with pytest.raises(InvalidRequest, match="missing \\['tag'\\]"):
        decode_predict_request(predict(x=good.inputs["x"]), SIGNATURE)
    good.model_spec.signature_name = "other"
    with pytest.raises(InvalidRequest, match='"other" not found'):
        decode_predict_request(good, SIGNATURE)


def test_versions_and_labels_in_model_spec() -> None:
    spec = apis.model_pb2.ModelSpec(name="m")
    assert spec_version(spec) is None
    spec.version.value = 3
    assert spec_version(spec) == "3"
    spec.version_label = "stable"  # the oneof: the label replaces the version
    assert spec_version(spec) == "stable"


def test_answers_metadata_and_status_messages() -> None:
    outputs = {"y": np.array([[0.5]], np.float32), "z": np.array([4], np.int64)}
    response = encode_predict_response("m", 3, outputs, ["z"], ["y", "z"])
    assert list(response.outputs) == ["z"] and response.outputs["z"].int64_val == [4]
    assert response.model_spec.version.value == 3
    assert set(encode_predict_response("m", 3, outputs, [], ["y", "z"]).outputs) == {"y", "z"}
    with pytest.raises(InvalidRequest, match="output tensor alias not found in signature: q"):
        encode_predict_response("m", 3, outputs, ["q"], ["y", "z"])
    metadata = metadata_response(apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
                                 "m", 3, SIGNATURE)
    signatures = apis.get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict" and set(default.inputs) == {"x", "tag"}
    assert apis.types_pb2.DataType.Name(default.inputs["tag"].dtype) == "DT_STRING"
    with pytest.raises(InvalidRequest, match="Metadata field other is not supported"):
        metadata_response(apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"]), "m", 3,
                          SIGNATURE)
    status = status_response({"model_version_status": [{"version": "2", "state": "END", "status": {
        "error_code": "UNKNOWN", "error_message": "bad file"}}]})
    (row,) = status.model_version_status
    assert row.version == 2 and row.status.error_message == "bad file"
