"""The reconcile loop of one model: read its folder, ask the pure plan, apply each change, repeat.

``Reconciler`` owns the controller's typed state (one ``ModelState`` and ``ModelPolicy`` per model)
and is the only code that changes it, through ``ModelState``'s transitions after each Serve call.
``reconcile(name)`` never raises: one model's failure is logged and never stops another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from backends.errors import ServingError
from backends.model_config import ModelConfig
from deployments.applications import builders as apps
from deployments.applications.ensembles import composite_application
from deployments.control import plan as p
from deployments.control.publication import TablePublisher
from deployments.control.serve_calls import ServeCalls
from deployments.control.state import (
    LOADING,
    CompositeSpec,
    ModelPolicy,
    ModelSnapshot,
    ModelState,
    VersionApp,
)
from deployments.names import CONTROLLER_NAME, endpoint_app, version_app
from deployments.observability.metrics import Recorder
from deployments.repository.roots import RepositoryRoots
from deployments.repository.scan import MODEL_NAME, ModelEntry, scan_model
from deployments.repository.watch import CompletionTracker, folder_state, load_identity
from pipelines.spec import check_composite, composite_tag, composite_version, member_names

__all__ = ["Reconciler", "DRAIN_GRACE_S"]

logger = logging.getLogger("infergrid")

DRAIN_GRACE_S = 0.5  # after the acks: requests routed just before them reach the old version's replicas
MAX_ROUNDS = 16  # a plan converges in a few rounds; more would mean a bug, never a hang


class Reconciler:
    """Makes what is served for each model match its folder, one model at a time.

    Args:
        roots: the model repositories (a model is its folder in the first that has it).
        explicit: explicit model control mode (unwanted models stay listed).
        tracker: decides when a version folder is complete.
        serve_calls: the controller's Serve calls.
        tables: routing-table notifications and acks.
        recorder: load times and failures, for ``/metrics``.
        gpu: the cluster has a GPU (KIND_AUTO versions get one).
        auth: an ``AuthPolicy.to_dict()`` for every HTTP replica deployed.
        on_member_wanted: called with a member that loading a composite loaded (explicit mode),
            so that the member is reconciled too.
        strict: ``--strict-model-config=true``: a config must declare what would be completed.
    """

    def __init__(self, roots: RepositoryRoots, explicit: bool, tracker: CompletionTracker, serve_calls: ServeCalls,
                 tables: TablePublisher, recorder: Recorder, gpu: bool, auth: dict | None,
                 on_member_wanted: Callable[[str], None], strict: bool = False) -> None:
        self._roots, self._explicit, self._tracker, self._strict = roots, explicit, tracker, strict
        self._serve, self._tables, self._recorder = serve_calls, tables, recorder
        self._gpu, self._auth = gpu, auth
        self.states: dict[str, ModelState] = {}
        self.policies: dict[str, ModelPolicy] = {}
        self._warned: dict[str, frozenset[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_member_wanted = on_member_wanted

    def most_replicas(self) -> dict[tuple[str, str], int]:
        """The replica bound of every deployed version by (model, version), for ``/metrics``."""
        return {(name, str(app.version)): app.most_replicas
                for name, state in self.states.items() for app in state.apps.values()}

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def know(self, name: str, wanted: bool | None = None) -> None:
        """Track ``name`` (wanted unless explicit mode says otherwise)."""
        policy = self.policies.get(name) or ModelPolicy(wanted=not self._explicit, explicit=self._explicit)
        self.policies[name] = policy if wanted is None else replace(policy, wanted=wanted)
        self.states.setdefault(name, ModelState(name))

    def tracker_forget(self, keep: set[Path]) -> None:
        """Drop completion records of folders not in ``keep`` (they are gone)."""
        self._tracker.forget(keep)

    def tracker_moved_in(self, folder: Path) -> None:
        """inotify saw ``folder`` renamed into place: it is complete now."""
        self._tracker.moved_in(folder)

    def forget_failures(self, name: str) -> None:
        """An explicit load retries every failed version of ``name``."""
        self.states[name] = self.states[name].without_failures()

    def set_policy(self, name: str, **changes) -> None:
        self.know(name)
        self.policies[name] = replace(self.policies[name], **changes)

    async def reconcile_locked(self, name: str) -> None:
        """Reconcile ``name`` under its lock; never raises."""
        async with self.lock(name):
            try:
                await self.reconcile(name)
            except Exception:  # noqa: BLE001 - one model's failure never stops the others
                logger.exception("model %s: reconciling failed", name)

    async def reconcile(self, name: str) -> None:
        """Apply the plan for ``name`` until it is empty (the caller holds its lock)."""
        self.know(name)
        snapshot = self.snapshot(name, self.policies[name])
        for _ in range(MAX_ROUNDS):
            changes = p.plan(self.states[name], snapshot, self.policies[name])
            if not changes:
                self._refresh_served(name, snapshot)
                return
            for change in changes:
                if not await self._apply(name, snapshot, change):
                    return  # a failed step or a forgotten model: the next poll plans again
        logger.error("model %s: the reconcile plan did not converge in %d rounds", name, MAX_ROUNDS)

    def _refresh_served(self, name: str, snapshot: ModelSnapshot) -> None:
        """What the front door knows of a served model follows its config once the plan is done:
        settings changed in place (version labels moved, batching, counts) reach it with no new
        load, and only after any version they name serves (the plan published it first)."""
        if self.states[name].endpoint and snapshot.entry is not None and snapshot.composite is None \
                and not snapshot.error:
            self._tables.served.add(apps.served_model(snapshot.entry))

    # --- reading the repository -------------------------------------------------------------

    def snapshot(self, name: str, policy: ModelPolicy) -> ModelSnapshot:
        """The model's folder as this reconcile sees it (nothing is read for an unwanted model)."""
        folder = self._roots.folder(name)
        if not policy.wanted or not folder.is_dir():
            return ModelSnapshot(name, folder.is_dir())
        entry = self._roots.scan(name, self._strict)
        if policy.override is not None and not entry.error:
            config = policy.override
            if not config.platform and entry.config is not None:
                config = replace(config, platform=entry.config.platform)
            if entry.config is not None:  # traffic.json is beside the config, not in it: it still holds
                config = replace(config, traffic=entry.config.traffic)
            entry = replace(entry, config=config)
        if entry.error:
            return ModelSnapshot(name, True, entry, error=entry.error)
        config = entry.config
        assert config is not None
        if config.composite:
            return ModelSnapshot(name, True, entry, composite=self._composite_spec(entry))
        self._warn_once(name, config)
        versions = {}
        for version in entry.served_versions:
            files = folder_state(entry.versions[version])
            if self._tracker.complete(entry.versions[version], files):
                versions[version] = load_identity(config, files)
        return ModelSnapshot(name, True, entry, versions=versions, replicas=config.replica_count,
                             autoscaling=config.autoscaling,
                             endpoint_replicas=int(config.parameter("endpoint_replicas", "1") or 1))

    def _warn_once(self, name: str, config: ModelConfig) -> None:
        """Config warnings are logged once per config, not once per poll."""
        warnings = frozenset(config.warnings)
        for warning in sorted(warnings - self._warned.get(name, frozenset())):
            logger.warning("%s", warning)
        self._warned[name] = warnings

    def _composite_spec(self, entry: ModelEntry) -> CompositeSpec:
        config = entry.config
        assert config is not None
        version = composite_version(entry.served_versions)
        tag = composite_tag(config, version)
        try:
            names = member_names(config)
            check_composite(config, self._member_configs(names))
        except ServingError as exc:
            return CompositeSpec(version, tag, error=str(exc), replicas=config.replica_count)
        if self._explicit:
            unloaded = tuple(n for n in names if not self.policies.get(n, ModelPolicy(wanted=False)).wanted)
            self.set_policy(entry.name, members_not_loaded=unloaded)
        return CompositeSpec(version, tag, names, replicas=config.replica_count)

    def _member_configs(self, names: tuple[str, ...]) -> dict[str, ModelConfig | None]:
        """Member configs for the composite checks: None where the repository has no such folder."""
        members: dict[str, ModelConfig | None] = {}
        for name in names:
            folder = self._roots.folder(name)
            if not MODEL_NAME.match(name) or not folder.is_dir():
                members[name] = None
                continue
            # A member whose config is broken is still a member: it answers 503 until fixed.
            members[name] = scan_model(folder, name=name).config or ModelConfig(name=name, platform="")
        return members

    # --- applying one change ----------------------------------------------------------------

    async def _apply(self, name: str, snapshot: ModelSnapshot, change: p.Change) -> bool:
        """Carry out ``change`` and record its outcome; False ends this reconcile."""
        match change:
            case p.RemoveModel():
                await self._remove_model(name)
            case p.DeployVersions(versions):
                await self._deploy_versions(name, snapshot, versions)
            case p.Resize(version, app, tag, replicas, autoscaling):
                bounds = f"{autoscaling.min_replicas}..{autoscaling.max_replicas}" if autoscaling else replicas
                logger.info("model %s: version %d replicas -> %s", name, version, bounds)
                await self._serve.start(lambda: [self._version_spec(snapshot, version, tag)])
                self.states[name] = self.states[name].resized(app, replicas, autoscaling)
            case p.DeployEndpoint(routes, replicas):
                return await self._deploy_endpoint(name, snapshot, routes, replicas)
            case p.PublishRoutes(routes):
                await self._publish(name, routes)
            case p.DeleteVersions(names):
                await self._delete_versions(name, names)
            case p.DeployComposite(version, tag, replicas):
                return await self._deploy_composite(name, snapshot, version, tag, replicas)
            case _:
                return self._record(name, change)
        return True

    def _record(self, name: str, change: p.Change) -> bool:
        """The changes that touch no Serve application: only the controller's own state."""
        state = self.states[name]
        match change:
            case p.SetReason(reason):
                if reason:
                    logger.error("model %s: %s%s", name, reason,
                                 " (the serving versions keep serving)" if state.served else "")
                self.states[name] = state.with_reason(reason)
            case p.ForgetModel():
                self.states.pop(name, None)
                self.policies.pop(name, None)
                return False
            case p.ForgetFailure(version):
                self.states[name] = state.without_failure(version)
            case p.LoadMembers(members):
                for member in members:
                    self.set_policy(member, wanted=True)
                    self._on_member_wanted(member)
                self.set_policy(name, members_not_loaded=())
        return True

    async def _publish(self, name: str, routes: tuple) -> None:
        self.states[name] = self.states[name].published(routes)
        self._tables.notify(name)
        logger.info("model %s: serving versions %s", name, [r.version for r in routes])
        await self._tables.await_acks(name, routes, self._serve.replicas)

    def _version_spec(self, snapshot: ModelSnapshot, version: int, tag: str) -> apps.AppSpec:
        assert snapshot.entry is not None
        return apps.AppSpec(version_app(snapshot.name, version, tag),
                            apps.version_application(snapshot.entry, version, self._gpu, tag), None)

    async def _deploy_versions(self, name: str, snapshot: ModelSnapshot, versions: tuple[tuple[int, str], ...]) -> None:
        """Deploy versions beside what serves, wait for them, warm each through Serve."""
        loading = [VersionApp(v, version_app(name, v, tag), tag, LOADING, snapshot.replicas, snapshot.autoscaling)
                   for v, tag in versions]
        self.states[name] = self.states[name].deploying(loading)
        for app in loading:
            logger.info("model %s: loading version %d as %s", name, app.version, app.app)
        started = time.monotonic()
        try:
            await self._serve.start(lambda: [self._version_spec(snapshot, v, tag) for v, tag in versions])
            failures = await self._serve.wait_running(a.app for a in loading)
        except Exception as exc:  # noqa: BLE001 - e.g. an argument Serve cannot serialise
            failures = {a.app: f"{type(exc).__name__}: {exc}" for a in loading}
        for app in loading:
            reason = failures.get(app.app) or await self._serve.warm(app.app)
            labels = (name, str(app.version))
            if reason:
                logger.error("model %s: version %d failed to load: %s", name, app.version, reason)
                self._recorder.inc("infergrid_model_load_failures", labels)
            else:
                logger.info("model %s: version %d ready in %.1f s", name, app.version, time.monotonic() - started)
                self._recorder.set("infergrid_model_load_duration_seconds", labels, time.monotonic() - started)
            self.states[name] = self.states[name].loaded(app.app, reason)

    async def _deploy_endpoint(self, name: str, snapshot: ModelSnapshot, routes: tuple, replicas: int) -> bool:
        """Publish the first table of a model the front door does not answer for yet (or whose
        request settings changed), then wait until every front-door replica routes by it."""
        assert snapshot.entry is not None
        self.states[name] = self.states[name].published(routes, replicas)
        self._tables.served.add(apps.served_model(snapshot.entry))
        self._tables.notify(name)
        await self._tables.await_acks(name, routes, self._serve.replicas)
        return True

    async def _deploy_composite(self, name: str, snapshot: ModelSnapshot, version: int, tag: str,
                                replicas: int) -> bool:
        entry, composite = snapshot.entry, snapshot.composite
        assert entry is not None and entry.config is not None and composite is not None
        logger.info("model %s: deploying %s over %s", name, entry.config.platform, ", ".join(composite.members))
        await self._serve.start(lambda: [apps.AppSpec(
            endpoint_app(name), composite_application(entry, CONTROLLER_NAME, self._auth), None)])
        failures = await self._serve.wait_running([endpoint_app(name)])
        if failures:
            reason = f"{entry.config.platform} failed to start: {failures[endpoint_app(name)]}"
            logger.error("model %s: %s", name, reason)
            self.states[name] = self.states[name].with_reason(reason)
            return False
        self.states[name] = self.states[name].composite_deployed(version, tag, replicas)
        self._tables.served.add(apps.served_model(entry, endpoint_app(name)))
        self._tables.notify(name)
        return True

    async def _delete_versions(self, name: str, names: tuple[str, ...] | list[str]) -> None:
        """Delete version applications no table routes to, once in-flight requests had time to land."""
        await asyncio.sleep(DRAIN_GRACE_S)
        for app in names:
            logger.info("model %s: removing %s", name, app)
            await self._serve.delete(app)
        self.states[name] = self.states[name].without_apps(names)

    async def _remove_model(self, name: str) -> None:
        """Unload a whole model: the endpoint first (so no request is routed), then its versions."""
        logger.info("model %s: unloading", name)
        state = self.states[name]
        self.states[name] = state.unrouted()
        self._tables.notify(name)
        self._tables.served.remove(name)
        if state.endpoint and endpoint_app(name) in await self._serve.states():  # a composite's application
            await self._serve.delete(endpoint_app(name))
            await self._serve.wait_deleted([endpoint_app(name)])
        self._tables.forget(name)
        await self._delete_versions(name, list(state.apps))
        self.states[name] = self.states[name].removed()
