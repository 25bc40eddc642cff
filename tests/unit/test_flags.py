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


@pytest.mark.parametrize("argv", [
    ("serve", "--model-repository", "/a", "--model-repository", "/b"),
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
