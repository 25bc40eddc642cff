"""HAProxy admission rule: it fits the installed Ray's template, renders the right bound, and the
setup hook patches only what it should (the rule answering over HTTP is in tests/integration/test_limits.py)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from jinja2 import Environment
from ray.serve._private import haproxy, haproxy_templates

from backends.errors import ConfigError
from deployments.launch import admission
from deployments.settings import Settings


def test_the_rule_goes_into_every_application_backend_of_the_installed_template() -> None:
    patched = admission.patched_template(haproxy_templates.HAPROXY_CONFIG_TEMPLATE, 64)
    assert patched is not None, "Ray's HAProxy template changed: deployments.launch.admission's anchor is gone"
    assert patched.count("be_conn gt") == 1  # one backend block in the template, rendered per application
    assert admission.patched_template(patched, 64) == patched  # idempotent
    Environment().parse(patched)  # still a valid template


def test_a_template_without_the_anchor_is_left_alone() -> None:
    assert admission.patched_template("global\n    maxconn 10\n", 64) is None


@pytest.mark.parametrize(("servers", "bound"), [(1, 128), (3, 384), (0, 128)])
def test_the_bound_is_per_replica(servers: int, bound: int) -> None:
    rule = Environment().from_string(admission.admission_rule(128))
    text = rule.render(backend=SimpleNamespace(servers=list(range(servers))))
    assert f"if {{ be_conn gt {bound} }}" in text
    assert "http-request return status 503 content-type application/json hdr Retry-After 1 " in text


def test_the_refusal_body_is_json_naming_the_setting() -> None:
    quoted = re.search(r'string "((?:[^"\\]|\\.)*)"', admission.admission_rule(128)).group(1)
    body = json.loads(re.sub(r"\\(.)", r"\1", quoted))
    assert admission.LIMIT_ENV in body["error"] and "128" in body["error"]


def test_the_setting_is_read_and_checked() -> None:
    assert admission.inflight_per_replica(Settings.from_environ({})) == admission.DEFAULT_INFLIGHT_PER_REPLICA
    assert admission.inflight_per_replica(Settings.from_environ({admission.LIMIT_ENV: "0"})) == 0
    with pytest.raises(ConfigError, match=admission.LIMIT_ENV):
        admission.inflight_per_replica(Settings.from_environ({admission.LIMIT_ENV: "-3"}))


@pytest.mark.parametrize(("haproxy_on", "limit", "patched"),
                         [("1", "32", True), ("0", "32", False), ("1", "0", False), ("1", "lots", False)])
def test_the_setup_hook_patches_only_when_asked(monkeypatch: pytest.MonkeyPatch, haproxy_on: str, limit: str,
                                                patched: bool) -> None:
    original = haproxy_templates.HAPROXY_CONFIG_TEMPLATE
    monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", original)
    environ = {"RAY_SERVE_ENABLE_HA_PROXY": haproxy_on, admission.LIMIT_ENV: limit}
    admission.install(Settings.from_environ(environ))  # never raises, even for a bad value
    assert ("be_conn gt {{ 32 *" in haproxy.HAPROXY_CONFIG_TEMPLATE) is patched
    assert admission.runtime_env() == {"worker_process_setup_hook": "deployments.launch.admission.install"}


def test_haproxys_side_ports_follow_the_serving_host() -> None:
    stock = haproxy_templates.HAPROXY_CONFIG_TEMPLATE
    moved = admission.side_ports_on_serving_host(stock)
    assert "bind :{{ config.metrics_port }}" in stock and "bind *:{{ config.stats_port }}" in stock, \
        "Ray's HAProxy template changed: deployments.launch.admission's bind lines are gone"
    assert moved.count("bind {{ config.frontend_host }}:") == 3  # the HTTP frontend, the exporter, the stats page
    Environment().parse(moved)
