"""Every environment variable is parsed in one place (``deployments.settings``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.errors import ConfigError
from deployments.settings import DEFAULT_INFLIGHT_PER_MODEL, Settings


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_environ({})
    assert settings == Settings()
    assert settings.inflight_per_model == DEFAULT_INFLIGHT_PER_MODEL and settings.checked() is settings
    assert settings.ray_address is None and settings.log_dir is None


def test_every_variable_is_read() -> None:
    settings = Settings.from_environ({
        "INFERGRID_INFLIGHT_PER_MODEL": "7", "INFERGRID_API_KEYS": '{"k": "inference"}',
        "INFERGRID_API_KEY": "k", "INFERGRID_LOG_DIR": "/tmp/logs", "RAY_ADDRESS": "auto", "UNRELATED": "x"})
    assert settings == Settings(7, "", '{"k": "inference"}', "k", Path("/tmp/logs"), "auto")


@pytest.mark.parametrize("value", ["-1", "lots", "1.5", ""])
def test_a_bad_bound_is_kept_as_an_error_naming_the_variable(value: str) -> None:
    settings = Settings.from_environ({"INFERGRID_INFLIGHT_PER_MODEL": value})
    assert settings.inflight_per_model == DEFAULT_INFLIGHT_PER_MODEL  # a replica starts with the default ...
    with pytest.raises(ConfigError, match="INFERGRID_INFLIGHT_PER_MODEL"):
        settings.checked()  # ... and `infergrid serve` refuses the value, naming the variable
