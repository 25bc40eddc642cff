"""Admission control in HAProxy: past a bound of requests in flight per replica, 503 from HAProxy.

Why here: under overload a Python replica spends as much CPU refusing a request (read, parse,
route, render the 503) as serving one, so its socket backlog grows and a refusal takes seconds.
HAProxy counts the requests it has sent to each backend (``be_conn``) and can answer a 503 itself
in microseconds, before any Python process sees the request. Ray Serve renders HAProxy's
configuration from a template in its proxy-manager actor and has no setting for this, so
``install`` (run in every worker of the job as Ray's ``worker_process_setup_hook``) adds one rule
to each application backend of that template. If the template no longer has the line the rule
is anchored on (another Ray version), nothing is changed and the replicas' own limits
(``max_queued_requests``, ``max_queue_size``) still apply; ``tests/unit/test_admission.py`` fails
on such a template, and ``tests/integration/test_limits.py`` has HAProxy answer past the bound.
"""

from __future__ import annotations

import json

from backends.errors import Overloaded
from deployments.settings import DEFAULT_INFLIGHT_PER_REPLICA, INFLIGHT_ENV, Settings, current

__all__ = ["SETUP_HOOK", "LIMIT_ENV", "DEFAULT_INFLIGHT_PER_REPLICA", "admission_rule", "patched_template",
           "install", "inflight_per_replica", "runtime_env",
           "side_ports_on_serving_host"]

SETUP_HOOK = "deployments.launch.admission.install"
LIMIT_ENV = INFLIGHT_ENV
RETRY_AFTER_S = Overloaded.retry_after_s
_ANCHOR = ("backend {{ backend.name or 'unknown' }}\n    log global\n"
           "    # Enable HTTP connection reuse for better performance\n    http-reuse always\n")
_MARKER = "# infergrid admission"


def inflight_per_replica(settings: Settings | None = None) -> int:
    """Requests HAProxy lets wait in one replica (``INFERGRID_HAPROXY_INFLIGHT_PER_REPLICA``; 0: no bound).

    Raises:
        ConfigError: the variable is not a non-negative integer.
    """
    return (settings or current()).checked().inflight_per_replica


def admission_rule(per_replica: int) -> str:
    """The template lines for one backend: 503 + Retry-After once its requests exceed the bound.

    ``be_conn`` counts the requests HAProxy has attached to the backend, the one being evaluated
    included, so ``gt`` lets exactly ``per_replica x replicas`` through.
    """
    body = json.dumps({"error": "overloaded: every replica of this application holds its limit of "
                                f"{per_replica} requests ({LIMIT_ENV}); retry later"})
    quoted = body.replace("\\", "\\\\").replace('"', '\\"')
    return (f"    {_MARKER}: {per_replica} requests in flight per replica\n"
            f"    http-request return status 503 content-type application/json hdr Retry-After {RETRY_AFTER_S} "
            f"string \"{quoted}\" if {{ be_conn gt {{{{ {per_replica} * (backend.servers|length or 1) }}}} }}\n")


def patched_template(template: str, per_replica: int) -> str | None:
    """``template`` with the rule in every application backend; None when the anchor is missing."""
    if _MARKER in template:
        return template
    if _ANCHOR not in template:
        return None
    return template.replace(_ANCHOR, _ANCHOR + admission_rule(per_replica), 1)


# Serve binds HAProxy's Prometheus exporter and stats page on every interface, whatever host the
# HTTP frontend serves on; they follow the frontend's host instead, so `infergrid serve`'s default
# 127.0.0.1 keeps them on this machine too.
_SIDE_BINDS = (("    bind :{{ config.metrics_port }}\n",
                "    bind {{ config.frontend_host }}:{{ config.metrics_port }}\n"),
               ("  bind *:{{ config.stats_port }}\n",
                "  bind {{ config.frontend_host }}:{{ config.stats_port }}\n"))


def side_ports_on_serving_host(template: str) -> str:
    """``template`` with HAProxy's exporter and stats page bound where the HTTP frontend is (each
    edit only where its line is found)."""
    for stock, ours in _SIDE_BINDS:
        template = template.replace(stock, ours)
    return template


def runtime_env() -> dict:
    """The job ``runtime_env`` that installs the rule: pass to ``ray.init`` before ``serve.start``
    (Serve's controller and its HAProxy manager inherit the job's setup hook)."""
    return {"worker_process_setup_hook": SETUP_HOOK}


def install(settings: Settings | None = None) -> None:
    """Ray worker setup hook: patch Serve's HAProxy template in this process (cheap when unused):
    the admission rule, and the exporter and stats page bound to the serving host.

    Never raises: a worker must start even with a bad ``INFERGRID_HAPROXY_INFLIGHT_PER_REPLICA``
    (``infergrid serve`` refuses one before Ray starts).
    """
    settings = settings or current()
    if not settings.haproxy:
        return
    from ray.serve._private import haproxy

    template = side_ports_on_serving_host(haproxy.HAPROXY_CONFIG_TEMPLATE)
    per_replica = settings.inflight_per_replica  # 0 for a bad value: the hook never raises
    if per_replica:
        template = patched_template(template, per_replica) or template
    haproxy.HAPROXY_CONFIG_TEMPLATE = template
