"""Request size limits and the bounded queue's config: pure, no Ray."""

from __future__ import annotations

import json

import pytest

from backends.errors import InvalidRequest, PayloadTooLarge
from deployments.dataplane.table import route_for
from deployments.protocol.limits import RequestLimits, check_json_depth, limits_for
from deployments.protocol.v2 import decode_infer_request
from deployments.repository.config import parse_config

ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def test_json_depth_is_checked_before_parsing() -> None:
    limits = RequestLimits(max_json_depth=8)
    check_json_depth(nested(8), limits)
    with pytest.raises(InvalidRequest, match=r"deeper than 8 levels \(parameters.max_json_depth\)"):
        check_json_depth(nested(9), limits)
    # Brackets inside strings, escaped quotes included, are text, not nesting.
    check_json_depth(json.dumps({"s": "[[[[[[[[[[[[", "t": 'say \\"[[[[[[[[[["'}).encode(), limits)
    # A deep body is refused by the decoder with the same message (json.loads never sees it).
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": 0}]}).encode()
    body = body.replace(b'"data": 0', b'"data": ' + nested(100_000))
    with pytest.raises(InvalidRequest, match="max_json_depth"):
        decode_infer_request(body)


def test_body_and_element_limits_are_413_naming_the_limit() -> None:
    body = json.dumps(ROW).encode()
    with pytest.raises(PayloadTooLarge, match=f"{len(body)} bytes exceeds the limit of 10 bytes"):
        decode_infer_request(body, limits=RequestLimits(max_body_bytes=10))
    huge = {"inputs": [{"name": "x", "shape": [100000, 100000], "datatype": "FP32", "data": [0]}]}
    with pytest.raises(PayloadTooLarge, match=r"input 'x'.*parameters.max_request_elements"):
        decode_infer_request(json.dumps(huge).encode())
    assert decode_infer_request(body).inputs["x"].shape == (1, 4)


def test_limits_and_queue_size_come_from_the_config() -> None:
    config = parse_config(
        'backend: "onnxruntime" max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 100 '
        'default_queue_policy { max_queue_size: 16 } } '
        'parameters { key: "max_request_bytes" value: { string_value: "2048" } }', "m/config.pbtxt", "m")
    assert limits_for(config) == RequestLimits(max_body_bytes=2048)
    assert config.dynamic_batching.max_queue_size == 16
    assert route_for(1, "m:v1", config).max_queue_rows == 16
    with pytest.raises(Exception, match="max_queue_size"):
        parse_config('backend: "onnxruntime" max_batch_size: 8 dynamic_batching { default_queue_policy '
                     '{ max_queue_size: -1 } }', "m/config.pbtxt", "m")


def test_request_timeouts() -> None:
    from deployments.ingress.v2_http import request_timeout_s

    assert request_timeout_s(None, None) is None
    assert request_timeout_s("250", 5) == 0.25  # the header wins over parameters.timeout
    assert request_timeout_s(None, 2_000_000) == 2.0
    for header, parameter in (("0", None), ("later", None), (None, -1), (None, "5")):
        with pytest.raises(InvalidRequest):
            request_timeout_s(header, parameter)
    config = parse_config('backend: "onnxruntime" max_batch_size: 8 dynamic_batching { default_queue_policy '
                          '{ default_timeout_microseconds: 5000 } }', "m/config.pbtxt", "m")
    assert route_for(1, "m:v1", config).timeout_us == 5000


def test_test_module_names_are_unique() -> None:
    from pathlib import Path

    names = [p.name for p in (Path(__file__).resolve().parents[1]).rglob("test_*.py")]
    assert len(names) == len(set(names)), "pytest imports test modules by file name: keep them unique"


def test_backends_never_unpickle_repository_files() -> None:
    """Model files are read by the frameworks' own loaders: TorchScript / torch.export archives,
    ONNX protobufs, SavedModels. Nothing may hand a repository file to pickle."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|np\.load\(|joblib\.load\(")
    offenders = [f"{p.relative_to(root)}:{n}" for folder in ("backends", "deployments", "pipelines")
                 for p in (root / folder).rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_composite_replicas_never_queue_without_bound() -> None:
    """Past max_ongoing_requests Serve queues inside a replica, unbounded by default: a composite's
    deployment bounds that queue, so overload gets an immediate 503 instead of a growing backlog."""
    from deployments.applications.ensembles import COMPOSITE_MAX_ONGOING, _deployment

    config = _deployment(1, None)._deployment_config  # Serve's own record of the options
    assert config.max_ongoing_requests == COMPOSITE_MAX_ONGOING == config.max_queued_requests
