"""What the controller reports: model statuses and Triton's repository index rows, from its state.

Pure functions over ``ModelState`` (no Ray), so what a client sees for a loading, failed, unloaded
or half-swapped model is unit-testable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from deployments.control.state import LOADING, READY, UNAVAILABLE, ModelPolicy, ModelState
from deployments.repository.status import IndexRow, ModelStatus

__all__ = ["model_statuses", "index_rows"]


def _unloaded(state: ModelState, policy: ModelPolicy) -> bool:
    return not policy.wanted and not state.apps


def model_statuses(states: Mapping[str, ModelState], policies: Mapping[str, ModelPolicy]) -> dict[str, ModelStatus]:
    """One status per known model; ``reason`` only for a model with no served version."""
    out = {}
    for name, state in sorted(states.items()):
        if _unloaded(state, policies.get(name, ModelPolicy())):
            out[name] = ModelStatus((), "unloaded", False)
            continue
        failures = "; ".join(f.reason for f in state.failed.values())
        reason = None if state.served else (state.reason or failures or None)
        out[name] = ModelStatus(tuple(state.served), reason, state.endpoint)
    return out


def index_rows(states: Mapping[str, ModelState], policies: Mapping[str, ModelPolicy], folders: Iterable[str],
               ready_only: bool = False) -> list[IndexRow]:
    """Triton's repository index: one row per (model, version) with its state and reason."""
    rows = []
    for name in sorted(set(states) | set(folders)):
        state = states.get(name)
        if state is None or _unloaded(state, policies.get(name, ModelPolicy())):
            rows.append(IndexRow(name, UNAVAILABLE, "unloaded"))
            continue
        versions: dict[int, tuple[str, str]] = {}
        for app in state.apps.values():
            if app.state == LOADING:
                versions.setdefault(app.version, (LOADING, ""))
        for version, failure in state.failed.items():
            versions[version] = (UNAVAILABLE, failure.reason)
        for version in state.served:
            versions[version] = (READY, state.reason and f"config change not applied: {state.reason}")
        if not versions:
            rows.append(IndexRow(name, UNAVAILABLE if state.reason else LOADING, state.reason))
        for version, (row_state, reason) in sorted(versions.items(), reverse=True):
            rows.append(IndexRow(name, row_state, reason, str(version)))
    return [r for r in rows if r.state == READY] if ready_only else rows
