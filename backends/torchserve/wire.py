"""How a request reaches a TorchServe handler through the data plane, with no framework import.

A TorchServe model has one BYTES input, ``body``, holding one element per request, and two BYTES
outputs: ``output`` (what the handler returned, encoded as TorchServe encodes it) and
``content_type`` (the handler's, or the encoding's). An element is either plain bytes (a v2 or gRPC
caller: the handler sees ``{"body": <bytes>}``) or a ``TsRequest`` tuple from TorchServe's inference
API, carrying each form field or body with its content type and the request's headers, decoded in
the replica as TorchServe's Python worker decodes them.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

__all__ = ["TS_INPUT", "TS_OUTPUT", "TS_CONTENT_TYPE", "TsParameter", "TsRequest", "worker_request",
           "decoded_value", "is_explanation"]

TS_INPUT = "body"
TS_OUTPUT = "output"
TS_CONTENT_TYPE = "content_type"


class TsParameter(NamedTuple):
    """One part of a request: the raw body (``body``) or a multipart field, with its content type."""

    name: str
    content_type: str
    value: bytes


class TsRequest(NamedTuple):
    """A request of TorchServe's inference API: its parts and its headers (names lower-cased)."""

    parameters: tuple[TsParameter, ...]
    headers: tuple[tuple[str, str], ...] = ()


def worker_request(element: Any, request_id: str) -> dict:
    """One request in the form TorchServe's frontend sends its Python worker (``requestId``,
    ``parameters`` of name/contentType/value, ``headers``), for ``ts.service.Service``'s decoding.

    Raises:
        TypeError: an element that is neither bytes nor a ``TsRequest``.
    """
    if isinstance(element, (bytes, bytearray, str)):
        value = element.encode() if isinstance(element, str) else bytes(element)
        parameters: tuple = (TsParameter("body", "", value),)
        headers: tuple = ()
    elif isinstance(element, tuple) and len(element) == 2:
        parameters, headers = TsRequest(*element)
    else:
        raise TypeError(f"a TorchServe request is bytes or a TsRequest, not {type(element).__name__}")
    return {"requestId": request_id.encode(),
            "parameters": [{"name": p.name, "contentType": p.content_type,
                            "value": decoded_value(p.content_type, p.value)}
                           for p in (TsParameter(*p) for p in parameters)],
            "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers]}


def is_explanation(element: Any) -> bool:
    """True for a request of TorchServe's /explanations path (its ``explain: True`` header)."""
    return isinstance(element, tuple) and len(element) == 2 and ("explain", "True") in tuple(element[1])


def decoded_value(content_type: str, value: bytes) -> Any:
    """A part's value as TorchServe's worker hands it to the handler: ``application/json`` parsed,
    ``text/*`` as str, anything else (or what fails to decode) as bytes."""
    try:
        if content_type == "application/json":
            return json.loads(value.decode("utf-8"))
        if content_type.startswith("text"):
            return value.decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        pass
    return value
