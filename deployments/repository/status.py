"""What is served, as the repository API reports it: per model, and per (model, version) row.

These cross from the controller actor to the server ingress (and to ``infergrid serve``'s banner),
so they are frozen dataclasses, not dicts. ``static_statuses`` builds them from a scan alone, for a
fixed ``serve deploy`` config that runs without a controller. Pure: no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.repository.scan import RepositorySnapshot

__all__ = ["READY", "LOADING", "UNAVAILABLE", "ModelStatus", "IndexRow", "ControllerInfo", "static_statuses",
           "static_index"]

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"


@dataclass(frozen=True)
class ModelStatus:
    """One model: the versions served (newest first), why it cannot serve, whether it has an endpoint.

    ``reason`` is set only when no version serves (a config problem of a serving model is in its
    index rows instead), so ``reason`` alone says "unavailable".
    """

    versions: tuple[int, ...] = ()
    reason: str | None = None
    endpoint: bool = False


@dataclass(frozen=True)
class IndexRow:
    """One row of Triton's ``POST /v2/repository/index``."""

    name: str
    state: str
    reason: str = ""
    version: str | None = None

    def to_json(self) -> dict:
        row = {"name": self.name, "state": self.state, "reason": self.reason}
        if self.version is not None:
            row["version"] = self.version
        return row


@dataclass(frozen=True)
class ControllerInfo:
    """What a running controller serves, for ``infergrid serve`` and tests."""

    mode: str
    repository: str
    poll_secs: float
    api_keys: int
    applications: dict[str, list[str]]


def static_statuses(snapshot: RepositorySnapshot) -> dict[str, ModelStatus]:
    """Statuses of a scanned repository as a fixed Serve config serves it (no controller)."""
    return {name: ModelStatus(() if entry.error else tuple(entry.served_versions), entry.error, not entry.error)
            for name, entry in snapshot.models.items()}


def static_index(statuses: dict[str, ModelStatus], ready_only: bool = False) -> list[IndexRow]:
    """Index rows of fixed statuses: every served version READY, a failed model UNAVAILABLE."""
    rows = []
    for name, status in sorted(statuses.items()):
        state = UNAVAILABLE if status.reason else READY
        for version in status.versions or (None,):
            rows.append(IndexRow(name, state, status.reason or "", None if version is None else str(version)))
    return [r for r in rows if r.state == READY] if ready_only else rows
