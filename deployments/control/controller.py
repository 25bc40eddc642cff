"""The repository controller: one detached Ray actor that owns which model versions are served.

It reads the repository (at start, on every poll, or on an API call, by ``mode``), deploys each
new version *beside* the serving one, warms it with a real inference through Serve, and only then
publishes a new routing table. Endpoint replicas long-poll ``watch`` for that table and report
what they applied; an old version is deleted only after every endpoint replica has stopped
sending to it. So a swap never fails a request, and a version that fails to load never receives
traffic.

State is rebuilt after a restart (Ray restarts the actor) from the repository and the running
Serve applications: a version application's name carries the tag of what it loaded, so a running
version whose files are unchanged is adopted, never deployed twice.

Modes, as Triton's ``--model-control-mode``: ``none`` (load at start), ``poll`` (and follow the
repository) and ``explicit`` (only the load/unload API changes what is served).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from ray import serve

from backends.errors import ModelNotFound, RepositoryError, ServingError
from backends.model_config import ModelConfig
from deployments.applications import builders as apps
from deployments.observability.logs import configure_logging
from deployments.observability.metrics import Recorder
from deployments.observability.hub import metrics_enabled, report_forever
from deployments.dataplane.model_version import warmup_inputs
from deployments.names import (
    CONTROLLER_NAME,
    ENDPOINT_DEPLOYMENT,
    SERVER_APP,
    VERSION_DEPLOYMENT,
    endpoint_app,
    model_route,
    parse_version_app,
    version_app,
)
from deployments.protocol.limits import limits_for
from deployments.repository.config import parse_config_json
from deployments.repository.events import FileEvents
from deployments.repository.scan import MODEL_NAME, ModelEntry, scan_model
from deployments.repository.watch import CompletionTracker, folder_state, load_identity
from deployments.dataplane.table import Route, route_for, routes_token

__all__ = ["RepositoryController", "MODES", "WATCH_TIMEOUT_S"]

logger = logging.getLogger("infergrid")

MODES = ("none", "poll", "explicit")
WATCH_TIMEOUT_S = 10.0  # a long-poll answers at least this often, so replicas notice a restarted controller
ACK_TIMEOUT_S = 20.0  # how long a swap waits for every endpoint replica to apply a new table
DRAIN_GRACE_S = 0.5  # after the acks: requests routed just before them reach the old version's replicas
LOAD_TIMEOUT_S = 300.0
STATUS_POLL_S = 0.1
T = TypeVar("T")
READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"


@dataclass
class _Version:
    """One version application: deployed (or deploying) and what it loaded."""

    version: int
    app: str
    tag: str
    state: str = LOADING
    replicas: int = 1


@dataclass
class _Model:
    """Everything the controller knows about one model."""

    name: str
    apps: dict[str, _Version] = field(default_factory=dict)  # version applications by name
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)  # version -> (tag, reason)
    routes: list[dict] = field(default_factory=list)  # the published table
    endpoint: bool = False
    endpoint_replicas: int = 1
    reason: str = ""  # a config problem (the serving versions, if any, keep serving)
    wanted: bool = True  # explicit mode: loaded through the API
    override: ModelConfig | None = None  # explicit mode: config given to the load API
    unloaded_versions: set[int] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)  # config warnings already logged
    composite_tag: str = ""  # an ensemble's or pipeline's deployed config (see deployments.applications.composite.composite_tag)

    def ready(self, version: int, tag: str) -> _Version | None:
        return next((v for v in self.apps.values()
                     if v.version == version and v.tag == tag and v.state == READY), None)

    @property
    def served(self) -> list[int]:
        return [int(r["version"]) for r in self.routes]


class RepositoryController:
    """The controller actor's class (started by ``deployments.control.start_controller``)."""

    def __init__(self, repository: str, mode: str = "poll", poll_secs: float = 1.0,
                 load_models: list[str] | None = None, gpu: bool = False, auth: dict | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"model control mode must be one of {MODES}, got {mode!r}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        configure_logging("controller")
        self._recorder = Recorder()  # load durations and failures, for /metrics
        self._root = Path(repository)
        self._mode = mode
        self._poll_secs = poll_secs
        self._load_models = list(load_models or [])
        self._gpu = gpu
        self._auth = auth or None  # AuthPolicy.to_dict(), handed to every HTTP replica it deploys
        # Only a poll watches files settle; in the other modes a person said "load it now".
        self._tracker = CompletionTracker(settle_s=poll_secs if mode == "poll" else 0.0)
        self._models: dict[str, _Model] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, dict[str, tuple[str | None, float, tuple[str, str]]]] = {}
        self._serve_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-calls")
        self._syncing: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._events = FileEvents.open() if mode == "poll" else None
        self._started = asyncio.Event()
        self._start_error: str | None = None
        self._main = asyncio.get_running_loop().create_task(self._run())
        self._reporter = asyncio.get_running_loop().create_task(report_forever(CONTROLLER_NAME, self._recorder))

    # --- Serve calls ------------------------------------------------------------------------

    async def _serve(self, call: Callable[[], T]) -> T:
        """Run a Serve API call (building an application counts) on this actor's one Serve thread.

        Off the event loop, so watchers and the API stay responsive; one thread, because Serve's
        deploy path registers modules for pickling in a process-wide table without a lock.
        """
        return await asyncio.get_running_loop().run_in_executor(self._serve_thread, call)

    async def _wait_running(self, names: list[str], timeout_s: float = LOAD_TIMEOUT_S) -> dict[str, str]:
        """Wait until each application runs or fails; returns {name: failure reason}."""
        deadline = time.monotonic() + timeout_s
        pending, failures = set(names), {}
        while pending and time.monotonic() < deadline:
            running, failed = apps.settled(pending, await self._serve(apps.application_states))
            failures.update(failed)
            pending -= running | set(failed)
            if pending:
                await asyncio.sleep(STATUS_POLL_S)
        failures.update({name: f"not running after {timeout_s:.0f} s" for name in pending})
        return failures

    async def _wait_deleted(self, names: list[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not set(names) & set(await self._serve(apps.application_states)):
                return
            await asyncio.sleep(STATUS_POLL_S)

    async def _delete(self, name: str) -> None:
        await self._serve(lambda: serve.delete(name, _blocking=False))

    # --- life cycle -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._adopt_running()
            folders = self._model_folders()
            if self._mode == "explicit":
                for name in folders:
                    self._model(name)  # known, not loaded
                for name in folders if "*" in self._load_models else self._load_models:
                    if name not in folders:
                        logger.error("--load-model %s: no such model folder in %s", name, self._root)
                        continue
                    self._model(name).wanted = True
            else:
                for name in folders:
                    self._model(name)
            # Adopted models are synced too: ones whose folder went away while this actor was down go.
            await asyncio.gather(*(self._sync_locked(name) for name in list(self._models)))
            await self._ensure_server_app()
        except Exception as exc:  # noqa: BLE001 - reported to whoever waits for the start
            logger.exception("controller failed to start")
            self._start_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._started.set()
        if self._mode == "poll":
            if self._events is not None:
                self._events.watch(self._root)
                asyncio.get_running_loop().add_reader(self._events.fd, self._on_file_events)
            await self._poll_forever()

    async def wait_started(self) -> dict[str, dict]:
        """Block until the first load is done; returns the models (see ``models``).

        Raises:
            RuntimeError: the first load could not run at all (not: a model failed to load).
        """
        await self._started.wait()
        if self._start_error:
            raise RuntimeError(self._start_error)
        return await self.models()

    def _model_folders(self) -> list[str]:
        try:
            return sorted(p.name for p in self._root.iterdir()
                          if p.is_dir() and MODEL_NAME.match(p.name) and not p.name.startswith("."))
        except OSError as exc:
            logger.error("cannot read the model repository %s: %s", self._root, exc)
            return []

    def _model(self, name: str) -> _Model:
        if name not in self._models:
            self._models[name] = _Model(name, wanted=self._mode != "explicit")
        return self._models[name]

    async def _poll_forever(self) -> None:
        while True:
            try:
                folders = self._model_folders()
                names = set(folders) | set(self._models)
                self._tracker.forget({p for n in names for p in (self._root / n).glob("*")})
                for name in names:
                    if self._events is not None and name in folders:
                        self._events.watch(self._root / name)
                    self._kick(name)
            except Exception:  # noqa: BLE001 - the poll loop must outlive any one failure
                logger.exception("repository poll failed")
            await asyncio.sleep(self._poll_secs)

    def _kick(self, name: str) -> None:
        """Reconcile ``name`` now, or right after the reconcile already running for it."""
        task = self._syncing.get(name)
        if task is not None and not task.done():
            self._dirty.add(name)
            return
        # One task per model: a slow load never delays another model's swap.
        self._syncing[name] = asyncio.get_running_loop().create_task(self._sync_then_again(name))

    async def _sync_then_again(self, name: str) -> None:
        await self._sync_locked(name)
        if name in self._dirty:
            self._dirty.discard(name)
            self._syncing.pop(name, None)
            self._kick(name)

    def _on_file_events(self) -> None:
        """inotify said something changed: look at that model now instead of at the next poll."""
        assert self._events is not None
        for event in self._events.read():
            if event.path.parent == self._root:
                name = event.path.name
                if event.path.is_dir():
                    self._events.watch(event.path)
            elif event.path.parent.parent == self._root:
                name = event.path.parent.name
                if event.moved_in and event.path.name.isdigit():
                    self._tracker.moved_in(event.path)
            else:
                continue
            if MODEL_NAME.match(name) and not name.startswith("."):
                self._kick(name)

    async def _adopt_running(self) -> None:
        """Rebuild state from running applications (after a restart of this actor)."""
        states = await self._serve(apps.application_states)
        endpoints = await self._serve(apps.endpoint_applications)
        for name, (status, _) in states.items():
            parsed = parse_version_app(name)
            if parsed and parsed[2]:
                model, version, tag = parsed
                entry = self._model(model)
                entry.wanted = True
                replicas = await self._serve(lambda name=name: apps.running_replicas(name, VERSION_DEPLOYMENT))
                entry.apps[name] = _Version(version, name, tag, READY if status == "RUNNING" else LOADING, replicas)
            elif name in endpoints and MODEL_NAME.match(name):
                self._model(name).endpoint = True
        for model in self._models.values():
            loading = [v for v in model.apps.values() if v.state == LOADING]
            if loading:  # a load this actor was doing when it died: finish waiting for it
                failures = await self._wait_running([v.app for v in loading])
                for v in loading:
                    v.state = UNAVAILABLE if v.app in failures else READY
            if model.endpoint:
                # The table the endpoints follow: newest ready application per version.
                newest: dict[int, _Version] = {}
                for v in model.apps.values():
                    if v.state == READY:
                        newest.setdefault(v.version, v)
                model.routes = [Route(v.version, v.app).to_dict() for _, v in sorted(newest.items(), reverse=True)]
        if self._models:
            logger.info("controller adopted running models: %s",
                        {m.name: sorted(m.apps) for m in self._models.values()})

    async def _ensure_server_app(self) -> None:
        states = await self._serve(apps.application_states)
        if states.get(SERVER_APP, ("",))[0] != "RUNNING":
            await self._serve(lambda: apps.start_applications(
                [apps.AppSpec(SERVER_APP, apps.server_application({}, CONTROLLER_NAME, self._auth), "/")]))
            failures = await self._wait_running([SERVER_APP], 120)
            if failures:
                raise RuntimeError(f"server application failed: {failures[SERVER_APP]}")

    # --- what endpoints and the server ingress ask ------------------------------------------

    async def watch(self, model: str, replica: str, token: str | None,
                    group: tuple[str, str] | None = None) -> list[dict] | None:
        """Long-poll: the model's table once it differs from ``token`` (or after a timeout).

        ``token`` is what the calling replica has applied; it is the replica's ack. ``group`` is
        the replica's (application, deployment): the model's endpoint, or an ensemble or pipeline
        that calls the model as a member. Returns ``[]`` for a model that is not served (so an
        ensemble's call to it fails at once instead of reaching a deleted version), and None while
        this controller is still starting (the replica keeps its table).
        """
        group = tuple(group) if group else (endpoint_app(model), ENDPOINT_DEPLOYMENT)
        self._watchers.setdefault(model, {})[replica] = (token, time.monotonic(), group)
        # Not before the first reconcile: a restarted controller's adopted table is not yet the one it means.
        table = self._table(model) if self._started.is_set() else None
        if table is not None and routes_token(table) != token:
            return table
        event = self._changed.setdefault(model, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), WATCH_TIMEOUT_S)
        except TimeoutError:
            pass
        return self._table(model)

    def _table(self, model: str) -> list[dict] | None:
        """The published table of ``model``; [] when it is not served; None when that is not known
        yet (this controller is still starting and has not seen the model)."""
        entry = self._models.get(model)
        if entry is not None and (entry.endpoint or entry.routes):
            return list(entry.routes)
        return [] if self._started.is_set() else None

    async def models(self) -> dict[str, dict]:
        """{model: {"versions": [served, newest first], "reason": str | None, "endpoint": bool}}."""
        out = {}
        for name, m in sorted(self._models.items()):
            if not m.wanted and not m.apps:
                out[name] = {"versions": [], "reason": "unloaded", "endpoint": False}
                continue
            failures = "; ".join(reason for _, reason in m.failed.values())
            reason = None if m.served else (m.reason or failures or None)
            out[name] = {"versions": m.served, "reason": reason, "endpoint": m.endpoint}
        return out

    async def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: one row per (model, version) with state and reason."""
        rows = []
        for name in sorted(set(self._models) | set(self._model_folders())):
            m = self._models.get(name)
            if m is None or (not m.wanted and not m.apps):
                rows.append({"name": name, "state": UNAVAILABLE, "reason": "unloaded"})
                continue
            versions: dict[int, dict] = {}
            for v in m.apps.values():
                if v.state == LOADING:
                    versions.setdefault(v.version, {"state": LOADING, "reason": ""})
            for version, (_, reason) in m.failed.items():
                versions[version] = {"state": UNAVAILABLE, "reason": reason}
            for version in m.served:
                versions[version] = {"state": READY, "reason": m.reason and f"config change not applied: {m.reason}"}
            if not versions:
                rows.append({"name": name, "state": UNAVAILABLE if m.reason else LOADING, "reason": m.reason})
            for version, row in sorted(versions.items(), reverse=True):
                rows.append({"name": name, "version": str(version), **row})
        return [r for r in rows if r["state"] == READY] if ready_only else rows

    async def describe(self) -> dict:
        """Mode, repository and the applications owned (for tests and ``infergrid models list``)."""
        return {"mode": self._mode, "repository": str(self._root), "poll_secs": self._poll_secs,
                "api_keys": len((self._auth or {}).get("digests", {})),
                "applications": {name: sorted(m.apps) for name, m in self._models.items()}}

    # --- the repository API -----------------------------------------------------------------

    def _check_explicit(self, action: str) -> None:
        if self._mode != "explicit":
            raise RepositoryError(f"explicit model {action} is not allowed: the server runs with "
                                  f"--model-control-mode={self._mode} (use explicit)")

    async def load(self, name: str, config_json: str | None = None) -> list[dict]:
        """Load (or reload) a model, optionally with a config given as JSON; returns its index rows.

        Raises:
            RepositoryError: not in explicit mode, or no version of the model could be loaded.
            ModelNotFound: no such model folder.
            ConfigError: the config override is invalid.
        """
        self._check_explicit("load")
        await self._started.wait()
        if not MODEL_NAME.match(name) or not (self._root / name).is_dir():  # the name first: never a path outside
            raise ModelNotFound(f"failed to load {name!r}: no model folder {name!r} in the repository")
        override = parse_config_json(config_json, f"{name} load request: parameters.config", name) \
            if config_json else None
        async with self._lock(name):
            m = self._model(name)
            m.wanted, m.override, m.unloaded_versions = True, override, set()
            m.failed.clear()  # an explicit load retries a failed version
            await self._sync(name)
            if not m.served:
                raise RepositoryError(f"failed to load {name!r}: {(await self.models())[name]['reason']}")
        return [row for row in await self.index() if row["name"] == name]

    async def unload(self, name: str, version: int | None = None) -> None:
        """Unload a model (or one of its versions: the rest keep serving).

        Raises:
            RepositoryError: not in explicit mode.
            ModelNotFound: the model (or version) is not loaded.
        """
        self._check_explicit("unload")
        await self._started.wait()
        async with self._lock(name):
            m = self._models.get(name)
            if m is None or not m.wanted:
                raise ModelNotFound(f"failed to unload {name!r}: it is not loaded")
            if version is None:
                m.wanted = False
            elif version not in m.served:
                raise ModelNotFound(f"failed to unload {name!r} version {version}: not served "
                                    f"(served: {m.served})")
            else:
                m.unloaded_versions.add(version)
            await self._sync(name)

    # --- reconciling one model --------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _sync_locked(self, name: str) -> None:
        async with self._lock(name):
            try:
                await self._sync(name)
            except Exception:  # noqa: BLE001 - one model's failure never stops the others
                logger.exception("model %s: reconciling failed", name)

    def _read(self, name: str, m: _Model) -> ModelEntry | None:
        folder = self._root / name
        if not folder.is_dir():
            return None
        entry = scan_model(folder)
        if m.override is not None and not entry.error:
            config = m.override
            if not config.platform and entry.config is not None:
                config = replace(config, platform=entry.config.platform)
            entry = replace(entry, config=config)
        return entry

    async def _sync(self, name: str) -> None:
        """Make what is served for ``name`` match the repository (the caller holds its lock)."""
        m = self._model(name)
        entry = self._read(name, m) if m.wanted else None
        if entry is None:
            if m.apps or m.endpoint:
                await self._remove_model(m)
            if self._mode != "explicit" or not (self._root / name).is_dir():
                self._models.pop(name, None)
            return
        if entry.error:
            if entry.error != m.reason:
                logger.error("model %s: %s%s", name, entry.error,
                             " (the serving versions keep serving)" if m.served else "")
            m.reason = entry.error
            return
        config = entry.config
        assert config is not None
        if config.composite:
            await self._sync_composite(m, entry)
            return
        m.reason = ""
        for warning in sorted(set(config.warnings) - m.warned):  # once per config, not once per poll
            logger.warning("%s", warning)
        m.warned = set(config.warnings)

        wanted: dict[int, str] = {}  # version -> tag, for complete folders the policy keeps
        for version in entry.served_versions:
            if version in m.unloaded_versions:
                continue
            folder = entry.versions[version]
            files = folder_state(folder)
            if self._tracker.complete(folder, files):
                wanted[version] = load_identity(config, files)
        for version in list(m.failed):  # a failure is retried once its folder (or config) changes
            if version not in wanted or m.failed[version][0] != wanted[version]:
                del m.failed[version]
        to_load = {v: tag for v, tag in wanted.items() if m.ready(v, tag) is None and v not in m.failed}
        if to_load:
            await self._load_versions(m, entry, to_load)
        await self._resize(m, config, wanted)

        ready = {v: m.ready(v, tag) for v, tag in wanted.items() if m.ready(v, tag) is not None}
        if ready:
            routes = [route_for(v, ready[v].app, config).to_dict() for v in sorted(ready, reverse=True)]
        else:  # nothing new can serve: whatever served keeps serving (with the new batching)
            routes = [route_for(int(r["version"]), r["app"], config).to_dict() for r in m.routes]
        await self._publish(m, routes, config)
        serving = {r["app"] for r in m.routes}
        stale = [v.app for v in m.apps.values() if v.app not in serving and v.state != LOADING]
        if stale:
            await self._delete_versions(m, stale)

    def _member_configs(self, names: tuple[str, ...]) -> dict[str, ModelConfig | None]:
        """Member configs for the composite checks: None where the repository has no such folder."""
        members: dict[str, ModelConfig | None] = {}
        for name in names:
            folder = self._root / name
            if not MODEL_NAME.match(name) or not folder.is_dir():
                members[name] = None
                continue
            entry = scan_model(folder)
            # A member whose config is broken is still a member: it answers 503 until fixed.
            members[name] = entry.config or ModelConfig(name=name, platform="")
        return members

    async def _sync_composite(self, m: _Model, entry: ModelEntry) -> None:
        """Serve an ensemble or pipeline: check it against its members, deploy its application.

        A composite has no version applications: its replicas call the members' versions
        directly. A failed check leaves a serving composite serving (its reason says so).
        """
        # Imported here: deployments never import pipelines at module level (pipelines build on
        # deployments); the controller is the one place that deploys them.
        from deployments.applications.composite import composite_application
        from pipelines.spec import check_composite, composite_tag, composite_version, member_names

        config = entry.config
        assert config is not None
        version = composite_version(entry)
        tag = composite_tag(config, version)
        try:
            names = member_names(config)
            check_composite(config, self._member_configs(names))
        except ServingError as exc:
            if str(exc) != m.reason:
                logger.error("model %s: %s%s", m.name, exc, " (the serving version keeps serving)" if m.served else "")
            m.reason = str(exc)
            return
        m.reason = ""
        if self._mode == "explicit":  # as Triton: loading an ensemble loads its members
            for name in names:
                if not self._model(name).wanted:
                    self._model(name).wanted = True
                    self._kick(name)
        if m.endpoint and m.composite_tag == tag:
            return
        logger.info("model %s: deploying %s over %s", m.name, config.platform, ", ".join(names))
        replicas = config.replica_count
        await self._serve(lambda: apps.start_applications(
            [apps.AppSpec(endpoint_app(m.name), composite_application(entry, CONTROLLER_NAME, self._auth),
                          model_route(m.name))]))
        failures = await self._wait_running([endpoint_app(m.name)])
        if failures:
            m.reason = f"{config.platform} failed to start: {failures[endpoint_app(m.name)]}"
            logger.error("model %s: %s", m.name, m.reason)
            return
        m.endpoint, m.endpoint_replicas, m.composite_tag = True, replicas, tag
        m.routes = [Route(version, endpoint_app(m.name)).to_dict()]
        self._notify(m.name)

    async def _load_versions(self, m: _Model, entry: ModelEntry, to_load: dict[int, str]) -> None:
        """Deploy versions beside what serves, wait for them, warm each through Serve."""
        names = []
        for version, tag in to_load.items():
            name = version_app(m.name, version, tag)
            m.apps[name] = _Version(version, name, tag, LOADING, self._replica_count(entry.config))
            names.append(name)
            logger.info("model %s: loading version %d as %s", m.name, version, name)
        started = time.monotonic()
        try:
            await self._serve(lambda: apps.start_applications(
                [apps.AppSpec(version_app(m.name, v, tag), apps.version_application(entry, v, self._gpu, tag), None)
                 for v, tag in to_load.items()]))
            failures = await self._wait_running(names)
        except Exception as exc:  # noqa: BLE001 - e.g. an argument Serve cannot serialise
            failures = {name: f"{type(exc).__name__}: {exc}" for name in names}
        for name in names:
            v = m.apps[name]
            reason = failures.get(name) or await self._warm(name)
            labels = (m.name, str(v.version))
            if reason:
                logger.error("model %s: version %d failed to load: %s", m.name, v.version, reason)
                m.failed[v.version] = (v.tag, reason)
                v.state = UNAVAILABLE
                self._recorder.inc("infergrid_model_load_failures", labels)
            else:
                v.state = READY
                logger.info("model %s: version %d ready in %.1f s", m.name, v.version, time.monotonic() - started)
                self._recorder.set("infergrid_model_load_duration_seconds", labels, time.monotonic() - started)
        broken = [name for name, v in m.apps.items() if v.state == UNAVAILABLE]
        if broken:
            await self._delete_versions(m, broken)

    async def _warm(self, app_name: str) -> str:
        """One real inference through Serve; returns a failure reason, or "" when it answered."""
        try:
            handle = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=app_name)
            info = await handle.describe.remote()
            await handle.infer_batch.remote(warmup_inputs(info.signature))
            return ""
        except Exception as exc:  # noqa: BLE001 - any failure keeps the version out of traffic
            return f"warm-up inference failed: {exc}"

    def _replica_count(self, config: ModelConfig | None) -> int:
        return config.replica_count if config else 1

    async def _resize(self, m: _Model, config: ModelConfig, wanted: dict[int, str]) -> None:
        """Instance counts changed: update running versions in place (their code version is pinned)."""
        count = self._replica_count(config)
        entry = None
        for version, tag in wanted.items():
            v = m.ready(version, tag)
            if v is None or v.replicas == count:
                continue
            entry = entry or self._read(m.name, m)
            if entry is None or entry.error:
                return
            logger.info("model %s: version %d replicas %d -> %d", m.name, version, v.replicas, count)
            await self._serve(lambda v=v, version=version, tag=tag: apps.start_applications(
                [apps.AppSpec(v.app, apps.version_application(entry, version, self._gpu, tag), None)]))
            v.replicas = count

    async def _publish(self, m: _Model, routes: list[dict], config: ModelConfig) -> None:
        """Make ``routes`` the model's table; returns once every endpoint replica applied it."""
        replicas = int(config.parameter("endpoint_replicas", "1") or 1)
        if not routes:
            return
        if not m.endpoint or replicas != m.endpoint_replicas:
            m.routes = routes
            await self._serve(lambda: apps.start_applications([apps.AppSpec(
                endpoint_app(m.name),
                apps.endpoint_application(m.name, routes, config.max_batch_size, replicas, CONTROLLER_NAME,
                                          metrics_enabled(config), limits_for(config), self._auth),
                model_route(m.name))]))
            failures = await self._wait_running([endpoint_app(m.name)])
            if failures:
                logger.error("model %s: endpoint failed: %s", m.name, failures[endpoint_app(m.name)])
                return
            m.endpoint, m.endpoint_replicas = True, replicas
            self._notify(m.name)
        elif routes_token(routes) != routes_token(m.routes):
            m.routes = routes
            self._notify(m.name)
            logger.info("model %s: serving versions %s", m.name, [r["version"] for r in routes])
        else:
            return
        await self._await_acks(m.name, routes_token(routes))

    def _notify(self, model: str) -> None:
        event = self._changed.pop(model, None)
        if event is not None:
            event.set()

    async def _await_acks(self, model: str, token: str) -> bool:
        """Wait until every running replica that routes to ``model`` reported ``token``.

        Those are the model's endpoint replicas and the replicas of every ensemble or pipeline
        that has ``model`` as a member, counted per (application, deployment) against how many
        replicas of it run.
        """
        deadline = time.monotonic() + ACK_TIMEOUT_S
        expected: dict[tuple[str, str], int] = {}
        while time.monotonic() < deadline:
            # A live replica calls at least every WATCH_TIMEOUT_S; older entries are replicas that are gone.
            now = time.monotonic()
            watchers = {r: w for r, w in self._watchers.get(model, {}).items() if now - w[1] < 3 * WATCH_TIMEOUT_S}
            self._watchers[model] = watchers
            groups = {w[2] for w in watchers.values()} | {(endpoint_app(model), ENDPOINT_DEPLOYMENT)}
            if set(expected) != groups:
                expected = await self._serve(lambda groups=groups: {g: apps.running_replicas(*g) for g in groups})
            acked = {g: 0 for g in groups}
            for t, _, g in watchers.values():
                acked[g] += t == token
            if all(acked[g] >= n for g, n in expected.items()):
                return True
            await asyncio.sleep(0.02)
        logger.warning("model %s: not every replica routing to it confirmed the new routing table within %.0f s",
                       model, ACK_TIMEOUT_S)
        return False

    async def _delete_versions(self, m: _Model, names: list[str]) -> None:
        """Delete version applications no table routes to, once in-flight requests had time to land."""
        await asyncio.sleep(DRAIN_GRACE_S)
        for name in names:
            logger.info("model %s: removing %s", m.name, name)
            await self._delete(name)
            m.apps.pop(name, None)

    async def _remove_model(self, m: _Model) -> None:
        """Unload a whole model: the endpoint first (so no request is routed), then its versions."""
        logger.info("model %s: unloading", m.name)
        had_endpoint, m.endpoint, m.routes, m.composite_tag = m.endpoint, False, [], ""
        self._notify(m.name)
        if had_endpoint:
            await self._delete(endpoint_app(m.name))
            await self._wait_deleted([endpoint_app(m.name)])
        self._watchers.pop(m.name, None)
        await self._delete_versions(m, list(m.apps))
        m.failed.clear()
