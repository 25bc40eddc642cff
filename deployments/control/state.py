"""The controller's typed state: what it has applied, what the repository holds, what it was asked.

Three inputs to the pure plan (``deployments.control.plan``), all frozen:

* ``ModelState``    what is applied for one model: its version applications, failed versions,
                    the published routing table, its endpoint (or composite) application;
* ``ModelSnapshot`` what the repository holds for it now (read once per reconcile);
* ``ModelPolicy``   what the repository API asked (explicit mode: loaded or not, unloaded
                    versions, a config override).

The transition methods of ``ModelState`` are the only way state changes: the controller calls
them after each Serve call succeeds or fails, and the plan's unit tests call the same methods to
simulate a cluster. Pure: no Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from backends.model_config import ModelConfig
from deployments.dataplane.table import Route
from deployments.names import endpoint_app
from deployments.repository.scan import ModelEntry
from deployments.repository.status import LOADING, READY, UNAVAILABLE

__all__ = ["VersionApp", "Failure", "ModelState", "CompositeSpec", "ModelSnapshot", "ModelPolicy", "adopt",
           "READY", "LOADING", "UNAVAILABLE"]


@dataclass(frozen=True)
class VersionApp:
    """One version application: deployed (or deploying), and what it loaded (its tag)."""

    version: int
    app: str
    tag: str
    state: str = LOADING
    replicas: int = 1
    autoscaling: Any = None  # its AutoscalingSpec when autoscaled (then ``replicas`` is the count it started with)

    @property
    def most_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas


@dataclass(frozen=True)
class Failure:
    """A version that failed to load with these files and config (its tag): kept out until the tag changes."""

    tag: str
    reason: str


@dataclass(frozen=True)
class ModelState:
    """What the controller has applied for one model. Never mutated: transitions return a new one."""

    name: str
    apps: Mapping[str, VersionApp] = field(default_factory=dict)  # version applications by name
    failed: Mapping[int, Failure] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()  # the published table, newest first
    endpoint: bool = False  # the model's application (endpoint or composite) runs
    endpoint_replicas: int = 1
    composite_tag: str = ""  # an ensemble's or pipeline's deployed config (see pipelines.spec.composite_tag)
    reason: str = ""  # a config problem (the serving versions, if any, keep serving)

    @property
    def served(self) -> list[int]:
        """Versions in the published table, newest first."""
        return [r.version for r in self.routes]

    def ready_app(self, version: int, tag: str) -> VersionApp | None:
        """The running application of ``version`` that loaded ``tag``, if any."""
        return next((a for a in self.apps.values() if a.version == version and a.tag == tag and a.state == READY),
                    None)

    # --- transitions ------------------------------------------------------------------------

    def with_reason(self, reason: str) -> ModelState:
        return replace(self, reason=reason)

    def deploying(self, apps: Iterable[VersionApp]) -> ModelState:
        return replace(self, apps={**self.apps, **{a.app: a for a in apps}})

    def loaded(self, app: str, reason: str = "") -> ModelState:
        """The outcome of loading ``app``: READY, or (``reason``) a failure recorded for its version."""
        if not reason:
            return replace(self, apps={**self.apps, app: replace(self.apps[app], state=READY)})
        failed = self.apps[app]
        return replace(self, apps={**self.apps, app: replace(failed, state=UNAVAILABLE)},
                       failed={**self.failed, failed.version: Failure(failed.tag, reason)})

    def resized(self, app: str, replicas: int, autoscaling: Any = None) -> ModelState:
        return replace(self, apps={**self.apps, app: replace(self.apps[app], replicas=replicas,
                                                             autoscaling=autoscaling)})

    def published(self, routes: tuple[Route, ...], endpoint_replicas: int | None = None) -> ModelState:
        """``routes`` is the table; with ``endpoint_replicas``, the endpoint application was (re)deployed."""
        if endpoint_replicas is None:
            return replace(self, routes=tuple(routes))
        return replace(self, routes=tuple(routes), endpoint=True, endpoint_replicas=endpoint_replicas)

    def without_apps(self, names: Iterable[str]) -> ModelState:
        gone = set(names)
        return replace(self, apps={n: a for n, a in self.apps.items() if n not in gone})

    def without_failure(self, version: int) -> ModelState:
        return replace(self, failed={v: f for v, f in self.failed.items() if v != version})

    def without_failures(self) -> ModelState:
        """An explicit load retries every failed version."""
        return replace(self, failed={})

    def unrouted(self) -> ModelState:
        """The model's application is going: no table routes to it any more."""
        return replace(self, endpoint=False, routes=(), composite_tag="")

    def composite_deployed(self, version: int, tag: str, replicas: int) -> ModelState:
        return replace(self, endpoint=True, endpoint_replicas=replicas, composite_tag=tag,
                       routes=(Route(version, endpoint_app(self.name)),))

    def removed(self) -> ModelState:
        """Nothing served any more (its config problem, if any, is kept)."""
        return ModelState(self.name, reason=self.reason)


@dataclass(frozen=True)
class CompositeSpec:
    """An ensemble or pipeline as the repository holds it, after the load-time checks."""

    version: int
    tag: str
    members: tuple[str, ...] = ()
    error: str = ""  # a failed check: the composite keeps what it serves
    replicas: int = 1


@dataclass(frozen=True)
class ModelSnapshot:
    """One model folder as read for one reconcile.

    ``entry`` is None when the folder is gone or the model is not wanted (nothing is read then).
    ``versions`` holds the complete version folders the version policy keeps, each with its tag
    (``deployments.repository.watch.load_identity``).
    """

    name: str
    folder_exists: bool
    entry: ModelEntry | None = None
    error: str = ""
    versions: Mapping[int, str] = field(default_factory=dict)
    replicas: int = 1  # instance_group count of each version application
    autoscaling: Any = None  # the versions' AutoscalingSpec (deployments.repository.autoscaling), or None
    endpoint_replicas: int = 1  # parameters.endpoint_replicas
    composite: CompositeSpec | None = None

    @property
    def config(self) -> ModelConfig | None:
        return self.entry.config if self.entry is not None else None


@dataclass(frozen=True)
class ModelPolicy:
    """What the repository API asked for one model (poll and none modes: everything, always)."""

    wanted: bool = True
    explicit: bool = False
    unloaded_versions: frozenset[int] = frozenset()
    override: ModelConfig | None = None
    members_not_loaded: tuple[str, ...] = ()  # explicit mode: a composite's members nobody loaded yet


def adopt(running: Mapping[str, tuple[str, int, str, bool, int]], endpoints: Iterable[str]) -> dict[str, ModelState]:
    """Rebuild state from running applications (a restarted controller).

    Args:
        running: version applications by name -> (model, version, tag, is running, replicas);
            a failed one (``is running`` false) is kept out of the table.
        endpoints: models whose application (endpoint or composite) runs.

    Returns:
        One state per model, its table the newest running application of each version.
    """
    states: dict[str, ModelState] = {name: ModelState(name, endpoint=True) for name in endpoints}
    for app, (model, version, tag, is_running, replicas) in running.items():
        state = states.get(model) or ModelState(model)
        states[model] = state.deploying([VersionApp(version, app, tag, READY if is_running else UNAVAILABLE,
                                                    replicas)])
    for model, state in states.items():
        if state.endpoint:
            newest: dict[int, VersionApp] = {}
            for a in state.apps.values():
                if a.state == READY:
                    newest.setdefault(a.version, a)
            routes = tuple(Route(v, newest[v].app) for v in sorted(newest, reverse=True))
            states[model] = state.published(routes)
    return states
