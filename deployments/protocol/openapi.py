"""The OpenAPI 3.0 document of infergrid's HTTP API, served at ``GET /openapi.json``.

Written by hand from what the ingress deployments answer (they are Starlette callables, not a
framework that would derive it): the KServe v2 / Triton paths, the repository API, the pipelines'
plain JSON route and ``/metrics``. It is the contract the fuzz tests (schemathesis) hold the server
to: any request, valid or not, gets a documented status and never a 5xx for malformed input.

Pure: a function returning a dict.
"""

from __future__ import annotations

import copy
from typing import Any

from backends.dtypes import V2_DATATYPES

__all__ = ["openapi_document"]

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_ERRORS = {
    "400": "malformed request: the message names the field or the limit",
    "401": "missing or unknown API key (only when the server has keys)",
    "403": "the API key's role does not allow this endpoint",
    "404": "no such model, version or route",
    "413": "request over a size limit (body bytes, tensor elements)",
    "503": "model unavailable or its queue full (Retry-After)",
    "504": "not answered within the request's timeout",
}


def _responses(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
    out = {"200": ok}
    for code in codes:
        out[code] = {"description": _ERRORS[code],
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return out


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


_MODEL = _param("model", "model, ensemble or pipeline name")
_VERSION = _param("version", "version number")
_AUTH_CODES = ("401", "403")


def _model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    """Metadata, readiness, statistics and inference of a model (or one of its versions)."""
    where = "a version" if len(params) > 1 else "a model"
    return {
        prefix: {"get": {"summary": f"metadata of {where}", "operationId": f"metadata{len(params)}",
                         "parameters": params,
                         "responses": _responses(
                             _json("model metadata", {"$ref": "#/components/schemas/ModelMetadata"}),
                             "401", "404", "503")}},
        f"{prefix}/ready": {"get": {"summary": f"readiness of {where}", "operationId": f"ready{len(params)}",
                                    "parameters": params,
                                    "responses": _responses(_json("ready", {"type": "object"}), "401", "404", "503")}},
        f"{prefix}/stats": {"get": {"summary": f"Triton statistics of {where}", "operationId": f"stats{len(params)}",
                                    "parameters": params,
                                    "responses": _responses(_json("statistics", {"type": "object"}), "401", "404")}},
        f"{prefix}/config": {"get": {"summary": f"the config of {where} as Triton reports it (completed from the "
                                               "model)", "operationId": f"config{len(params)}", "parameters": params,
                                     "responses": _responses(_json("Triton ModelConfig, JSON mapping",
                                                                   {"type": "object"}), "401", "404", "503")}},
        f"{prefix}/infer": {"post": {
            "summary": f"inference on {where} (JSON, or binary tensors with Inference-Header-Content-Length)",
            "operationId": f"infer{len(params)}",
            "parameters": params + [
                {"name": "X-Request-Timeout-Ms", "in": "header", "required": False,
                 "description": "answer within this many milliseconds or get 504", "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}},
            "responses": _responses(_json("outputs", {"$ref": "#/components/schemas/InferResponse"}),
                                    "400", *_AUTH_CODES, "404", "413", "503", "504")}},
    }


def _schemas() -> dict[str, Any]:
    tensor_data = {"type": "array", "items": {}, "description": "row-major values, flat or nested"}
    parameters = {"type": "object", "additionalProperties": True}
    return {
        "Error": _ERROR,
        "InferInput": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
            "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": list(V2_DATATYPES)}, "parameters": parameters, "data": tensor_data}},
        "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": parameters,
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/InferInput"}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": parameters}}}}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"type": "object"}}}},
        "ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                          "properties": {"name": {"type": "string"},
                                         "versions": {"type": "array", "items": {"type": "string"}},
                                         "platform": {"type": "string"},
                                         "inputs": {"type": "array", "items": {"type": "object"}},
                                         "outputs": {"type": "array", "items": {"type": "object"}}}},
        "RepositoryRequest": {"type": "object", "properties": {"parameters": parameters, "ready": {"type": "boolean"}}},
    }


def openapi_document(server_version: str) -> dict[str, Any]:
    """The whole document; ``server_version`` is the installed infergrid version."""
    management_body = {"required": False, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/RepositoryRequest"}}}}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"summary": "liveness", "operationId": "live",
                                    "responses": _responses(_json("live", {"type": "object"}))}},
        "/v2/health/ready": {"get": {"summary": "readiness of every served model", "operationId": "serverReady",
                                     "responses": _responses(_json("ready", {"type": "object"}), "503")}},
        "/v2": {"get": {"summary": "server metadata and extensions", "operationId": "serverMetadata",
                        "responses": _responses(_json("server metadata", {"type": "object"}), "401")}},
        "/v2/models/stats": {"get": {"summary": "Triton statistics of every model", "operationId": "allStats",
                                     "responses": _responses(_json("statistics", {"type": "object"}), "401")}},
        "/v2/repository/index": {"post": {
            "summary": "repository index (management role)", "operationId": "repositoryIndex",
            "requestBody": management_body,
            "responses": _responses(_json("models and versions", {"type": "array", "items": {"type": "object"}}),
                                    "400", *_AUTH_CODES)}},
        "/pipelines/{model}": {"post": {
            "summary": "plain JSON into a Python pipeline", "operationId": "pipeline", "parameters": [_MODEL],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": _responses(_json("the pipeline's answer", {"type": "object"}),
                                    "400", *_AUTH_CODES, "404", "413", "503")}},
        "/metrics": {"get": {"summary": "Prometheus metrics of the whole cluster", "operationId": "metrics",
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "this document", "operationId": "openapi",
                                  "responses": _responses(_json("OpenAPI 3.0", {"type": "object"}))}},
    }
    for action in ("load", "unload"):
        paths[f"/v2/repository/models/{{model}}/{action}"] = {"post": {
            "summary": f"{action} a model (explicit model control mode; management role)",
            "operationId": action, "parameters": [_MODEL], "requestBody": management_body,
            "responses": _responses(_json(f"{action}ed", {"type": "object"}), "400", *_AUTH_CODES, "404", "503")}}
    labels = {"type": "object", "required": ["version_labels"], "properties": {"version_labels": {
        "type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}}}
    paths["/v2/repository/models/{model}/labels"] = {
        "get": {"summary": "TF Serving's version labels of a model (management role)", "operationId": "getLabels",
                "parameters": [_MODEL], "responses": _responses(_json("labels", labels), *_AUTH_CODES, "404", "503")},
        "put": {"summary": "replace a model's version labels; each names a served version (management role)",
                "operationId": "setLabels", "parameters": [_MODEL],
                "requestBody": {"required": True, "content": {"application/json": {"schema": labels}}},
                "responses": _responses(_json("labels now", labels), "400", *_AUTH_CODES, "404", "503")}}
    paths.update(_model_paths("/v2/models/{model}", [_MODEL]))
    paths.update(_model_paths("/v2/models/{model}/versions/{version}", [_MODEL, _VERSION]))
    return copy.deepcopy({  # shared parameter objects: a caller may change its copy freely
        "openapi": "3.0.3",
        "info": {"title": "infergrid", "version": server_version,
                 "description": "KServe v2 / Triton HTTP inference, the Triton repository API, pipelines and "
                                "metrics. With API keys, send 'Authorization: Bearer <key>'."},
        "paths": paths,
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"apiKey": []}],
    })
