"""TF Serving's --monitoring_config_file: its MonitoringConfig text, the Prometheus path it names on the
REST port, and the refusals of a bad file or a start without a REST port."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.errors import ConfigError
from deployments.launch.flags import build_parser, check_args
from deployments.launch.tfserving_start import tf_serving_start
from deployments.repository.tfserving_monitoring import DEFAULT_PROMETHEUS_PATH, parse_monitoring_config


@pytest.mark.parametrize(("text", "path"), [
    ('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }', "/monitoring/prometheus/metrics"),
    ('prometheus_config { enable: true path: "/tf/metrics" }', "/tf/metrics"),
    ("prometheus_config { enable: true }", DEFAULT_PROMETHEUS_PATH),  # TF Serving's default path
    ('prometheus_config { enable: false path: "/x" }', ""),
    ("", ""),
])
def test_the_prometheus_path_a_monitoring_config_names(text: str, path: str) -> None:
    assert parse_monitoring_config(text, "monitoring.config") == path


@pytest.mark.parametrize(("text", "message"), [
    ("prometheus_config { enabled: true }", 'monitoring.config:1:21: .*no field named "enabled"'),
    ('prometheus_config { enable: true path: "metrics" }', "prometheus_config.path: must start with '/'"),
    ('prometheus_config { enable: true path: "/v1/models/x" }', "lies under /v1/models"),
])
def test_a_bad_monitoring_config_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_monitoring_config(text, "monitoring.config")


def test_the_flag_needs_the_rest_port(tmp_path: Path) -> None:
    parser = build_parser(lambda a: 0, lambda a: 0, lambda a: 0)
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/tf/metrics" }')
    started, problem = tf_serving_start(check_args(parser, parser.parse_args(
        ["serve", "--repository", str(tmp_path), "--rest_api_port", "8501", "--monitoring_config_file", str(config)])))
    assert problem is None and started.metrics_path == "/tf/metrics"
    started, problem = tf_serving_start(check_args(parser, parser.parse_args(
        ["serve", "--repository", str(tmp_path), "--monitoring-config-file", str(config)])))
    assert "give --rest_api_port too" in problem
    missing = tf_serving_start(check_args(parser, parser.parse_args(
        ["serve", "--repository", str(tmp_path), "--rest_api_port", "8501",
         "--monitoring_config_file", str(tmp_path / "nope")])))[1]
    assert "nope: cannot read" in missing
