"""Several model repositories served as one (tritonserver's repeated ``--model-repository``), and
model folders named one by one (TF Serving's ``--model_name`` + ``--model_base_path``, or its
``--model_config_file``, whose version policy and labels are laid over the folder's own config).

A model is its named folder, else the folder of that name in the first repository holding one; a
name found twice is served from the first and logged once as a conflict (Triton refuses duplicates
across repositories; infergrid keeps serving the first so one stray copy does not take a model
down). Pure: paths and files only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from backends.errors import ConfigError
from backends.model_config import InstanceGroup, VersionPolicy
from deployments.repository.scan import MODEL_NAME, ModelEntry, scan_model
from deployments.repository.traffic import TRAFFIC_FILE, read_traffic

__all__ = ["RepositoryRoots"]

logger = logging.getLogger("infergrid")


class RepositoryRoots:
    """The repositories, in the order given, and the models named one by one (``named``)."""

    def __init__(self, roots: Sequence[Path | str] | Path | str, named: Mapping[str, Path | str] | None = None,
                 overrides: Mapping[str, Any] | None = None, batching: Any = None) -> None:
        items = [roots] if isinstance(roots, (str, Path)) else list(roots)
        self.named: dict[str, Path] = {name: Path(path) for name, path in (named or {}).items()}
        self.registered: set[str] = set()  # named at run time (TorchServe's register): kept by ``rename``
        # name -> tfserving_config.ModelOverride (its version policy and labels)
        self.overrides: dict[str, Any] = dict(overrides or {})
        # tfserving_batching.TfBatching (--enable_batching): every model without its own dynamic_batching
        self.batching = batching
        if not items and not self.named:
            raise ValueError("at least one model repository (or named model folder) is needed")
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in items)
        self._conflicts_logged: set[str] = set()

    def __str__(self) -> str:
        return ",".join([str(p) for p in self.paths] + [f"{n}={p}" for n, p in sorted(self.named.items())])

    def folder(self, name: str) -> Path:
        """The folder of model ``name``: its named folder, else in the first repository that has it
        (else a path that does not exist)."""
        if name in self.named:
            return self.named[name]
        for root in self.paths:
            candidate = root / name
            if candidate.is_dir():
                return candidate
        return (self.paths[0] if self.paths else Path("/nonexistent-model-repository")) / name

    def scan(self, name: str, strict: bool = False) -> ModelEntry:
        """Read model ``name``'s folder (``scan_model``), with what TF Serving's flags say of it laid
        over its config: the version policy (versions re-chosen) and the version labels of
        --model_config_file, the batching of --enable_batching where the model sets none; then its
        traffic policy (``traffic.json``), whose versions are served whatever the version policy says."""
        return _with_traffic(self._overridden(name, strict))

    def _overridden(self, name: str, strict: bool) -> ModelEntry:
        entry = scan_model(self.folder(name), strict, name)
        override = self.overrides.get(name)
        if entry.config is None or (override is None and self.batching is None):
            return entry
        config = entry.config
        if override is not None:
            if override.version_policy is not None:
                config = replace(config, version_policy=override.version_policy)
            entry = replace(entry, config=replace(config, version_labels=override.version_labels))
            if override.replicas:
                groups = entry.config.instance_group or (InstanceGroup(),)
                entry = replace(entry, config=replace(entry.config, instance_group=(
                    replace(groups[0], count=override.replicas),)))
            if entry.error is None and entry.versions and not entry.served_versions:
                return replace(entry, error=f"{name}: model_version_policy: selects none of the versions on disk "
                                            f"{sorted(entry.versions)}")
        config = entry.config
        if self.batching is not None and config.dynamic_batching is None and not config.composite:
            try:
                batching = self._batching_of(entry)
            except ConfigError as exc:
                return replace(entry, error=str(exc))
            rows = config.max_batch_size or batching.max_batch_size
            entry = replace(entry, config=replace(config, dynamic_batching=batching.dynamic_batching,
                                                  max_batch_size=rows,
                                                  triton={**config.triton, **batching.triton_fields(rows)}))
        return entry

    def _batching_of(self, entry: ModelEntry) -> Any:
        """--enable_batching's TfBatching, or with --enable_per_model_batching_parameters the
        batching_params.pbtxt of the newest version served (one batching per model here)."""
        if not self.batching.per_model or not entry.served_versions:
            return self.batching
        from deployments.repository.tfserving_batching import version_batching

        return version_batching(entry.path / str(entry.served_versions[0]), self.batching)

    def rename(self, named: Mapping[str, Path | str], overrides: Mapping[str, Any]) -> None:
        """Serve these named folders and overrides from now on (TF Serving's config file, re-read):
        a model no longer named is no model at the next poll, and goes. Registered models stay."""
        kept = {name: self.named[name] for name in self.registered if name in self.named}
        kept_overrides = {name: self.overrides[name] for name in self.registered if name in self.overrides}
        self.named = {**{name: Path(path) for name, path in named.items()}, **kept}
        self.overrides = {**dict(overrides), **kept_overrides}

    def place(self, name: str, folder: Path | None, override: Any = None) -> None:
        """Name model ``name``'s folder at run time (None: it is no longer named) with its override."""
        if folder is None:
            self.registered.discard(name)
            self.named.pop(name, None)
            self.overrides.pop(name, None)
            return
        self.registered.add(name)
        self.named[name] = Path(folder)
        if override is None:
            self.overrides.pop(name, None)
        else:
            self.overrides[name] = override

    def model_names(self) -> list[str]:
        """Every model folder name across the repositories (hidden folders and bad names skipped)."""
        seen: dict[str, Path] = {name: path for name, path in self.named.items() if path.is_dir()}
        for root in self.paths:
            try:
                folders = [p for p in root.iterdir() if p.is_dir()]
            except OSError as exc:
                logger.error("cannot read the model repository %s: %s", root, exc)
                continue
            for path in folders:
                name = path.name
                if not MODEL_NAME.match(name) or name.startswith("."):
                    continue
                if name in seen:
                    self._conflict(name, seen[name], path)
                    continue
                seen[name] = path
        return sorted(seen)

    def _conflict(self, name: str, first: Path, other: Path) -> None:
        if name not in self._conflicts_logged:
            self._conflicts_logged.add(name)
            logger.error("model %s is in two repositories (%s and %s); serving the first", name, first, other)

    def is_root(self, path: Path) -> bool:
        return path in self.paths

    def named_at(self, path: Path) -> str | None:
        """The named model whose folder is ``path`` (None: none is)."""
        return next((name for name, folder in self.named.items() if folder == path), None)


def _with_traffic(entry: ModelEntry) -> ModelEntry:
    """``entry`` with its traffic.json applied: the policy on its config, its versions served (weight 0
    too). A bad policy file, or one naming a version not in the folder, is the model's problem: the
    versions serving keep serving."""
    if entry.config is None or entry.error or entry.config.composite:
        return entry
    try:
        policy = read_traffic(entry.path)
    except ConfigError as exc:
        return replace(entry, error=str(exc))
    if policy is None:
        return entry
    missing = [version for version in policy.versions if version not in entry.versions]
    if missing:
        return replace(entry, error=f"{entry.path / TRAFFIC_FILE}: version {missing[0]} is not in the model folder "
                                    f"(versions: {sorted(entry.versions)})")
    served = set(entry.config.version_policy.select(list(entry.versions))) | set(policy.versions)
    return replace(entry, config=replace(entry.config, traffic=policy,
                                         version_policy=VersionPolicy(kind="specific", versions=tuple(sorted(served)))))
