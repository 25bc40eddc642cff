"""The controller's side of traffic policies (``GET|POST /v2/repository/models/{m}/traffic``,
``infergrid models traffic``). Mixed into ``RepositoryController`` (the actor's methods must be its class's).

A change is written to the model's ``traffic.json`` (so the repository holds the policy, a restart keeps
it, and a poll reads what the API wrote) and reconciled at once: versions the policy names are loaded
first (weight 0 too), then the front doors get the policy with the model's served entry, so a request
never meets a version that cannot answer. The policies replaced are kept for ``rollback``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from backends.errors import ConfigError, ModelNotFound, RepositoryError
from deployments.names import FRONT_DOOR_APP, FRONT_DOOR_DEPLOYMENT
from deployments.observability.metrics import Recorder
from deployments.repository.scan import MODEL_NAME
from deployments.repository.traffic import TrafficPolicy, read_traffic, write_traffic

__all__ = ["TrafficCalls"]

logger = logging.getLogger("infergrid")


class TrafficCalls:
    """Traffic policy calls of the repository API."""

    _traffic_history: dict[str, list[TrafficPolicy | None]]
    _traffic_events: dict[str, list[dict]]  # guard trips and steps, newest last
    _traffic_recorder: Recorder

    async def _front_doors_applied(self, timeout_s: float = 5.0) -> None:
        """Until every front-door replica applied the served models just published (a policy, labels or
        a default version is in force when the caller hears back)."""
        group = (FRONT_DOOR_APP, FRONT_DOOR_DEPLOYMENT)
        replicas = (await self._serve.replicas([group])).get(group, 1)
        if not await self._tables.served.await_applied(max(1, replicas), timeout_s):
            logger.warning("not every front-door replica applied the change within %.0f s", timeout_s)

    def _traffic_folder(self, name: str):
        folder = self._roots.folder(name) if MODEL_NAME.match(name) else None
        if folder is None or not folder.is_dir() or name not in self._models.states:
            raise ModelNotFound(f"unknown model {name!r}")
        return folder

    async def traffic_event(self, name: str, event: str, version: int, reason: str, seen: dict) -> bool:
        """A front-door replica's guard decided ``event`` (``trip``: weight 0; ``step``: the next step) for
        ``version`` under the policy ``seen``; applied once (False: the policy has changed since, or the
        event is applied already). Logged, counted and kept in the model's traffic events.
        """
        await self._started.wait()
        folder = self._traffic_folder(name)
        try:
            current = read_traffic(folder)
        except ConfigError:
            return False
        if current is None or current.to_dict() != seen or event not in ("trip", "step"):
            return False
        policy = current.with_weight(version, 0) if event == "trip" else current.stepped(version)
        if policy is None:
            return False
        self._traffic_history.setdefault(name, []).append(current)
        write_traffic(folder, policy)
        log = logger.warning if event == "trip" else logger.info
        log("model %s: traffic guard %s for version %s: %s; weights now %s", name, event, version, reason,
            policy.to_dict()["weights"])
        self._traffic_recorder.inc("infergrid_traffic_guard_events", (name, str(version), event))
        self._traffic_events.setdefault(name, []).append(
            {"time": time.time(), "event": event, "version": version, "reason": reason})
        await self._models.reconcile_locked(name)
        return True

    def _with_guard_reasons(self, rows: list) -> list:
        """Index rows with a tripped candidate's reason (while its weight stays 0): the guard's event in the index."""
        tripped = {}
        for name, events in self._traffic_events.items():
            for event in events:  # oldest first: the last event of a version wins
                tripped[(name, str(event["version"]))] = event if event["event"] == "trip" else None
        out = []
        for row in rows:
            event = tripped.get((row.name, row.version))
            if event is not None and not row.reason and self._weight_now(row.name, int(row.version)) == 0:
                row = replace(row, reason=f"traffic guard tripped: {event['reason']} (weight 0)")
            out.append(row)
        return out

    def _weight_now(self, name: str, version: int) -> float | None:
        try:
            policy = read_traffic(self._roots.folder(name))
        except ConfigError:
            return None
        return dict(policy.weights).get(version) if policy is not None else None

    async def traffic(self, name: str) -> dict:
        """The model's policy (None: unversioned requests go to the newest version) and how many rollbacks
        are kept.

        Raises:
            ModelNotFound: no such model. ConfigError: its traffic.json is malformed.
        """
        await self._started.wait()
        policy = read_traffic(self._traffic_folder(name))
        return {"policy": policy.to_dict() if policy is not None else None,
                "rollbacks": len(self._traffic_history.get(name, [])),
                "events": self._traffic_events.get(name, [])[-20:]}

    async def set_traffic(self, name: str, change: dict) -> dict:
        """Apply one change: ``{"policy": {...}}``, ``{"promote": 4}``, ``{"rollback": true}`` or
        ``{"clear": true}``; returns the policy now in force, once every version it names serves.

        Raises:
            ModelNotFound: no such model. ConfigError: a bad policy, or a version not in the folder.
            RepositoryError: nothing to roll back to; or a version of the policy failed to load.
        """
        await self._started.wait()
        folder = self._traffic_folder(name)
        entry = self._roots.scan(name)
        if entry.config is not None and entry.config.composite:
            raise ConfigError(f"{name} is an ensemble or pipeline: traffic policies are for its members")
        try:
            current = read_traffic(folder)
        except ConfigError:
            current = None  # a broken file is replaced
        history = self._traffic_history.setdefault(name, [])
        if change.get("rollback"):
            if not history:
                raise RepositoryError(f"model {name!r}: no earlier traffic policy to roll back to")
            policy = history[-1]
        elif change.get("clear"):
            policy = None
        elif change.get("promote") is not None:
            version = change["promote"]
            if isinstance(version, bool) or not isinstance(version, int):
                raise ConfigError(f"{name} traffic request.promote: {version!r} is not a version number")
            base = current or TrafficPolicy(tuple((v, 0) for v in sorted(self._models.states[name].served)))
            policy = base.promoted(version)
        else:
            policy = TrafficPolicy.from_dict(change.get("policy"), f"{name} traffic request.policy")
        missing = [v for v in (policy.versions if policy else ()) if v not in entry.versions]
        if missing:
            raise ConfigError(f"{name} traffic request: version {missing[0]} is not in the model folder "
                              f"(versions: {sorted(entry.versions)})")
        if change.get("rollback"):
            history.pop()
        else:
            history.append(current)
        write_traffic(folder, policy)
        await self._models.reconcile_locked(name)
        state = self._models.states[name]
        unserved = [v for v in (policy.versions if policy else ()) if v not in state.served]
        if unserved:
            failure = state.failed.get(unserved[0])
            raise RepositoryError(f"model {name!r}: traffic.json written, but version {unserved[0]} does not serve: "
                                  f"{failure.reason if failure else state.reason or 'not loaded'}")
        await self._front_doors_applied()
        logger.info("model %s: traffic policy now %s", name, policy.to_dict() if policy else "none")
        return {"policy": policy.to_dict() if policy is not None else None}
