"""TF Serving's warm-up records (assets.extra/tf_serving_warmup_requests): a TFRecord file as TensorFlow's
own writer frames it, PredictionLog requests decoded against the signature, and the load refused naming
the record when one cannot run."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.errors import BackendLoadError
from backends.signature import ModelSignature, TensorSpec
from deployments.dataplane.tf_warmup import (
    MAX_RECORDS,
    _masked_crc32c,
    read_tfrecords,
    tf_serving_warmup_samples,
    warmup_file,
)
from deployments.protocol.tfserving_apis import tf_serving_apis

apis = tf_serving_apis()
SIGNATURE = ModelSignature(inputs=(TensorSpec("x", "FP32", (-1, 3)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),))


def frame(records: list[bytes]) -> bytes:
    """TFRecord framing, as tf.io.TFRecordWriter writes it."""
    out = b""
    for record in records:
        length = struct.pack("<Q", len(record))
        out += length + struct.pack("<I", _masked_crc32c(length)) + record + struct.pack("<I", _masked_crc32c(record))
    return out


def predict_log(inputs: dict[str, np.ndarray]) -> bytes:
    log = apis.prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "m"
    for name, array in inputs.items():
        tensor = request.inputs[name]
        tensor.dtype = apis.types_pb2.DT_FLOAT
        tensor.tensor_content = array.astype("<f4").tobytes()
        for size in array.shape:
            tensor.tensor_shape.dim.add(size=size)
    return log.SerializeToString()


def write_warmup(version_dir: Path, records: list[bytes]) -> Path:
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True)
    path.write_bytes(frame(records))
    return path


def test_a_file_tensorflows_writer_wrote_reads_record_for_record(tmp_path: Path) -> None:
    path = tmp_path / "records"
    code = ("import sys, tensorflow as tf\n"
            "with tf.io.TFRecordWriter(sys.argv[1]) as w:\n"
            "    w.write(b'first'); w.write(b'x' * 70000); w.write(b'')\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, timeout=120)
    assert read_tfrecords(path.read_bytes(), "records") == [b"first", b"x" * 70000, b""]
    assert path.read_bytes() == frame([b"first", b"x" * 70000, b""])  # the same bytes as TensorFlow's


def test_predict_records_become_samples_and_other_logs_are_skipped(tmp_path: Path, caplog) -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    classify = apis.prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.name = "m"
    write_warmup(tmp_path / "1", [predict_log({"x": rows}), classify.SerializeToString(), predict_log({"x": rows[:1]})])
    samples = tf_serving_warmup_samples(tmp_path / "1", SIGNATURE)
    assert [s.name for s in samples] == ["tf_serving_warmup_requests[0]", "tf_serving_warmup_requests[2]"]
    np.testing.assert_array_equal(samples[0].inputs["x"], rows)
    assert "skipped 1 classify_log" in caplog.text
    assert tf_serving_warmup_samples(tmp_path / "2", SIGNATURE) == []  # no file, no samples
    (tmp_path / "3" / "model.savedmodel").mkdir(parents=True)
    write_warmup(tmp_path / "3" / "model.savedmodel", [predict_log({"x": rows})])  # Triton's TF layout
    assert warmup_file(tmp_path / "3") is not None


@pytest.mark.parametrize(("records", "message"), [
    ([predict_log({"z": np.zeros((1, 3))})], r"record 0: input tensor alias not found in signature: z"),
    ([b"\xff\xff\xff\xff"], "record 0: not a PredictionLog"),
    ([predict_log({"x": np.zeros((1, 3))})] * (MAX_RECORDS + 1), "more than 1000 warm-up records"),
])
def test_a_record_that_cannot_run_fails_the_load_naming_it(tmp_path: Path, records: list, message: str) -> None:
    write_warmup(tmp_path, records)
    with pytest.raises(BackendLoadError, match=message):
        tf_serving_warmup_samples(tmp_path, SIGNATURE)


def test_a_file_that_is_no_tfrecord_is_refused() -> None:
    with pytest.raises(BackendLoadError, match="bad length checksum"):
        read_tfrecords(b"this is a text file, not records", "f")
    with pytest.raises(BackendLoadError, match="truncated"):
        read_tfrecords(frame([b"abcdef"])[:-6], "f")
