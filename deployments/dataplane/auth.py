"""API keys and roles, checked in every HTTP replica (no proxy in front needed).

Keys are sent as ``Authorization: Bearer <key>``. Each key has one role, as in TorchServe:
``inference`` (models, pipelines, server metadata) or ``management`` (the repository API: index,
load, unload; a management key may also call inference). Health, metrics and the OpenAPI
document are open by default (``open_groups``).

Why every replica checks, not one front door: with Serve's HAProxy ingress, requests for
``/v2/models/{model}`` go straight from HAProxy to that model's endpoint replicas, which listen
on their own ports; the server ingress never sees them. So the policy travels to each replica as
an init argument, holding SHA-256 digests of the keys, never the keys: a replica's arguments are
visible to anyone who can read the cluster's state, and Serve may log them. A presented key is
hashed and compared against every digest with ``hmac.compare_digest`` (equal-length strings, no
early exit), so the time taken says nothing about how close a guess was.

Which operations are in which group is the transport's business (an HTTP path, a gRPC method);
the policy only knows groups, so a new protocol reuses it unchanged. Pure: no Ray, no Starlette.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends.errors import ConfigError, Forbidden, Unauthenticated

__all__ = ["ROLES", "GROUPS", "DEFAULT_OPEN_GROUPS", "GroupOf", "AuthPolicy", "parse_api_keys", "read_api_keys",
           "key_digest", "parse_open_groups"]

ROLES = ("inference", "management")
GROUPS = ("health", "metrics", "docs", "inference", "management")
DEFAULT_OPEN_GROUPS = ("health", "metrics", "docs")
GroupOf = str | Callable[[], str]  # an auth group, or how to find it
_BEARER = re.compile(r"^\s*bearer\s+(?P<key>\S+)\s*$", re.IGNORECASE)


def key_digest(key: str) -> str:
    """SHA-256 of a key, hex: what replicas hold instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(text: str, source: str) -> dict[str, str]:
    """``{"key": "role", ...}`` from JSON text. Error messages name the entry by position, never the key.

    Raises:
        ConfigError: not a JSON object of non-empty string keys to known roles, or empty.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: must be a JSON object mapping each API key to a role, "
                          f'e.g. {{"KEY": "inference"}}')
    for position, (key, role) in enumerate(data.items(), start=1):
        if not key.strip() or any(c.isspace() for c in key):
            raise ConfigError(f"{source}: key #{position} is empty or holds whitespace")
        if role not in ROLES:
            raise ConfigError(f"{source}: key #{position} has role {role!r}; roles are {', '.join(ROLES)}")
    return dict(data)


def read_api_keys(path: Path) -> dict[str, str]:
    """The keys of an ``--api-keys`` file (see ``parse_api_keys``).

    Raises:
        ConfigError: the file cannot be read or is malformed.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"API key file {path}: {exc.strerror}") from None
    return parse_api_keys(text, f"API key file {path}")


def parse_open_groups(text: str) -> tuple[str, ...]:
    """``--open-endpoints``: comma-separated groups, or ``none``.

    Raises:
        ConfigError: an unknown group.
    """
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in DEFAULT_OPEN_GROUPS]  # the open-by-default ones are all that may open
    if unknown:
        raise ConfigError(f"--open-endpoints: unknown group(s) {', '.join(unknown)}; use health, metrics, docs or none")
    return names


@dataclass(frozen=True)
class AuthPolicy:
    """Who may call what. No digests: authentication is off (every request is let through)."""

    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 hex of a key -> role
    open_groups: tuple[str, ...] = DEFAULT_OPEN_GROUPS

    @classmethod
    def from_keys(cls, keys: dict[str, str], open_groups: tuple[str, ...] = DEFAULT_OPEN_GROUPS) -> AuthPolicy:
        """The policy for plain keys (read from a file or the environment)."""
        return cls({key_digest(k): role for k, role in keys.items()}, tuple(open_groups))

    @classmethod
    def from_dict(cls, data: dict | None) -> AuthPolicy:
        """Inverse of ``to_dict`` (a Serve config's ``args``); None means no authentication."""
        if not data:
            return cls()
        return cls(dict(data.get("digests", {})), tuple(data.get("open_groups", DEFAULT_OPEN_GROUPS)))

    def to_dict(self) -> dict:
        """Plain data for actor arguments and Serve config files (digests only)."""
        return {"digests": dict(self.digests), "open_groups": list(self.open_groups)}

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def __repr__(self) -> str:  # never print digests either: they are enough to test guesses offline
        return f"AuthPolicy(keys={len(self.digests)}, open_groups={self.open_groups})"

    def role_of(self, key: str) -> str | None:
        """The role of a presented key, compared in constant time against every known digest."""
        presented = key_digest(key)
        role = None
        for digest, candidate in self.digests.items():
            if hmac.compare_digest(presented, digest):
                role = candidate
        return role

    def authorise(self, group: GroupOf, authorization: str | None, what: str) -> None:
        """Let a request for an operation of ``group`` (one of ``GROUPS``) through, or raise.

        ``group`` may be a callable that finds it, called only when keys are set: with no keys
        nothing is computed per request.

        Protocol-neutral: each transport says which group its operation is in (HTTP by path, see
        ``deployments.ingress.http.endpoint_group``) and passes the ``Authorization`` value it got;
        ``what`` names the operation in the 403 message.

        Raises:
            Unauthenticated: no ``Authorization: Bearer`` key, or an unknown one (401).
            Forbidden: an inference key on the repository API (403).
        """
        if not self.digests:
            return
        if callable(group):
            group = group()
        if group in self.open_groups:
            return
        match = _BEARER.match(authorization or "")
        if match is None:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        role = self.role_of(match.group("key"))
        if role is None:
            raise Unauthenticated("unknown API key")
        if group == "management" and role != "management":
            raise Forbidden(f"this API key has the {role!r} role; {what} needs the 'management' role")
