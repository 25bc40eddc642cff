"""Fuzzing the HTTP API from its own OpenAPI document (schemathesis): valid and invalid requests to
every operation, against the session's real cluster; malformed input never gets a 5xx.

The document is the one ``GET /openapi.json`` serves (checked below). Only here, the ``model`` and ``version`` path
parameters are narrowed to names the cluster serves (and one it does not), so the generated
bodies reach the decoders and validators instead of stopping at 404s.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from deployments.ingress.server import server_version
from deployments.protocol.openapi import openapi_document

pytestmark = pytest.mark.integration

MODELS = ["fraud", "credit_score", "risk_ensemble", "loan_decision", "explodes", "nope"]
VERSIONS = ["1", "2", "x"]
# 503 is documented for these even with good input: readiness of what is not ready.
READINESS = {"/v2/health/ready", "/v2/models/{model}/ready", "/v2/models/{model}/versions/{version}/ready"}


def fuzz_schema() -> schemathesis.BaseSchema:
    """The served document (the same function builds it), path parameters narrowed as above."""
    document = openapi_document(server_version())
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model":
                    parameter["schema"] = {"type": "string", "enum": MODELS}
                elif parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": VERSIONS}
    return schemathesis.openapi.from_dict(document)


SCHEMA = fuzz_schema()
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}


def check_answer(case: schemathesis.Case, url: str) -> None:
    response = case.call(base_url=url, timeout=30)
    status = response.status_code
    if case.operation.path in READINESS and status == 503:
        return
    if status == 504 and "X-Request-Timeout-Ms" in (case.headers or {}):
        return  # a valid, very short timeout: 504 is the right answer
    if (case.path_parameters or {}).get("model") == "explodes" and status == 500:
        assert "model 'explodes'" in response.json()["error"]  # the test model that fails batches of 2
        return
    assert status < 500, f"{case.method} {case.formatted_path} -> {status}: {response.text[:500]}"
    if status >= 400:  # every refusal says why
        assert response.json()["error"], response.text[:500]


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_error_from_any_request(label: str, url: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=OPERATIONS[label].as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        check_answer(case, url)

    fuzz()


def test_every_documented_operation_is_served(url: str) -> None:
    """The document covers the routes the server answers (a route added without documenting it fails)."""
    paths = set(requests.get(f"{url}/openapi.json", timeout=30).json()["paths"])
    for route in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{model}/infer",
                  "/v2/models/{model}/versions/{version}/infer", "/v2/repository/index",
                  "/v2/repository/models/{model}/load", "/v2/repository/models/{model}/unload",
                  "/pipelines/{model}", "/metrics", "/v2/models/stats", "/openapi.json",
                  "/v2/models/{model}/config", "/v2/models/{model}/versions/{version}/config",
                  "/v2/repository/models/{model}/labels"):
        assert route in paths, route
    assert len(OPERATIONS) == 22 and requests.get(f"{url}/openapi.json", timeout=30).json() == \
        openapi_document(server_version())
