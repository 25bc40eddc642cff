"""A model's traffic policy: weights over its served versions, optionally sticky on a request key,
declared in its ``traffic.json`` beside ``config.pbtxt`` (read like the rest of the folder: a change is
picked up by the next poll; written whole by the repository API).

    {"weights": {"3": 90, "4": 10}, "sticky": {"header": "x-user-id"},
     "shadow": {"version": 5, "share": 0.1, "threshold": 0.5, "timeout_ms": 1000}}

Unversioned inference requests of a model with a policy go to a version chosen by weight; a request
that names a version or a label still gets that version, so a version of weight 0 stays loaded and
addressable. With ``sticky.header`` (an HTTP header or gRPC metadata key; or ``sticky.parameter``, a
KServe v2 request parameter) the choice is weighted
rendezvous hashing of the key: the same key always lands on the same version while the weights stay,
and when they change only the share that must move moves (raising a version's weight moves keys to it
and to nowhere else). Without a key the split is at random in the given proportions. A shadow version
gets a copy of ``share`` of the unversioned requests; the client gets the primary's answer and never
waits for the shadow's, which is compared and counted (``deployments.dataplane.shadow``). The data plane
applies it (``deployments.dataplane.plane``; the request's headers from
``deployments.dataplane.traffic.REQUEST_HEADERS``). Pure: files and values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from backends.errors import ConfigError

__all__ = ["TRAFFIC_FILE", "Guard", "Shadow", "TrafficPolicy", "parse_split", "read_traffic", "write_traffic"]

TRAFFIC_FILE = "traffic.json"
_HEADER_NAME = "abcdefghijklmnopqrstuvwxyz0123456789-_"


def _unit(key: str, version: int) -> float:
    """A stable draw in (0, 1) for (key, version)."""
    digest = hashlib.blake2b(f"{key}\x00{version}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0 ** 64


def _known_fields(data: Any, fields: tuple[str, ...], where: str) -> None:
    """Raise ConfigError unless ``data`` is a JSON object of ``fields`` only."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a JSON object ({', '.join(fields)}) is needed")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} ({', '.join(fields)})")


@dataclass(frozen=True)
class Shadow:
    """A version that gets a copy of a share of the unversioned requests; its answers are compared with
    the primary's (``threshold``: also compare the decision ``value > threshold``) and thrown away."""

    version: int
    share: float = 1.0
    threshold: float | None = None
    timeout_ms: int = 1000

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"version": self.version, "share": self.share, "timeout_ms": self.timeout_ms}
        if self.threshold is not None:
            data["threshold"] = self.threshold
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Shadow:
        """``{"version": 4, "share": 0.1, "threshold": 0.5, "timeout_ms": 1000}``.

        Raises:
            ConfigError: a malformed shadow; names the field.
        """
        _known_fields(data, ("version", "share", "threshold", "timeout_ms"), where)
        version, share = data.get("version"), data.get("share", 1.0)
        threshold, timeout_ms = data.get("threshold"), data.get("timeout_ms", 1000)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"{where}.version: {version!r} is not a version number")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ConfigError(f"{where}.share: {share!r} is not a share in (0, 1]")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise ConfigError(f"{where}.threshold: {threshold!r} is not a number")
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ConfigError(f"{where}.timeout_ms: {timeout_ms!r} is not a whole number of ms >= 1")
        return cls(version, float(share), None if threshold is None else float(threshold), timeout_ms)


@dataclass(frozen=True)
class Guard:
    """Rules for the candidates (every version with weight above 0 but the primary, the one of largest
    weight), checked by each front-door replica over tumbling windows of ``window`` of a candidate's
    unversioned requests: an error rate above ``max_error_rate`` or a p99 above ``max_p99_ratio`` times
    the primary's (over its last window) sets the candidate's weight to 0; a window that passes moves
    the candidate to the next of ``steps`` (its percentage of the two's traffic; 100: promoted)."""

    window: int = 200
    max_error_rate: float | None = None
    max_p99_ratio: float | None = None
    steps: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"window": self.window}
        if self.max_error_rate is not None:
            data["max_error_rate"] = self.max_error_rate
        if self.max_p99_ratio is not None:
            data["max_p99_ratio"] = self.max_p99_ratio
        if self.steps:
            data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Guard:
        """``{"window": 200, "max_error_rate": 0.01, "max_p99_ratio": 1.5, "steps": [10, 50, 100]}``.

        Raises:
            ConfigError: a malformed rule; names the field.
        """
        _known_fields(data, ("window", "max_error_rate", "max_p99_ratio", "steps"), where)
        window, steps = data.get("window", 200), data.get("steps", [])
        if isinstance(window, bool) or not isinstance(window, int) or window < 10:
            raise ConfigError(f"{where}.window: {window!r} is not a whole number of requests >= 10")
        limits = {}
        for key in ("max_error_rate", "max_p99_ratio"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"{where}.{key}: {value!r} is not a number >= 0")
            limits[key] = None if value is None else float(value)
        if not isinstance(steps, list) or any(isinstance(x, bool) or not isinstance(x, int) or not 0 < x <= 100
                                              for x in steps) or steps != sorted(set(steps)):
            raise ConfigError(f"{where}.steps: {steps!r} is not a rising list of percentages in (0, 100]")
        return cls(window, limits["max_error_rate"], limits["max_p99_ratio"], tuple(steps))


@dataclass(frozen=True)
class TrafficPolicy:
    """Weights per version (a version of weight 0 gets no unversioned traffic), the sticky key, and an
    optional shadow."""

    weights: tuple[tuple[int, int], ...]
    sticky_header: str = ""
    shadow: Shadow | None = None
    guard: Guard | None = None
    sticky_parameter: str = ""  # a v2 request parameter (HTTP body or gRPC), instead of a header

    @property
    def primary(self) -> int:
        """The version of largest weight (the lower number on a tie): what candidates are judged against."""
        return max(self.weights, key=lambda item: (item[1], -item[0]))[0]

    @property
    def candidates(self) -> tuple[int, ...]:
        """Versions with weight above 0 other than the primary."""
        return tuple(v for v, _ in self.live if v != self.primary)

    @cached_property
    def live(self) -> tuple[tuple[int, float], ...]:
        """(version, weight) of the versions with weight above 0: where unversioned requests go."""
        return tuple((version, weight) for version, weight in self.weights if weight > 0)

    def with_weight(self, version: int, weight: int) -> TrafficPolicy:
        """The same policy with ``version`` at ``weight``."""
        return replace(self, weights=tuple((v, weight if v == version else w) for v, w in self.weights))

    def stepped(self, version: int) -> TrafficPolicy | None:
        """``version`` moved to the guard's next step (its share of it and the primary's traffic); None:
        no step left."""
        primary, weights = self.primary, dict(self.weights)
        if self.guard is None or not self.guard.steps or version == primary:
            return None
        share = 100 * weights[version] / max(1, weights[version] + weights[primary])
        following = [step for step in self.guard.steps if step > share + 1e-9]
        if not following:
            return None
        return replace(self, weights=tuple((v, following[0] if v == version else 100 - following[0] if v == primary
                                            else w) for v, w in self.weights))

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version the policy names (weight 0 and the shadow included): these stay loaded."""
        named = tuple(version for version, _ in self.weights)
        return named + ((self.shadow.version,) if self.shadow and self.shadow.version not in named else ())

    def sticky_choice(self, headers: Mapping[str, str] | None = None,
                      parameters: Mapping[str, Any] | None = None) -> int | None:
        """The version the request's sticky key (from ``headers`` or its ``parameters``, if the policy
        names one) hashes to; None when the policy is not sticky or the request has no key."""
        if self.sticky_parameter:
            value = parameters.get(self.sticky_parameter) if parameters is not None else None
            key = None if value is None or isinstance(value, bool) else str(value)
        else:
            key = headers.get(self.sticky_header) if headers is not None and self.sticky_header else None
        if not key:
            return None
        return max(self.live, key=lambda item: item[1] / -math.log(_unit(key, item[0])))[0]

    def choose(self, headers: Mapping[str, str] | None = None, rng: random.Random | None = None,
               parameters: Mapping[str, Any] | None = None) -> int:
        """The version an unversioned request goes to: its sticky key's (``sticky_choice``), else a draw
        in the given proportions."""
        keyed = self.sticky_choice(headers, parameters)
        if keyed is not None:
            return keyed
        point = (rng or random).random() * sum(weight for _, weight in self.live)
        for version, weight in self.live:
            point -= weight
            if point < 0:
                return version
        return self.live[-1][0]

    def promoted(self, version: int) -> TrafficPolicy:
        """Every unversioned request to ``version``; the other versions stay loaded at weight 0."""
        others = tuple((v, 0) for v, _ in self.weights if v != version)
        shadow = self.shadow if self.shadow is not None and self.shadow.version != version else None
        return TrafficPolicy(((version, 100), *others), self.sticky_header, shadow, self.guard, self.sticky_parameter)

    def to_dict(self) -> dict:
        """The policy as ``traffic.json`` and the repository API write it."""
        data: dict[str, Any] = {"weights": {str(version): weight for version, weight in self.weights}}
        if self.sticky_header or self.sticky_parameter:
            data["sticky"] = {"header": self.sticky_header} if self.sticky_header else {"parameter": self.sticky_parameter}
        if self.shadow is not None:
            data["shadow"] = self.shadow.to_dict()
        if self.guard is not None:
            data["guard"] = self.guard.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TrafficPolicy:
        """``{"weights": {"3": 90, "4": 10}, "sticky": {"header": "x-user-id"}}``.

        Raises:
            ConfigError: a malformed policy; the message names the field.
        """
        _known_fields(data, ("weights", "sticky", "shadow", "guard"), where)
        weights = data.get("weights")
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError(f'{where}.weights: an object of version -> weight is needed, e.g. {{"3": 90, "4": 10}}')
        checked = []
        for version, weight in weights.items():
            if not str(version).isdigit() or int(version) < 1:
                raise ConfigError(f"{where}.weights: {version!r} is not a version number")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0 or \
                    not math.isfinite(weight):
                raise ConfigError(f"{where}.weights[{version}]: {weight!r} is not a weight >= 0")
            checked.append((int(version), weight))
        if not any(weight > 0 for _, weight in checked):
            raise ConfigError(f"{where}.weights: at least one version needs a weight above 0")
        header, parameter = _sticky(data.get("sticky") or {}, f"{where}.sticky")
        shadow = Shadow.from_dict(data["shadow"], f"{where}.shadow") if data.get("shadow") is not None else None
        guard = Guard.from_dict(data["guard"], f"{where}.guard") if data.get("guard") is not None else None
        return cls(tuple(sorted(checked)), header, shadow, guard, parameter)


def _sticky(sticky: Any, where: str) -> tuple[str, str]:
    """(header, parameter) of ``{"header": "x-user-id"}`` or ``{"parameter": "user_id"}`` (one of them).

    Raises:
        ConfigError: both, neither, or a bad name.
    """
    _known_fields(sticky, ("header", "parameter"), where)
    header, parameter = sticky.get("header", ""), sticky.get("parameter", "")
    if header and parameter:
        raise ConfigError(f"{where}: give a header or a parameter, not both")
    if not isinstance(header, str) or any(c not in _HEADER_NAME for c in header.lower()):
        raise ConfigError(f"{where}.header: {header!r} is not a header name")
    if not isinstance(parameter, str) or (parameter and not parameter.replace("_", "").replace("-", "").isalnum()):
        raise ConfigError(f"{where}.parameter: {parameter!r} is not a parameter name")
    return header.lower(), parameter


def parse_split(text: str) -> dict[str, int]:
    """``3=90,4=10`` (the CLI's ``--split``) -> ``{"3": 90, "4": 10}``.

    Raises:
        ConfigError: an entry that is not VERSION=WEIGHT.
    """
    weights = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        version, _, weight = item.partition("=")
        if not version.strip().isdigit() or not weight.strip().isdigit():
            raise ConfigError(f"--split {item!r}: each entry is VERSION=WEIGHT, e.g. 3=90,4=10")
        weights[version.strip()] = int(weight)
    return weights


def read_traffic(folder: Path) -> TrafficPolicy | None:
    """The policy in ``folder``'s traffic.json (None: no file).

    Raises:
        ConfigError: unreadable, not JSON, or not a valid policy; names the file and the field.
    """
    path = folder / TRAFFIC_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    return TrafficPolicy.from_dict(data, str(path))


def write_traffic(folder: Path, policy: TrafficPolicy | None) -> None:
    """Replace ``folder``'s traffic.json atomically (None: remove it)."""
    path = folder / TRAFFIC_FILE
    if policy is None:
        path.unlink(missing_ok=True)
        return
    staging = folder / f".{TRAFFIC_FILE}.writing"
    staging.write_text(json.dumps(policy.to_dict(), indent=1) + "\n")
    os.replace(staging, path)
