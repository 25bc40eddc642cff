"""TorchServe's API description (``OPTIONS /`` on its inference and management ports): an OpenAPI
3.0.1 document of the paths infergrid serves there, as TorchServe describes its own. Pure.
"""

from __future__ import annotations

__all__ = ["torchserve_api_description"]

_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}}
_ERROR = {"type": "object", "properties": {"code": {"type": "integer"}, "type": {"type": "string"},
                                           "message": {"type": "string"}}}


def _operation(operation_id: str, summary: str, parameters: tuple[str, ...] = (), query: tuple[str, ...] = (),
               body: bool = False) -> dict:
    params = [{"in": "path", "name": name, "required": True, "schema": {"type": "string"}} for name in parameters]
    params += [{"in": "query", "name": name, "required": name == "url", "schema": {"type": "string"}}
               for name in query]
    operation = {"operationId": operation_id, "summary": summary, "parameters": params,
                 "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": _STATUS}}},
                               "default": {"description": "Error",
                                           "content": {"application/json": {"schema": _ERROR}}}}}
    if body:
        operation["requestBody"] = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}},
                                                "multipart/form-data": {"schema": {"type": "object"}}}}
    return operation


def torchserve_api_description(version: str) -> dict:
    """The document, for infergrid ``version``."""
    model, model_version = ("model_name",), ("model_name", "model_version")
    paths = {
        "/": {"options": _operation("apiDescription", "The API description (this document)")},
        "/ping": {"get": _operation("ping", "Health of the server")},
        "/predictions/{model_name}": {"post": _operation("predictions", "A prediction of the default version",
                                                         model, body=True)},
        "/predictions/{model_name}/{model_version}": {
            "post": _operation("version_predictions", "A prediction of one version", model_version, body=True)},
        "/explanations/{model_name}": {"post": _operation("explanations", "The handler's explain_handle",
                                                          model, body=True)},
        "/models": {"get": _operation("listModels", "Registered models, paged", query=("limit", "next_page_token")),
                    "post": _operation("registerModel", "Register an archive of the model store", query=(
                        "url", "model_name", "batch_size", "max_batch_delay", "initial_workers", "synchronous",
                        "response_timeout"))},
        "/models/{model_name}": {
            "get": _operation("describeModel", "The default version's description", model),
            "put": _operation("setAutoScale", "Workers of the model", model,
                              query=("min_worker", "max_worker", "synchronous")),
            "delete": _operation("unregisterModel", "Unregister the default version", model)},
        "/models/{model_name}/{model_version}": {
            "get": _operation("describeVersion", "One version's description (all: every version)", model_version),
            "put": _operation("setVersionAutoScale", "Workers of the model", model_version,
                              query=("min_worker", "max_worker", "synchronous")),
            "delete": _operation("unregisterVersion", "Unregister one version", model_version)},
        "/models/{model_name}/{model_version}/set-default": {
            "put": _operation("setDefault", "Unversioned requests go to this version", model_version)},
        "/metrics": {"get": _operation("metrics", "TorchServe's ts_* metrics in Prometheus text",
                                       query=("name[]",))},
    }
    return {"openapi": "3.0.1",
            "info": {"title": "TorchServe APIs (infergrid)", "version": version,
                     "description": "TorchServe's inference, management and metrics APIs, served by infergrid"},
            "paths": paths}
