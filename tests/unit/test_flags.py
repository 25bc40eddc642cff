"""``infergrid serve`` takes tritonserver's command line: its spellings are aliases of ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.launch.flags import build_parser, check_args
from deployments.repository.scan import scan_model


def parse(*argv: str):
    parser = build_parser(lambda a: 0, lambda a: 0, lambda a: 0)
    return check_args(parser, parser.parse_args(list(argv)))


def test_tritonserver_spellings_are_aliases() -> None:
    triton = parse("serve", "--model-repository", "/m", "--http-port", "9000", "--grpc-port", "9001",
                   "--metrics-port", "9002", "--http-address", "127.0.0.2", "--strict-model-config=true",
                   "--exit-on-error", "false", "--log-verbose", "1", "--model-control-mode", "explicit",
                   "--load-model", "a", "--load-model", "b", "--repository-poll-secs", "3")
    assert (triton.repository, triton.port, triton.grpc_port, triton.metrics_port) == ("/m", 9000, 9001, 9002)
    assert (triton.host, triton.grpc_address, triton.metrics_address) == ("127.0.0.2",) * 3
    assert triton.strict_model_config is True and triton.exit_on_error is False and triton.log_verbose == 1
    assert triton.load_model == ["a", "b"] and triton.repository_poll_secs == 3
    ours = parse("serve", "--repository", "/m", "--port", "9000")
    assert (ours.repository, ours.port, ours.metrics_port, ours.strict_model_config) == ("/m", 9000, 8002, False)
    off = parse("serve", "--repository", "/m", "--allow-grpc=false", "--allow-metrics", "0", "--strict-model-config")
    assert (off.grpc_port, off.metrics_port, off.strict_model_config) == (0, 0, True)
    several = parse("serve", "--model-repository", "/a", "--model-repository", "/b")
    assert several.repositories == ["/a", "/b"]


def test_several_repositories_serve_as_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from deployments.repository.roots import RepositoryRoots

    for root, names in (("a", ("fraud", "shared", ".hidden")), ("b", ("credit", "shared"))):
        for name in names:
            (tmp_path / root / name).mkdir(parents=True)
    roots = RepositoryRoots([tmp_path / "a", tmp_path / "b"])
    assert roots.model_names() == ["credit", "fraud", "shared"]
    assert roots.folder("credit") == tmp_path / "b" / "credit"
    assert roots.folder("shared") == tmp_path / "a" / "shared"  # the first repository wins
    assert "model shared is in two repositories" in caplog.text
    assert roots.folder("nothing") == tmp_path / "a" / "nothing" and str(roots).count(",") == 1
    (tmp_path / "tf_base" / "1").mkdir(parents=True)  # TF Serving's --model_name / --model_base_path
    named = RepositoryRoots([tmp_path / "b"], {"resnet": tmp_path / "tf_base", "gone": tmp_path / "nowhere"})
    assert named.model_names() == ["credit", "resnet", "shared"] and named.folder("resnet") == tmp_path / "tf_base"
    assert named.named_at(tmp_path / "tf_base") == "resnet" and named.named_at(tmp_path / "b") is None


def test_tf_serving_one_model_flags() -> None:
    args = parse("serve", "--model_name", "resnet", "--model_base_path", "/models/resnet", "--rest_api_port", "8501")
    assert (args.model_name, args.model_base_path, args.rest_api_port, args.repositories) == (
        "resnet", "/models/resnet", 8501, [])
    for argv in (("serve", "--model_name", "resnet"), ("serve",)):
        with pytest.raises(SystemExit):
            parse(*argv)


@pytest.mark.parametrize("argv", [
    ("config", "--model-repository", "/a", "--model-repository", "/b"),
    ("serve", "--repository", "/a", "--exit-on-error", "maybe"),
    ("serve", "--repository", "/a", "--repository-poll-secs", "0"),
])
def test_bad_command_lines_are_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_strict_model_config_completes_nothing(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    (bare / "1").mkdir(parents=True)
    (bare / "1" / "model.onnx").write_bytes(b"")
    assert scan_model(bare).error is None
    assert "config.pbtxt: missing" in scan_model(bare, strict=True).error
    (bare / "config.pbtxt").write_text('backend: "onnxruntime" max_batch_size: 4')
    assert "input/output" in scan_model(bare, strict=True).error
    (bare / "config.pbtxt").write_text('max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [1] } ] '
                                       'output [ { name: "y" data_type: TYPE_FP32 dims: [1] } ]')
    assert "platform" in scan_model(bare, strict=True).error
