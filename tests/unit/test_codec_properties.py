"""Property tests (hypothesis) on the v2 tensor codecs: any bytes, any JSON, any header length is
either decoded or refused with a ServingError (400/413); arrays of every datatype round-trip through
the JSON and the binary form unchanged."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from backends.dtypes import V2_DATATYPES, numpy_to_v2, v2_to_numpy
from backends.errors import ServingError
from deployments.protocol.limits import RequestLimits
from deployments.protocol.tensors import array_from_binary, array_from_json, array_to_binary, array_to_json
from deployments.protocol.v2 import decode_infer_request, encode_infer_response

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMITS = RequestLimits(max_body_bytes=1 << 16, max_elements=4096, max_json_depth=8)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)

shapes = st.lists(st.integers(-2, 6) | st.sampled_from([2**31, 2**63, True]), max_size=4)
tensors = st.fixed_dictionaries(
    {"name": st.text(max_size=4) | st.integers(), "shape": shapes | json_values,
     "datatype": st.sampled_from(V2_DATATYPES) | st.text(max_size=5)},
    optional={"data": json_values, "parameters": st.dictionaries(st.text(max_size=12), json_values, max_size=2)})
requests = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(tensors, max_size=3) | json_values, "outputs": json_values,
    "id": json_values, "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "timeout", "x"]),
                                                     json_values, max_size=2)})


def decodes_or_refuses(body: bytes, header_length: int | None) -> None:
    try:
        decode_infer_request(body, header_length, SMALL_LIMITS)
    except ServingError as exc:
        assert exc.http_status in (400, 413), exc


@FAST
@given(st.binary(max_size=512), st.none() | st.integers(-5, 600))
def test_any_bytes_are_decoded_or_refused(body: bytes, header_length: int | None) -> None:
    decodes_or_refuses(body, header_length)


@FAST
@given(requests, st.binary(max_size=64))
def test_any_json_request_is_decoded_or_refused(request: dict, tail: bytes) -> None:
    header = json.dumps(request).encode()
    decodes_or_refuses(header, None)
    decodes_or_refuses(header + tail, len(header))  # binary form: a JSON header, then tensor bytes


@FAST
@given(st.integers(1, 40))
def test_deep_nesting_is_refused_not_recursed(depth: int) -> None:
    data = 0
    for _ in range(depth):
        data = [data]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": data}]}).encode()
    decodes_or_refuses(body, None)


numeric = st.sampled_from([t for t in V2_DATATYPES if t not in ("BYTES", "FP16", "BF16")])


@st.composite
def arrays(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(numeric | st.just("BYTES"))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    if datatype == "BYTES":
        flat = draw(st.lists(st.binary(max_size=6), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        return datatype, np.array(flat, dtype=object).reshape(shape)
    dtype = v2_to_numpy(datatype)
    elements = st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False) if dtype.kind == "f" else None
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


@FAST
@given(arrays())
def test_every_datatype_round_trips_json_and_binary(sample: tuple[str, np.ndarray]) -> None:
    datatype, array = sample
    assert numpy_to_v2(array.dtype) == datatype
    shape = list(array.shape)
    from_binary = array_from_binary("x", datatype, shape, array_to_binary(array))
    decoded = [from_binary]
    if datatype != "BYTES" or all(_utf8(v) for v in array.flat):  # JSON strings carry text only
        decoded.append(array_from_json("x", datatype, shape, json.loads(json.dumps(array_to_json(array)))))
    for back in decoded:
        assert back.shape == array.shape and back.dtype == array.dtype
        assert np.array_equal(back, array)


@FAST
@given(arrays(), st.booleans())
def test_a_response_decodes_to_what_was_sent(sample: tuple[str, np.ndarray], binary: bool) -> None:
    datatype, array = sample
    entry = {"name": "x", "shape": list(array.shape), "datatype": datatype}
    if not binary and datatype == "BYTES" and not all(_utf8(v) for v in array.flat):
        binary = True  # JSON strings carry text only; such BYTES travel in the binary form
    if binary:
        blob = array_to_binary(array)
        header = json.dumps({"inputs": [{**entry, "parameters": {"binary_data_size": len(blob)}}],
                             "parameters": {"binary_data_output": True}}).encode()
        request = decode_infer_request(header + blob, len(header))
    else:
        request = decode_infer_request(json.dumps({"inputs": [{**entry, "data": array_to_json(array)}]}).encode())
    assert np.array_equal(request.inputs["x"], array)
    body, json_length = encode_infer_response(request, "m", "1", {"y": request.inputs["x"]})
    assert (json_length is not None) == binary
    head = json.loads(body[:json_length] if binary else body)
    out = head["outputs"][0]
    assert out["shape"] == list(array.shape) and out["datatype"] == datatype
    back = (array_from_binary("y", datatype, out["shape"], body[json_length:]) if binary
            else array_from_json("y", datatype, out["shape"], out["data"]))
    assert np.array_equal(back, array)
