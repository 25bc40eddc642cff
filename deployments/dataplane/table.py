"""The routing table the controller publishes and every endpoint replica applies.

One entry per served version, newest first: which application answers for it and how requests to
it are batched. Batching lives in the table (not in the version's replicas) so a changed
``dynamic_batching`` block takes effect in place, without reloading the model. Entries are plain
dicts on the wire: they travel in a deployment's ``user_config`` and over actor calls.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from backends.model_config import ModelConfig
from deployments.dataplane.model_version import batch_settings

__all__ = ["Route", "routes_token", "route_for"]


@dataclass(frozen=True)
class Route:
    """One served version."""

    version: int
    app: str
    batch_rows: int = 0
    queue_delay_us: int = 0
    max_queue_rows: int = 0  # dynamic_batching.default_queue_policy.max_queue_size; 0: unbounded
    timeout_us: int = 0  # default_queue_policy.default_timeout_microseconds; 0: none

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Route:
        return cls(int(data["version"]), str(data["app"]), int(data.get("batch_rows", 0)),
                   int(data.get("queue_delay_us", 0)), int(data.get("max_queue_rows", 0)),
                   int(data.get("timeout_us", 0)))


def route_for(version: int, app: str, config: ModelConfig) -> Route:
    """The route of ``version`` served by ``app`` with the batching that ``config`` asks for."""
    rows, delay_us = batch_settings(config)
    batching = config.dynamic_batching
    max_queue = batching.max_queue_size if rows and batching else 0
    return Route(version, app, rows, delay_us, max_queue, batching.default_timeout_microseconds if batching else 0)


def routes_token(routes: list[dict]) -> str:
    """A stable text form of a table, for "has this replica applied the newest table?"."""
    return json.dumps(routes, sort_keys=True)
