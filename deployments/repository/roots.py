"""Several model repositories served as one (tritonserver's repeated ``--model-repository``).

A model is the folder of that name in the first repository holding one; a name found in two
repositories is served from the first and logged once as a conflict (Triton refuses duplicates
across repositories; infergrid keeps serving the first so one stray copy does not take a model
down). Pure: paths only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from deployments.repository.scan import MODEL_NAME

__all__ = ["RepositoryRoots"]

logger = logging.getLogger("infergrid")


class RepositoryRoots:
    """The repositories, in the order given."""

    def __init__(self, roots: Sequence[Path | str] | Path | str) -> None:
        items = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not items:
            raise ValueError("at least one model repository is needed")
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in items)
        self._conflicts_logged: set[str] = set()

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.paths)

    def folder(self, name: str) -> Path:
        """The folder of model ``name``: in the first repository that has it (else the first's path)."""
        for root in self.paths:
            candidate = root / name
            if candidate.is_dir():
                return candidate
        return self.paths[0] / name

    def model_names(self) -> list[str]:
        """Every model folder name across the repositories (hidden folders and bad names skipped)."""
        seen: dict[str, Path] = {}
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

    def watch_targets(self) -> Iterable[Path]:
        return self.paths
