"""Shared fixtures: the example repository, built once per test session into a temp folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))  # ts_archives: TorchServe archives made by torch-model-archiver


@pytest.fixture(scope="session")
def example_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fraud (ONNX), credit_score (TF SavedModel) and resnet50 (TorchScript), version 1 each."""
    from build_repository import build_repository

    return build_repository(tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="session")
def ts_model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchServe model store of three archives made by torch-model-archiver (``ts_archives``)."""
    from ts_archives import model_store

    return model_store(tmp_path_factory.mktemp("torchserve"))


@pytest.fixture(scope="session")
def ts_versioned_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchServe model store with versions "1.0" and "2.0" of ``swap`` (``ts_archives.versioned_store``)."""
    from ts_archives import versioned_store

    return versioned_store(tmp_path_factory.mktemp("torchserve-versions"))
