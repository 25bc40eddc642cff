"""Read a model repository from disk into a snapshot: models, versions, configs, problems.

Layout (Triton's): ``<repo>/<model>/config.pbtxt`` and numeric version folders. Folders not named
by a number, or whose name starts with "0", are not versions (as in Triton). A model folder with no
config, or a config without a platform, gets its platform from the files in its newest version; a
folder holding a model file and no version folder is served as version 1. Problems never raise:
they become the model's ``error``, so one broken model cannot stop the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from backends.errors import ConfigError
from backends.model_config import ModelConfig
from backends.registry import detect_platform
from deployments.repository.config import load_config_file

__all__ = ["ModelEntry", "RepositorySnapshot", "scan_repository", "scan_model", "MODEL_NAME"]

MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")


@dataclass(frozen=True)
class ModelEntry:
    """One model folder as found on disk."""

    name: str
    path: Path
    config: ModelConfig | None
    versions: dict[int, Path]
    error: str | None = None

    @property
    def served_versions(self) -> list[int]:
        """Versions the version policy keeps, newest first."""
        if self.config is None:
            return []
        return self.config.version_policy.select(list(self.versions))


@dataclass(frozen=True)
class RepositorySnapshot:
    """Every model of a repository at one moment."""

    root: Path
    models: dict[str, ModelEntry]


def _versions(model_dir: Path) -> dict[int, Path]:
    versions = {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and _VERSION.match(p.name)}
    if not versions and detect_platform(model_dir):
        versions = {1: model_dir}
    return versions


def strict_problem(model_dir: Path, config: ModelConfig) -> str | None:
    """What ``--strict-model-config=true`` refuses (Triton's rule: nothing is completed from the
    model, so the file must say the platform, and every model that is not an ensemble its tensors)."""
    name = model_dir.name
    where = f"{name}/config.pbtxt"
    if not ((model_dir / "config.pbtxt").is_file() or (model_dir / "config.json").is_file()):
        return f"{where}: missing, and --strict-model-config=true completes nothing from the model"
    if not config.platform:
        return f"{where}: platform: neither platform nor backend is set (--strict-model-config=true)"
    if not config.composite and (not config.inputs or not config.outputs):
        return f"{where}: input/output: not declared (--strict-model-config=true reads nothing from the model)"
    return None


def scan_model(model_dir: Path, strict: bool = False, name: str | None = None) -> ModelEntry:
    """Read one model folder; any problem is recorded in ``error`` with the file and field.

    ``strict``: Triton's ``--strict-model-config=true`` (see ``strict_problem``); ``name``: the
    model's name when it is not the folder's (TF Serving's ``--model_name`` over ``--model_base_path``).
    """
    name = name or model_dir.name
    try:
        versions = _versions(model_dir)
        config = load_config_file(model_dir, name)
    except ConfigError as exc:
        return ModelEntry(name, model_dir, None, {}, str(exc))
    except OSError as exc:
        return ModelEntry(name, model_dir, None, {}, f"{name}: cannot read folder: {exc}")
    problem = strict_problem(model_dir, config) if strict else None
    if problem:
        return ModelEntry(name, model_dir, config, versions, problem)
    if not config.platform:
        newest = versions[max(versions)] if versions else None
        platform = detect_platform(newest) if newest else None
        if platform is None:
            return ModelEntry(name, model_dir, config, versions,
                              f"{name}/config.pbtxt: platform: not set, and no model.onnx, model.pt, model.pt2, "
                              f"model.savedmodel or saved_model.pb found to infer it from")
        config = replace(config, platform=platform)
    if not versions and not config.composite:
        return ModelEntry(name, model_dir, config, versions, f"{name}: no version folders (1, 2, ...) found")
    entry = ModelEntry(name, model_dir, config, versions)
    if versions and not entry.served_versions:
        return replace(entry, error=f"{name}/config.pbtxt: version_policy: selects none of the versions on disk "
                                    f"{sorted(versions)}")
    return entry


def scan_repository(root: Path) -> RepositorySnapshot:
    """Scan every model folder under ``root`` (hidden folders and bad names are skipped).

    Raises:
        ConfigError: ``root`` itself is not a readable folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a folder")
    models = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if MODEL_NAME.match(model_dir.name) and not model_dir.name.startswith("."):
            models[model_dir.name] = scan_model(model_dir)
    return RepositorySnapshot(root=root, models=models)
