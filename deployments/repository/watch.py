"""What changed on disk, by polling: folder fingerprints and "is this version folder complete yet".

Polling with ``stat`` works on every filesystem, network ones included (inotify does not see
changes made by other NFS clients). A version folder counts as complete once its files have been
unchanged for one poll interval: its newest file is already that old, or two polls one interval
apart saw the same fingerprint, or a file event saw the folder renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.model_config import InstanceGroup, ModelConfig, VersionPolicy
from deployments.repository.autoscaling import PREFIX as AUTOSCALING

__all__ = ["FolderState", "folder_state", "CompletionTracker", "load_identity"]

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class FolderState:
    """A folder's files at one moment: a digest of (path, size, mtime) and the newest mtime."""

    digest: str
    newest_mtime: float
    files: int


def _walk(folder: Path, top: bool = True):
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=True):
            yield from _walk(Path(entry.path), top=False)
        elif not (top and entry.name == CONFIG_FILE):
            try:
                stat = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            yield entry.path, stat.st_size, stat.st_mtime_ns


def folder_state(folder: Path) -> FolderState:
    """Fingerprint every file under ``folder`` (a top-level config.pbtxt is not part of it)."""
    digest, newest, count = hashlib.sha1(), 0, 0
    for path, size, mtime_ns in sorted(_walk(Path(folder))):
        digest.update(f"{os.path.relpath(path, folder)}\0{size}\0{mtime_ns}\n".encode())
        newest, count = max(newest, mtime_ns), count + 1
    return FolderState(digest.hexdigest(), newest / 1e9, count)


@dataclass
class CompletionTracker:
    """Remembers what each folder looked like at the previous poll."""

    settle_s: float
    _seen: dict[Path, tuple[FolderState, float]] = field(default_factory=dict)
    _moved_in: set[Path] = field(default_factory=set)

    def moved_in(self, folder: Path) -> None:
        """``folder`` was renamed into place (a file event said so): it is complete as it is."""
        self._moved_in.add(folder)

    def complete(self, folder: Path, state: FolderState, now: float | None = None) -> bool:
        """True when ``folder`` has files and they have not changed for ``settle_s`` (or it was moved in)."""
        if folder in self._moved_in and state.files:
            return True
        now = time.time() if now is None else now
        previous = self._seen.get(folder)
        if previous is None or previous[0].digest != state.digest:
            self._seen[folder] = (state, now)
            first_seen = now
        else:
            first_seen = previous[1]
        if state.files == 0:
            return False
        return state.newest_mtime <= now - self.settle_s or now - first_seen >= self.settle_s

    def forget(self, keep: set[Path]) -> None:
        """Drop folders that no longer exist."""
        for folder in list(self._seen):
            if folder not in keep:
                del self._seen[folder]
        self._moved_in &= keep


# Triton config fields applied without a reload (routing and replica counts).
_CHANGED_IN_PLACE = frozenset({"dynamic_batching", "instance_group", "version_policy"})


def _loaded_fields(triton: dict) -> dict:
    """The Triton config fields a load depends on: not those changed in place, nor autoscaling parameters."""
    kept = {k: v for k, v in triton.items() if k not in _CHANGED_IN_PLACE}
    if isinstance(kept.get("parameters"), dict):
        kept["parameters"] = {k: v for k, v in kept["parameters"].items() if not k.startswith(AUTOSCALING)}
        if not kept["parameters"]:
            del kept["parameters"]
    return kept


def load_identity(config: ModelConfig, files: FolderState) -> str:
    """What a version's replicas load: files plus every config field that is not changed in place.

    Dynamic batching, instance counts, autoscaling, the version policy, TF Serving's version labels and
    the traffic policy change without reloading (routing, replica counts and bounds, the front door's
    label lookup), so they are left out; anything else in the config means a new load.
    """
    loaded = replace(config, dynamic_batching=None,
                     instance_group=tuple(sorted({replace(g, count=1) for g in config.instance_group}
                                                 or {InstanceGroup()}, key=repr)),
                     version_policy=VersionPolicy(), version_labels=(), traffic=None, warnings=(), autoscaling=None,
                     parameters={k: v for k, v in config.parameters.items() if not k.startswith(AUTOSCALING)},
                     triton=_loaded_fields(config.triton))
    digest = hashlib.sha1(repr(loaded).encode())
    digest.update(files.digest.encode())
    return digest.hexdigest()[:10]
