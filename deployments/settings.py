"""Every environment variable infergrid reads, parsed once per process into one frozen object.

Why one module: a knob read in several places drifts (two defaults, two parsers, two error
messages). Here each variable has one name, one default and one check; the rest of the code is
handed a ``Settings`` (or asks ``current()``, which reads the environment once per process).
Variables that only Ray or Serve read (``RAY_SERVE_*``) are set by ``deployments.launch.cli``
before Ray starts and are not parsed here.

Pure: no Ray.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backends.errors import ConfigError

__all__ = ["Settings", "current", "INFLIGHT_ENV", "DEFAULT_INFLIGHT_PER_MODEL", "API_KEYS_ENV",
           "CLIENT_KEY_ENV", "LOG_DIR_ENV", "RAY_ADDRESS_ENV"]

INFLIGHT_ENV = "INFERGRID_INFLIGHT_PER_MODEL"
DEFAULT_INFLIGHT_PER_MODEL = 256  # four full batches of a max_batch_size 64 model, per front-door replica
API_KEYS_ENV = "INFERGRID_API_KEYS"  # the same JSON object as an --api-keys file
CLIENT_KEY_ENV = "INFERGRID_API_KEY"  # the key `infergrid models` sends
LOG_DIR_ENV = "INFERGRID_LOG_DIR"
RAY_ADDRESS_ENV = "RAY_ADDRESS"


@dataclass(frozen=True)
class Settings:
    """The environment as infergrid understands it.

    Attributes:
        inflight_per_model: requests of one model a front-door replica holds before it answers 503 +
            Retry-After, unread (0: no bound).
        inflight_error: why ``INFERGRID_INFLIGHT_PER_MODEL`` was refused ("" when it is valid);
            kept instead of raised so a replica never fails to start on it (the CLI refuses it).
        api_keys_json: ``INFERGRID_API_KEYS``, the server's keys as JSON (None: not set).
        client_api_key: ``INFERGRID_API_KEY``, the key ``infergrid models`` presents.
        log_dir: ``INFERGRID_LOG_DIR``, where JSON-lines logs go (None: Ray's session folder).
        ray_address: ``RAY_ADDRESS``, a cluster to join (None: start an embedded Ray).
    """

    inflight_per_model: int = DEFAULT_INFLIGHT_PER_MODEL
    inflight_error: str = ""
    api_keys_json: str | None = None
    client_api_key: str | None = None
    log_dir: Path | None = None
    ray_address: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Parse ``environ`` (never raises; see ``checked``)."""
        raw = environ.get(INFLIGHT_ENV, str(DEFAULT_INFLIGHT_PER_MODEL))
        valid = raw.strip().isdigit()
        return cls(
            inflight_per_model=int(raw) if valid else DEFAULT_INFLIGHT_PER_MODEL,
            inflight_error="" if valid else f"{INFLIGHT_ENV} must be a non-negative integer, got {raw!r}",
            api_keys_json=environ.get(API_KEYS_ENV) or None,
            client_api_key=environ.get(CLIENT_KEY_ENV) or None,
            log_dir=Path(environ[LOG_DIR_ENV]) if environ.get(LOG_DIR_ENV) else None,
            ray_address=environ.get(RAY_ADDRESS_ENV) or None,
        )

    def checked(self) -> Settings:
        """Itself, once every value is valid.

        Raises:
            ConfigError: a variable holds a value infergrid cannot use; the message names it.
        """
        if self.inflight_error:
            raise ConfigError(self.inflight_error)
        return self


@functools.cache
def current() -> Settings:
    """This process's settings, read from its environment on first use."""
    return Settings.from_environ(os.environ)
