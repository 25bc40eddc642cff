"""API keys and roles (deployments.dataplane.auth), and the CLI's refusal to serve a network without keys."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from backends.errors import ConfigError, Forbidden, Unauthenticated
from deployments.dataplane.auth import AuthPolicy, parse_api_keys, parse_open_groups, read_api_keys
from deployments.ingress.http import endpoint_group
from deployments.launch.cli import bind_refusal, is_loopback, main

KEYS = {"k-123": "inference", "k-456": "management"}
POLICY = AuthPolicy.from_keys(KEYS)


def check(policy: AuthPolicy, path: str, authorization: str | None) -> None:
    """What an HTTP replica does: the path's group, then the policy."""
    policy.authorise(endpoint_group(path), authorization, path)


@pytest.mark.parametrize(("path", "group"), [
    ("/v2/health/live", "health"), ("/v2/health/ready", "health"), ("/v2/models/fraud/ready", "health"),
    ("/v2/models/fraud/versions/2/ready", "health"), ("/metrics", "metrics"), ("/v2/models/stats", "metrics"),
    ("/v2/models/fraud/stats", "metrics"), ("/v2/models/fraud/versions/1/stats", "metrics"),
    ("/openapi.json", "docs"), ("/v2/repository/index", "management"),
    ("/v2/repository/models/fraud/load", "management"), ("/v2/repository/models/fraud/unload/", "management"),
    ("/v2/models/fraud/infer", "inference"), ("/v2/models/fraud", "inference"), ("/v2", "inference"),
    ("/pipelines/loan_decision", "inference"), ("/anything/else", "inference"),
    ("/v2/models/ready/infer", "inference"), ("/v2/repositoryx", "inference"),
])
def test_every_path_has_a_group(path: str, group: str) -> None:
    assert endpoint_group(path) == group


def test_no_key_or_unknown_key_is_401_wrong_role_403() -> None:
    for header in (None, "", "Bearer", "Basic azEyMw==", "Bearer k-12", "Bearer k-1234", "Bearer k-123 extra"):
        with pytest.raises(Unauthenticated) as info:
            check(POLICY, "/v2/models/fraud/infer", header)
        assert info.value.http_status == 401 and "k-12" not in str(info.value)
        assert info.value.response_headers() == {"WWW-Authenticate": 'Bearer realm="infergrid"'}
    with pytest.raises(Forbidden) as info:
        check(POLICY, "/v2/repository/models/fraud/load", "Bearer k-123")
    assert info.value.http_status == 403 and "management" in str(info.value) and "k-123" not in str(info.value)


def test_roles_allow_what_they_name() -> None:
    check(POLICY, "/v2/models/fraud/infer", "Bearer k-123")
    check(POLICY, "/pipelines/loan_decision", "bearer   k-123 ")  # the scheme is case-insensitive
    check(POLICY, "/v2/repository/models/fraud/load", "Bearer k-456")
    check(POLICY, "/v2/models/fraud/infer", "Bearer k-456")  # management may also call inference


def test_health_metrics_and_docs_are_open_by_default_and_configurable() -> None:
    for path in ("/v2/health/ready", "/metrics", "/v2/models/fraud/stats", "/openapi.json", "/v2/models/x/ready"):
        check(POLICY, path, None)
    closed = AuthPolicy.from_keys(KEYS, parse_open_groups("health"))
    check(closed, "/v2/health/live", None)
    for path in ("/metrics", "/openapi.json", "/v2/models/stats"):
        with pytest.raises(Unauthenticated):
            check(closed, path, None)
    nothing_open = AuthPolicy.from_keys(KEYS, parse_open_groups("none"))
    with pytest.raises(Unauthenticated):
        check(nothing_open, "/v2/health/live", None)
    with pytest.raises(ConfigError, match="unknown group.*inference"):
        parse_open_groups("health,inference")


def test_no_keys_means_no_authentication() -> None:
    check(AuthPolicy(), "/v2/repository/models/fraud/load", None)
    check(AuthPolicy.from_dict(None), "/v2/models/fraud/infer", None)
    assert not AuthPolicy().enabled and POLICY.enabled


def test_replicas_get_digests_never_keys() -> None:
    shipped = POLICY.to_dict()
    text = json.dumps(shipped) + repr(POLICY) + str(pickle.dumps(AuthPolicy.from_dict(shipped)))
    assert "k-123" not in text and "k-456" not in text
    assert sorted(shipped["digests"].values()) == ["inference", "management"]
    check(AuthPolicy.from_dict(shipped), "/v2/repository/index", "Bearer k-456")


def test_every_digest_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import deployments.dataplane.auth as auth

    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    assert POLICY.role_of("k-123") == "inference"  # a match does not stop the loop early
    assert POLICY.role_of("x") is None
    assert calls == [(64, 64)] * 4


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not valid JSON"), ("[]", "JSON object"), ("{}", "JSON object"),
    ('{"k-1": "admin"}', "key #1 has role 'admin'"), ('{"a": "inference", "": "inference"}', "key #2 is empty"),
    ('{"has space": "inference"}', "key #1 is empty or holds whitespace"),
])
def test_bad_key_files_are_named_without_their_keys(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_api_keys(text, "keys.json")
    assert "k-1" not in str(info.value) and "has space" not in str(info.value)


def test_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    assert read_api_keys(path) == KEYS
    with pytest.raises(ConfigError, match="No such file"):
        read_api_keys(tmp_path / "missing.json")


def test_loopback_only_without_keys() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")
    assert not is_loopback("myhost")
    assert bind_refusal("127.0.0.1", 0, False) is None
    assert "refusing to serve on 0.0.0.0" in bind_refusal("0.0.0.0", 0, False)
    assert bind_refusal("0.0.0.0", 1, False) is None and bind_refusal("0.0.0.0", 0, True) is None


def test_serve_on_a_network_without_keys_refuses_before_starting(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # Exits before Ray starts (a started Ray would make this test take seconds, not milliseconds).
    assert main(["serve", "--repository", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "--allow-unauthenticated" in capsys.readouterr().err
    assert main(["config", "--repository", str(tmp_path), "--host", "0.0.0.0"]) == 2
    bad = tmp_path / "keys.json"
    bad.write_text('{"secret-value": "root"}')
    assert main(["serve", "--repository", str(tmp_path), "--api-keys", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "role 'root'" in err and "secret-value" not in err


def test_config_file_holds_digests(tmp_path: Path, example_repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "serve.yaml"
    monkeypatch.setenv("INFERGRID_API_KEYS", json.dumps(KEYS))
    assert main(["config", "--repository", str(example_repository), "--host", "0.0.0.0", "-o", str(out)]) == 0
    text = out.read_text()
    assert "k-123" not in text and POLICY.to_dict()["digests"].popitem()[0] in text
    import yaml

    # The front door (every client connection) and the composites (forwarded to) hold the digests.
    guarded = [a for a in yaml.safe_load(text)["applications"] if ":v" not in a["name"]]
    assert any(a["name"] == "infergrid:frontdoor" for a in guarded)
    assert guarded and all(a["args"]["auth"] == POLICY.to_dict() for a in guarded)
