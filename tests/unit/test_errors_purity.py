"""The error hierarchy survives pickling, and pure modules import no framework and no Ray."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys

import pytest

import backends.errors as errors

ERRORS = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.ServingError)]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_pickles_with_message_and_status(cls: type) -> None:
    original = cls("model 'fraud': something")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls and str(copy) == str(original) and copy.http_status == cls.http_status


def test_statuses() -> None:
    assert errors.InputMismatch("x").http_status == 400
    assert errors.ModelNotFound("x").http_status == 404
    assert errors.ModelNotReady("x").http_status == 503
    assert errors.InferenceFailed("x").http_status == 500
    assert errors.StepFailed("x").http_status == 500


def test_step_failure_keeps_its_status_across_processes() -> None:
    copy = pickle.loads(pickle.dumps(errors.StepFailed("'risk' step 0 (fraud) failed: not ready", 503)))
    assert copy.http_status == 503 and str(copy) == "'risk' step 0 (fraud) failed: not ready"


PURE = ["deployments.protocol.v2", "deployments.repository.scan", "deployments.repository.config",
        "deployments.dataplane.batching", "deployments.applications.serve_config", "backends", "backends.registry",
        "pipelines.graph", "pipelines.spec", "pipelines.ensemble", "pipelines.loan_decision",
        "deployments.observability.metrics", "deployments.observability.hub", "deployments.observability.logs",
        "backends.gpu"]


def test_pure_modules_import_no_framework_and_no_ray() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in PURE) +
            "bad = [m for m in ('ray', 'torch', 'tensorflow', 'onnxruntime') if m in sys.modules]\n"
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
