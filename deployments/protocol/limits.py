"""Request size limits, checked before a body is decoded. Pure: no Ray, no frameworks.

A hostile or mistaken client must not make a replica build a huge or deeply nested object: the
body's size is checked from ``Content-Length`` before it is read, its JSON nesting before
``json.loads`` (which recurses), and the element count of every tensor from its declared shape
before its data is converted. Limits come from the model's config ``parameters`` (the defaults
below otherwise); each error names the limit and the parameter that changes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backends.errors import InvalidRequest, PayloadTooLarge
from backends.model_config import ModelConfig

__all__ = ["RequestLimits", "limits_for", "check_body_size", "check_json_depth", "check_elements"]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 32
_TOKENS = re.compile(rb'[\[\]{}"\\]')


@dataclass(frozen=True)
class RequestLimits:
    """The limits of one model's requests."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH


def limits_for(config: ModelConfig | None) -> RequestLimits:
    """``parameters`` ``max_request_bytes``, ``max_request_elements``, ``max_json_depth`` or the defaults."""
    if config is None:
        return RequestLimits()

    def number(key: str, default: int) -> int:
        return int(config.parameter(key, str(default)) or default)
    return RequestLimits(number("max_request_bytes", DEFAULT_MAX_BODY_BYTES),
                         number("max_request_elements", DEFAULT_MAX_ELEMENTS),
                         number("max_json_depth", DEFAULT_MAX_JSON_DEPTH))


def check_body_size(size_bytes: int, limits: RequestLimits) -> None:
    """Raises: PayloadTooLarge (413) over ``max_request_bytes``."""
    if size_bytes > limits.max_body_bytes:
        raise PayloadTooLarge(f"request body of {size_bytes} bytes exceeds the limit of {limits.max_body_bytes} "
                              f"bytes (parameters.max_request_bytes)")


def check_json_depth(text: bytes, limits: RequestLimits) -> None:
    """Reject JSON nested deeper than ``max_json_depth`` without parsing it.

    Only brackets, quotes and backslashes are visited (a regex finds them), so a flat tensor of a
    million numbers costs a handful of steps. Brackets inside strings do not count.

    Raises:
        InvalidRequest (400) naming the limit.
    """
    if text.count(b"[") + text.count(b"{") <= limits.max_json_depth:
        return  # cannot nest deeper than it has brackets (a C scan: most requests stop here)
    depth, in_string, skip_until = 0, False, -1
    for match in _TOKENS.finditer(text):
        position, token = match.start(), match.group()
        if position <= skip_until:
            continue
        if in_string:
            if token == b"\\":
                skip_until = position + 1  # the escaped character
            elif token == b'"':
                in_string = False
        elif token == b'"':
            in_string = True
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limits.max_json_depth:
                raise InvalidRequest(f"request JSON is nested deeper than {limits.max_json_depth} levels "
                                     f"(parameters.max_json_depth)")
        elif token in (b"]", b"}"):
            depth -= 1


def check_elements(shapes: dict[str, object], limits: RequestLimits) -> None:
    """Declared tensor shapes (input name -> shape) against ``max_request_elements``.

    Raises:
        PayloadTooLarge (413) naming the input and the limit.
    """
    total = 0
    for name, shape in shapes.items():
        count = 1
        if isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            for dim in shape:
                count *= max(dim, 0)
        total += count
        if total > limits.max_elements:
            raise PayloadTooLarge(f"input {name!r}: the request's tensors hold more than {limits.max_elements} "
                                  f"elements (parameters.max_request_elements)")
