"""TF Serving's SavedModel warm-up: ``assets.extra/tf_serving_warmup_requests`` replayed before a version
takes traffic, for a model of any framework.

The file is a TFRecord of ``PredictionLog`` messages (``tensorflow-serving-api``'s, loaded without
running TensorFlow: ``deployments.protocol.tfserving_apis``). Each ``predict_log`` request becomes one
warm-up sample, decoded and checked against the version's signature as a ``Predict`` call is
(``deployments.protocol.tfserving_grpc``), and runs once, as TF Serving runs it by default. TF
Serving's rules hold: at most 1000 records, and a record that cannot run fails the load (so a version
whose warm-up fails never serves). Classify, regress and multi-inference records are skipped with a
warning: only ``serving_default`` predictions are served here.

TFRecord framing: ``uint64 length``, ``uint32 masked CRC32-C of length``, ``data``, ``uint32 masked
CRC32-C of data``, little-endian. The length's CRC is checked (a file that is no TFRecord fails at its
first record); the data's is not (pure-Python CRC over image-sized records would cost seconds per
load), so a corrupt record fails as a message that does not parse or an input that does not fit.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

from backends.errors import BackendLoadError, ServingError
from backends.signature import ModelSignature
from backends.warmup import WarmupSample

__all__ = ["WARMUP_FILE", "MAX_RECORDS", "warmup_file", "read_tfrecords", "tf_serving_warmup_samples"]

logger = logging.getLogger("infergrid")

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit on warm-up records
_HEADER = struct.Struct("<QI")
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def warmup_file(version_dir: Path) -> Path | None:
    """The warm-up file of a version: ``<version>/assets.extra/`` (TF Serving's layout) or
    ``<version>/model.savedmodel/assets.extra/`` (Triton's); None if it has none."""
    for saved_model in (version_dir, version_dir / "model.savedmodel"):
        candidate = saved_model / "assets.extra" / WARMUP_FILE
        if candidate.is_file():
            return candidate
    return None


def read_tfrecords(data: bytes, source: str) -> list[bytes]:
    """The records of a TFRecord file's bytes.

    Raises:
        BackendLoadError: a truncated record, a length whose CRC does not match, more than
            ``MAX_RECORDS`` records.
    """
    records, offset = [], 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            raise BackendLoadError(f"{source}: record {len(records)}: truncated header (not a TFRecord file?)")
        length, length_crc = _HEADER.unpack_from(data, offset)
        if _masked_crc32c(data[offset:offset + 8]) != length_crc:
            raise BackendLoadError(f"{source}: record {len(records)}: bad length checksum (not a TFRecord file?)")
        start = offset + _HEADER.size
        if start + length + 4 > len(data):
            raise BackendLoadError(f"{source}: record {len(records)}: truncated ({length} bytes announced)")
        records.append(data[start:start + length])
        if len(records) > MAX_RECORDS:
            raise BackendLoadError(f"{source}: more than {MAX_RECORDS} warm-up records (TF Serving's limit)")
        offset = start + length + 4
    return records


def tf_serving_warmup_samples(version_dir: Path, signature: ModelSignature) -> list[WarmupSample]:
    """The version's TF Serving warm-up requests as samples (none without the file).

    Raises:
        BackendLoadError: the file cannot be read or framed, a record is no ``PredictionLog``, a
            request does not fit the signature; the message names the record.
    """
    path = warmup_file(version_dir)
    if path is None:
        return []
    from google.protobuf.message import DecodeError

    from deployments.protocol.tfserving_apis import tf_serving_apis
    from deployments.protocol.tfserving_grpc import decode_predict_request

    log_class = tf_serving_apis().prediction_log_pb2.PredictionLog
    try:
        records = read_tfrecords(path.read_bytes(), str(path))
    except OSError as exc:
        raise BackendLoadError(f"{path}: cannot read: {exc}") from exc
    samples, skipped = [], {}
    for index, record in enumerate(records):
        try:
            log = log_class.FromString(record)
        except DecodeError as exc:
            raise BackendLoadError(f"{path}: record {index}: not a PredictionLog: {exc}") from None
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        try:
            inputs = decode_predict_request(log.predict_log.request, signature)
        except ServingError as exc:
            raise BackendLoadError(f"{path}: record {index}: {exc}") from None
        samples.append(WarmupSample(f"{WARMUP_FILE}[{index}]", inputs, 1))
    if skipped:
        logger.warning("%s: skipped %s (only predict_log records are replayed)", path,
                       ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items(), key=str)))
    return samples
