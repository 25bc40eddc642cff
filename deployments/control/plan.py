"""The reconcile plan: what to change so that what is served for a model matches its repository.

``plan(applied, snapshot, policy)`` is a pure function. The controller applies its changes (Serve
calls), records the outcomes with ``ModelState``'s transitions and asks again, until the plan is
empty. Each round returns one phase, in the order a zero-downtime swap needs:

1. a config problem, or the model gone / unloaded (remove it);
2. load: forget failures whose files or config changed, deploy missing versions beside the
   serving ones, resize running ones in place;
3. publish: the table of ready versions (deploying the endpoint when it is missing);
4. clean up: delete version applications no published table routes to.

A version that failed to load stays out (its ``Failure`` matches its tag) until its tag changes, so
a bad version never replaces a good one; removing the newest version is a rollback by the same
steps. Every case is unit-tested in ``tests/unit/test_control_plan.py`` without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployments.control.state import LOADING, CompositeSpec, ModelPolicy, ModelSnapshot, ModelState
from deployments.dataplane.table import Route, route_for, routes_token

__all__ = ["Change", "SetReason", "RemoveModel", "ForgetModel", "ForgetFailure", "DeployVersions", "Resize",
           "DeployEndpoint", "PublishRoutes", "DeleteVersions", "LoadMembers", "DeployComposite", "plan"]


@dataclass(frozen=True)
class SetReason:
    """Record (or clear, with "") why the repository's config cannot be applied."""

    reason: str


@dataclass(frozen=True)
class RemoveModel:
    """Unload the whole model: its endpoint first (so nothing is routed), then its versions."""


@dataclass(frozen=True)
class ForgetModel:
    """Drop the model from the controller's state (its folder is gone); ends the reconcile."""


@dataclass(frozen=True)
class ForgetFailure:
    """A failed version's files or config changed (or it is no longer wanted): it may load again."""

    version: int


@dataclass(frozen=True)
class DeployVersions:
    """Start these (version, tag) applications beside what serves, wait for them, warm each."""

    versions: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Resize:
    """A running version's instance count or autoscaling changed: update it in place (no restart)."""

    version: int
    app: str
    tag: str
    replicas: int
    autoscaling: Any = None


@dataclass(frozen=True)
class DeployEndpoint:
    """(Re)deploy the model's endpoint application with this table."""

    routes: tuple[Route, ...]
    replicas: int


@dataclass(frozen=True)
class PublishRoutes:
    """Make this the model's table; done once every replica routing to the model applied it."""

    routes: tuple[Route, ...]


@dataclass(frozen=True)
class DeleteVersions:
    """Delete version applications that no table routes to any more."""

    apps: tuple[str, ...]


@dataclass(frozen=True)
class LoadMembers:
    """Explicit mode: loading an ensemble or pipeline loads its members (as in Triton)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class DeployComposite:
    """(Re)deploy an ensemble's or pipeline's application for this config (its tag)."""

    version: int
    tag: str
    replicas: int


Change = (SetReason | RemoveModel | ForgetModel | ForgetFailure | DeployVersions | Resize | DeployEndpoint
          | PublishRoutes | DeleteVersions | LoadMembers | DeployComposite)


def plan(applied: ModelState, snapshot: ModelSnapshot, policy: ModelPolicy) -> list[Change]:
    """The next changes for one model; [] when what is served matches the repository.

    Args:
        applied: what the controller has applied for the model.
        snapshot: the model's folder as read for this reconcile.
        policy: what the repository API asked.
    """
    if not policy.wanted or snapshot.entry is None:
        changes: list[Change] = [RemoveModel()] if applied.apps or applied.endpoint else []
        if not (policy.explicit and snapshot.folder_exists):  # explicit mode keeps an unloaded model listed
            changes.append(ForgetModel())
        return changes
    if snapshot.error:
        return [SetReason(snapshot.error)] if snapshot.error != applied.reason else []
    if snapshot.composite is not None:
        return _composite(applied, snapshot.composite, policy)
    if applied.reason:
        return [SetReason("")]
    wanted = {v: tag for v, tag in snapshot.versions.items() if v not in policy.unloaded_versions}
    return _load(applied, snapshot, wanted) or _publish(applied, snapshot, wanted) or _clean_up(applied)


def _load(applied: ModelState, snapshot: ModelSnapshot, wanted: dict[int, str]) -> list[Change]:
    changes: list[Change] = [ForgetFailure(v) for v, failure in sorted(applied.failed.items())
                             if v not in wanted or failure.tag != wanted[v]]
    kept_out = {v for v, failure in applied.failed.items() if wanted.get(v) == failure.tag}
    to_load = tuple((v, tag) for v, tag in sorted(wanted.items())
                    if applied.ready_app(v, tag) is None and v not in kept_out)
    if to_load:
        changes.append(DeployVersions(to_load))
    for v, tag in sorted(wanted.items()):
        app = applied.ready_app(v, tag)
        if app is not None and (app.replicas, app.autoscaling) != (snapshot.replicas, snapshot.autoscaling):
            changes.append(Resize(v, app.app, tag, snapshot.replicas, snapshot.autoscaling))
    return changes


def _publish(applied: ModelState, snapshot: ModelSnapshot, wanted: dict[int, str]) -> list[Change]:
    config = snapshot.config
    assert config is not None
    ready = {v: app for v, tag in wanted.items() if (app := applied.ready_app(v, tag)) is not None}
    if ready:
        routes = tuple(route_for(v, ready[v].app, config) for v in sorted(ready, reverse=True))
    else:  # nothing new can serve: whatever served keeps serving (with the new batching)
        routes = tuple(route_for(r.version, r.app, config) for r in applied.routes)
    if not routes:
        return []
    if not applied.endpoint or snapshot.endpoint_replicas != applied.endpoint_replicas:
        return [DeployEndpoint(routes, snapshot.endpoint_replicas)]
    if routes_token(routes) != routes_token(applied.routes):
        return [PublishRoutes(routes)]
    return []


def _clean_up(applied: ModelState) -> list[Change]:
    serving = {r.app for r in applied.routes}
    stale = tuple(sorted(a.app for a in applied.apps.values() if a.app not in serving and a.state != LOADING))
    return [DeleteVersions(stale)] if stale else []


def _composite(applied: ModelState, spec: CompositeSpec, policy: ModelPolicy) -> list[Change]:
    if spec.error:
        return [SetReason(spec.error)] if spec.error != applied.reason else []
    if applied.reason:
        return [SetReason("")]
    changes: list[Change] = [LoadMembers(policy.members_not_loaded)] if policy.members_not_loaded else []
    if not (applied.endpoint and applied.composite_tag == spec.tag):
        changes.append(DeployComposite(spec.version, spec.tag, spec.replicas))
    return changes
