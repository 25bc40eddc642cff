"""The routing table the controller publishes and every replica that routes to a model applies.

One entry per served version, newest first: which application answers for it and how requests to
it are batched. Batching lives in the table (not in the version's replicas) so a changed
``dynamic_batching`` block takes effect in place, without reloading the model. Entries are frozen
``Route`` objects over actor calls, and plain dicts where Serve wants JSON (a ``user_config``).

Also here, because they are pure: how a request picks its version from the table, and how a
replica names itself when it acks a table. No Ray.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from backends.errors import ModelNotFound, ModelNotReady
from backends.model_config import ModelConfig
from deployments.protocol.limits import RequestLimits

__all__ = ["Route", "ServedModel", "Watcher", "bls_watcher", "is_single_replica_group", "routes_token", "route_for",
           "batch_settings", "select_version"]


@dataclass(frozen=True)
class Route:
    """One served version."""

    version: int
    app: str
    batch_rows: int = 0
    queue_delay_us: int = 0
    max_queue_rows: int = 0  # dynamic_batching.default_queue_policy.max_queue_size; 0: unbounded
    timeout_us: int = 0  # default_queue_policy.default_timeout_microseconds; 0: none
    instances: int = 1  # the most replicas (instance_group counts, or the autoscaling bound): batches in flight scale

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Route:
        return cls(int(data["version"]), str(data["app"]), int(data.get("batch_rows", 0)),
                   int(data.get("queue_delay_us", 0)), int(data.get("max_queue_rows", 0)),
                   int(data.get("timeout_us", 0)), int(data.get("instances", 1)))


@dataclass(frozen=True)
class ServedModel:
    """A model the front door answers for, and how: its own router over version applications
    (``composite`` false), or forwarded to the application of an ensemble or pipeline (``app``)."""

    name: str
    composite: bool = False
    app: str = ""
    metrics: bool = True  # parameters.metrics: count its requests
    limits: RequestLimits = RequestLimits()
    config: dict = field(default_factory=dict)  # ModelConfig.triton: what GET .../config completes
    labels: dict = field(default_factory=dict)  # output -> class labels (label_filename), for classification
    version_labels: dict = field(default_factory=dict)  # TF Serving's version labels: "stable" -> 3
    traffic: dict = field(default_factory=dict)  # TrafficPolicy.to_dict() (empty: none): unversioned splits


@dataclass(frozen=True)
class Watcher:
    """A replica that follows a model's table: its unique id and the (application, deployment) it
    belongs to, whose running replicas the controller counts acks against."""

    replica: str
    app: str
    deployment: str

    @property
    def group(self) -> tuple[str, str]:
        return self.app, self.deployment


BLS_GROUP_MARK = "#bls:"  # in a watcher's deployment: a group of one replica (its BLS calls)


def bls_watcher(replica: Watcher) -> Watcher:
    """How a replica follows the models its BLS calls reach: as a group of its own, because a
    Python model follows a model only once it calls it, so its deployment's other replicas may not."""
    return Watcher(replica.replica, replica.app, f"{replica.deployment}{BLS_GROUP_MARK}{replica.replica}")


def is_single_replica_group(group: tuple[str, str]) -> bool:
    """True for a ``bls_watcher`` group: one replica, never counted through Serve."""
    return BLS_GROUP_MARK in group[1]


def batch_settings(config: ModelConfig) -> tuple[int, int]:
    """(rows per formed batch, queue delay in µs); (0, 0) when requests are not combined.

    As in Triton, requests are combined only with a ``dynamic_batching`` block. A batch grows up to
    the largest ``preferred_batch_size`` (``max_batch_size`` when none is given): Serve's batcher
    has one size limit, so the largest preferred size becomes that limit.
    """
    batching = config.dynamic_batching
    if batching is None or config.max_batch_size == 0:
        return 0, 0
    preferred = [size for size in batching.preferred_batch_size if size <= config.max_batch_size]
    return (max(preferred) if preferred else config.max_batch_size), batching.max_queue_delay_microseconds


def route_for(version: int, app: str, config: ModelConfig) -> Route:
    """The route of ``version`` served by ``app`` with the batching that ``config`` asks for."""
    rows, delay_us = batch_settings(config)
    batching = config.dynamic_batching
    max_queue = batching.max_queue_size if rows and batching else 0
    return Route(version, app, rows, delay_us, max_queue, batching.default_timeout_microseconds if batching else 0,
                 config.most_replicas)


def routes_token(routes: Sequence[Route]) -> str:
    """A stable text form of a table, for "has this replica applied the newest table?"."""
    return json.dumps([r.to_dict() for r in routes], sort_keys=True)


def select_version(model: str, order: Sequence[int], prepared: set[int], version: str | int | None) -> int:
    """The version a request for ``version`` goes to.

    Unversioned: the newest version this replica has prepared (fetched its signature), else the
    newest in the table; so a version that was just published but not yet described never takes
    unversioned traffic from one that can answer.

    Args:
        model: the model's name (for the error messages).
        order: the served versions, newest first.
        prepared: the versions ready to take requests.
        version: what the request asked for (None: unversioned).

    Raises:
        ModelNotReady: unversioned, and no version is served.
        ModelNotFound: ``version`` is not served (or not a number).
    """
    if version is None:
        for candidate in order:
            if candidate in prepared:
                return candidate
        if not order:
            raise ModelNotReady(f"model {model!r} has no version to serve")
        return order[0]
    try:
        chosen = int(version)
    except (TypeError, ValueError):
        chosen = None
    if chosen is None or chosen not in order:
        raise ModelNotFound(f"model {model!r} has no version {version!r}; "
                            f"served: {', '.join(map(str, order)) or 'none'}")
    return chosen
