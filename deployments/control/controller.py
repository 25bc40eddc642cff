"""The repository controller: one detached Ray actor that owns which model versions are served.

This is the actor's shell: its life cycle, when it reconciles (at start, on every poll and inotify
event, or on a repository API call, by ``mode``), and what replicas and the server ingress ask it.
What to change is decided by the pure plan (``deployments.control.plan``), applied by the
``Reconciler``; tables reach replicas through ``TablePublisher``; every Serve call goes through
``ServeCalls``. A new version is deployed beside the serving one, warmed with a real inference,
and only then published; an old one is deleted once every replica routing to the model acked the
new table. So a swap never fails a request, and a version that fails to load never takes traffic.

State is rebuilt after a restart (Ray restarts the actor) from the running Serve applications: a
version application's name carries the tag of what it loaded, so a running version whose files
are unchanged is adopted, never deployed twice.

Models named one by one have their calls in mixins: TF Serving's config reload and version labels
(``deployments.control.named_models``), TorchServe's management API (``deployments.control.torchserve_calls``);
traffic policies have theirs in ``deployments.control.traffic_calls``.

Modes, as Triton's ``--model-control-mode``: ``none`` (load at start), ``poll`` (and follow the
repository) and ``explicit`` (only the load/unload API changes what is served).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from backends.errors import ModelNotFound, RepositoryError
from deployments.applications import builders as apps
from deployments.control.named_models import NamedModelCalls
from deployments.control.publication import WATCH_TIMEOUT_S, TablePublisher
from deployments.control.reconcile import Reconciler
from deployments.control.scaling_watch import ReplicaGauges, sample_forever
from deployments.control.serve_calls import ServeCalls
from deployments.control.state import adopt
from deployments.control.torchserve_calls import TorchServeCalls
from deployments.control.traffic_calls import TrafficCalls
from deployments.control.views import index_rows, model_statuses
from deployments.dataplane.table import Route, ServedModel, Watcher
from deployments.ingress.front_door import Listen
from deployments.names import CONTROLLER_NAME, FRONT_DOOR_APP, VERSION_DEPLOYMENT, endpoint_app, parse_version_app
from deployments.observability.hub import report_forever
from deployments.observability.logs import configure_logging
from deployments.observability.metrics import Recorder
from deployments.repository.config import parse_config_json
from deployments.repository.events import FileEvents
from deployments.repository.roots import RepositoryRoots
from deployments.repository.tfserving_config import ConfigFileFollower
from deployments.repository.scan import MODEL_NAME
from deployments.repository.status import ControllerInfo, IndexRow, ModelStatus
from deployments.repository.watch import CompletionTracker

__all__ = ["RepositoryController", "MODES", "WATCH_TIMEOUT_S"]

logger = logging.getLogger("infergrid")

MODES = ("none", "poll", "explicit")


class RepositoryController(NamedModelCalls, TorchServeCalls, TrafficCalls):
    """The controller actor's class (started by ``deployments.control.client.start_controller``)."""

    def __init__(self, repository: str | list[str] | dict, mode: str = "poll", poll_secs: float = 1.0,
                 load_models: list[str] | None = None, gpu: bool = False, auth: dict | None = None,
                 listen: Listen | None = None, front_door_replicas: int = 1, strict: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"model control mode must be one of {MODES}, got {mode!r}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        configure_logging("controller")
        recorder = Recorder()  # load durations and failures, for /metrics
        # A folder, several, or {"roots": [...], "models": {name: folder}, "overrides": {name: ModelOverride},
        # "batching": TfBatching, "config_file": {...}} (TF Serving's --model_base_path or --model_config_file,
        # --enable_batching).
        self._roots = RepositoryRoots(repository.get("roots", []), repository.get("models"),
                                      repository.get("overrides"), repository.get("batching")) \
            if isinstance(repository, dict) else RepositoryRoots(repository)
        # {"path", "relative_to", "poll_s"}: TF Serving's --model_config_file_poll_wait_seconds
        followed = repository.get("config_file") if isinstance(repository, dict) else None
        self._config_file = ConfigFileFollower(Path(followed["path"]), Path(followed["relative_to"]),
                                               float(followed["poll_s"])) if followed else None
        self._traffic_history: dict = {}  # model -> traffic policies replaced, for rollback
        self._traffic_events: dict = {}  # model -> guard trips and steps
        self._traffic_recorder = recorder
        # TorchServe's registered archives (deployments.repository.ts_registry), its management API's state
        self._ts = repository.get("torchserve") if isinstance(repository, dict) else None
        if self._ts is not None:
            for name, model in self._ts.models.items():
                self._roots.place(name, model.folder, model.override)
        self._mode, self._poll_secs = mode, poll_secs
        self._load_models = list(load_models or [])
        self._auth = auth or None  # AuthPolicy.to_dict(), handed to every HTTP replica it deploys
        self._listen, self._front_door_replicas = listen or Listen(), front_door_replicas
        self._serve = ServeCalls()
        self._tables = TablePublisher()
        # Only a poll watches files settle; in the other modes a person said "load it now".
        tracker = CompletionTracker(settle_s=poll_secs if mode == "poll" else 0.0)
        self._models = Reconciler(self._roots, mode == "explicit", tracker, self._serve, self._tables, recorder,
                                  gpu, self._auth, on_member_wanted=self._kick, strict=strict)
        self._syncing: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._events = FileEvents.open() if mode == "poll" else None
        self._started = asyncio.Event()
        self._adopted = asyncio.Event()
        self._start_error: str | None = None
        loop = asyncio.get_running_loop()
        self._main = loop.create_task(self._run())
        self._reporter = loop.create_task(report_forever(CONTROLLER_NAME, recorder))
        self._replica_sampler = loop.create_task(sample_forever(
            ReplicaGauges(recorder), self._serve.version_replicas, self._models.most_replicas))

    # --- life cycle -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            try:
                await self._adopt_running()
            finally:
                self._adopted.set()
            self._know_folders()
            deploying = await self._start_front_door()  # first: models become reachable as they load
            # Adopted models are reconciled too: ones whose folder went away while this actor was down go.
            await asyncio.gather(*(self._models.reconcile_locked(name) for name in list(self._models.states)))
            if deploying:
                failures = await self._serve.wait_running([FRONT_DOOR_APP], 120)
                if failures:
                    raise RuntimeError(f"the front door failed to start: {failures[FRONT_DOOR_APP]}")
        except Exception as exc:  # noqa: BLE001 - reported to whoever waits for the start
            logger.exception("controller failed to start")
            self._start_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._started.set()
        if self._mode == "poll":
            if self._events is not None:
                for root in self._roots.paths:
                    self._events.watch(root)
                asyncio.get_running_loop().add_reader(self._events.fd, self._on_file_events)
            await self._poll_forever()

    def _know_folders(self) -> None:
        folders = self._model_folders()
        for name in folders:
            self._models.know(name)
        if self._mode != "explicit":
            return
        for name in folders if "*" in self._load_models else self._load_models:
            if name not in folders:
                logger.error("--load-model %s: no such model folder in %s", name, self._roots)
                continue
            self._models.know(name, wanted=True)

    async def wait_started(self) -> dict[str, ModelStatus]:
        """Block until the first load is done; returns the models (see ``models``).

        Raises:
            RuntimeError: the first load could not run at all (not: a model failed to load).
        """
        await self._started.wait()
        if self._start_error:
            raise RuntimeError(self._start_error)
        return await self.models()

    def _model_folders(self) -> list[str]:
        return self._roots.model_names()

    async def _poll_forever(self) -> None:
        while True:
            try:
                self._follow_config_file()
                folders = self._model_folders()
                names = set(folders) | set(self._models.states)
                self._models.tracker_forget({p for n in names for p in self._roots.folder(n).glob("*")})
                for name in names:
                    if self._events is not None and name in folders:
                        self._events.watch(self._roots.folder(name))
                    self._kick(name)
            except Exception:  # noqa: BLE001 - the poll loop must outlive any one failure
                logger.exception("repository poll failed")
            await asyncio.sleep(self._poll_secs)

    def _follow_config_file(self) -> None:
        """A changed, valid --model_config_file: its models, policies and labels from this poll on."""
        if self._config_file is not None:
            models = self._config_file.poll(time.monotonic())
            if models is not None:
                self._roots.rename(models.folders, models.overrides)

    def _kick(self, name: str) -> None:
        """Reconcile ``name`` now, or right after the reconcile already running for it."""
        task = self._syncing.get(name)
        if task is not None and not task.done():
            self._dirty.add(name)
            return
        # One task per model: a slow load never delays another model's swap.
        self._syncing[name] = asyncio.get_running_loop().create_task(self._sync_then_again(name))

    async def _sync_then_again(self, name: str) -> None:
        await self._models.reconcile_locked(name)
        if name in self._dirty:
            self._dirty.discard(name)
            self._syncing.pop(name, None)
            self._kick(name)

    def _on_file_events(self) -> None:
        """inotify said something changed: look at that model now instead of at the next poll."""
        assert self._events is not None
        for event in self._events.read():
            if self._roots.is_root(event.path.parent):
                name = event.path.name
                if event.path.is_dir():
                    self._events.watch(event.path)
            elif self._roots.is_root(event.path.parent.parent) or self._roots.named_at(event.path.parent):
                name = self._roots.named_at(event.path.parent) or event.path.parent.name
                if event.moved_in and event.path.name.isdigit():
                    self._models.tracker_moved_in(event.path)
            else:
                continue
            if MODEL_NAME.match(name) and not name.startswith("."):
                self._kick(name)

    async def _adopt_running(self) -> None:
        """Rebuild state from running applications (after a restart of this actor)."""
        states = await self._serve.states()
        parsed = {name: parse_version_app(name) for name in states}
        versions = {name: p for name, p in parsed.items() if p and p[2]}
        loading = [name for name in versions if states[name][0] != "RUNNING"]
        # A load this actor was doing when it died: finish waiting for it.
        failures = await self._serve.wait_running(loading) if loading else {}
        counts = await self._serve.replicas((name, VERSION_DEPLOYMENT) for name in versions)
        running = {name: (*p, name not in failures, counts[(name, VERSION_DEPLOYMENT)])
                   for name, p in versions.items()}
        endpoints = {name for name in await self._serve.endpoints() if MODEL_NAME.match(name)}
        for name, state in adopt(running, endpoints).items():
            self._models.states[name] = state
            self._models.know(name, wanted=True)
            entry = self._roots.scan(name)  # the front door keeps answering for it meanwhile
            if entry.config is not None:
                self._tables.served.add(apps.served_model(entry, endpoint_app(name) if entry.config.composite else ""))
        if self._models.states:
            logger.info("controller adopted running models: %s",
                        {n: sorted(s.apps) for n, s in self._models.states.items()})

    async def _start_front_door(self) -> bool:
        """Deploy the front door unless it runs (it outlives a restart of this actor); True when deployed."""
        states = await self._serve.states()
        if states.get(FRONT_DOOR_APP, ("",))[0] == "RUNNING":
            return False
        await self._serve.start(lambda: [apps.AppSpec(FRONT_DOOR_APP, apps.front_door_application(
            self._listen, self._front_door_replicas, CONTROLLER_NAME, self._auth), None)])
        return True

    # --- what replicas and the server ingress ask -------------------------------------------

    async def watch(self, model: str, watcher: Watcher | None, token: str | None) -> tuple[Route, ...] | None:
        """Long-poll: the model's table once it differs from ``token`` (or after a timeout).

        ``token`` is what the calling replica has applied; it is the replica's ack. ``watcher``
        names the replica and its (application, deployment): the model's endpoint, or an ensemble
        or pipeline that calls the model as a member. Returns ``()`` for a model that is not
        served (so an ensemble's call to it fails at once instead of reaching a deleted version),
        and None while this controller is still starting (the replica keeps its table).
        """
        # Not at once before the first reconcile: a restarted controller's adopted table is not yet the
        # one it means; a table published during that reconcile is answered (it is what the acks wait for).
        current = self._table(model) if self._started.is_set() else None
        return await self._tables.watch(model, watcher, token, current, lambda: self._table(model))

    def _table(self, model: str) -> tuple[Route, ...] | None:
        """The published table of ``model``; () when it is not served; None when that is not known
        yet (this controller is still starting and has not seen the model)."""
        state = self._models.states.get(model)
        if state is not None and (state.endpoint or state.routes):
            return state.routes
        return () if self._started.is_set() else None

    async def served_models(self, generation: str | None,
                            replica: str | None = None) -> tuple[str, dict[str, ServedModel]]:
        """Long-poll of the front door: the models it answers for, once they differ from ``generation``.

        Not before the adoption of running models: a restarted controller must not answer "none".
        """
        await self._adopted.wait()
        return await self._tables.served.watch(generation, replica)

    async def models(self) -> dict[str, ModelStatus]:
        """Every known model: its served versions (newest first), why not, whether it has an endpoint."""
        return model_statuses(self._models.states, self._models.policies)

    async def index(self, ready_only: bool = False) -> list[IndexRow]:
        """Triton's repository index: one row per (model, version) with state and reason."""
        return self._with_guard_reasons(index_rows(self._models.states, self._models.policies, self._model_folders(),
                                                   ready_only))

    async def describe(self) -> ControllerInfo:
        """Mode, repository and the applications owned (for tests and ``infergrid serve``)."""
        return ControllerInfo(self._mode, str(self._roots), self._poll_secs,
                              len((self._auth or {}).get("digests", {})),
                              {name: sorted(s.apps) for name, s in self._models.states.items()})

    # --- the repository API -----------------------------------------------------------------

    def _check_explicit(self, action: str) -> None:
        if self._mode != "explicit":
            raise RepositoryError(f"explicit model {action} is not allowed: the server runs with "
                                  f"--model-control-mode={self._mode} (use explicit)")

    async def load(self, name: str, config_json: str | None = None) -> list[IndexRow]:
        """Load (or reload) a model, optionally with a config given as JSON; returns its index rows.

        Raises:
            RepositoryError: not in explicit mode, or no version of the model could be loaded.
            ModelNotFound: no such model folder.
            ConfigError: the config override is invalid.
        """
        self._check_explicit("load")
        await self._started.wait()
        if not MODEL_NAME.match(name) or not self._roots.folder(name).is_dir():  # the name first: never a path outside
            raise ModelNotFound(f"failed to load {name!r}: no model folder {name!r} in the repository")
        override = parse_config_json(config_json, f"{name} load request: parameters.config", name) \
            if config_json else None
        async with self._models.lock(name):
            self._models.set_policy(name, wanted=True, override=override, unloaded_versions=frozenset())
            self._models.forget_failures(name)  # an explicit load retries a failed version
            await self._models.reconcile(name)
            if not self._models.states[name].served:
                raise RepositoryError(f"failed to load {name!r}: {(await self.models())[name].reason}")
        return [row for row in await self.index() if row.name == name]

    async def unload(self, name: str, version: int | None = None) -> None:
        """Unload a model (or one of its versions: the rest keep serving).

        Raises:
            RepositoryError: not in explicit mode.
            ModelNotFound: the model (or version) is not loaded.
        """
        self._check_explicit("unload")
        await self._started.wait()
        async with self._models.lock(name):
            state, policy = self._models.states.get(name), self._models.policies.get(name)
            if state is None or policy is None or not policy.wanted:
                raise ModelNotFound(f"failed to unload {name!r}: it is not loaded")
            if version is None:
                self._models.set_policy(name, wanted=False)
            elif version not in state.served:
                raise ModelNotFound(f"failed to unload {name!r} version {version}: not served "
                                    f"(served: {state.served})")
            else:
                self._models.set_policy(name, unloaded_versions=policy.unloaded_versions | {version})
            await self._models.reconcile(name)
