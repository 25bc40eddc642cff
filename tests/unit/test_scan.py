"""Repository scanning: layouts, configless folders, versions, and broken models reported, not raised."""

from __future__ import annotations

from pathlib import Path

from build_repository import FRAUD_CONFIG, build_fraud

from deployments.applications.serve_config import repository_serve_config
from deployments.repository.scan import scan_repository


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_layouts_and_platform_detection(tmp_path: Path) -> None:
    write(tmp_path / "onnx_noconfig" / "1" / "model.onnx")
    write(tmp_path / "tfserving" / "3" / "saved_model.pb")
    write(tmp_path / "bare" / "model.onnx")
    write(tmp_path / "torch" / "2" / "model.pt2")
    write(tmp_path / "versions" / "config.pbtxt", 'backend: "onnxruntime"')
    for name in ("1", "2", "07", "0", "latest"):
        write(tmp_path / "versions" / name / "model.onnx")
    snapshot = scan_repository(tmp_path)
    models = snapshot.models
    assert models["onnx_noconfig"].config.platform == "onnxruntime"
    assert models["tfserving"].config.platform == "tensorflow" and models["tfserving"].served_versions == [3]
    assert models["bare"].versions == {1: tmp_path / "bare"}
    assert models["torch"].config.platform == "pytorch"
    assert sorted(models["versions"].versions) == [1, 2] and models["versions"].served_versions == [2]
    assert all(m.error is None for m in models.values())


def test_broken_models_are_reported_with_file_and_field(tmp_path: Path) -> None:
    write(tmp_path / "badcfg" / "config.pbtxt", "max_batch_size: -4")
    write(tmp_path / "badcfg" / "1" / "model.onnx")
    write(tmp_path / "nofiles" / "1" / "readme.txt")
    write(tmp_path / "noversion" / "config.pbtxt", 'backend: "onnxruntime"')
    write(tmp_path / "policy" / "config.pbtxt", 'backend: "onnxruntime" version_policy: { specific { versions: [9] } }')
    write(tmp_path / "policy" / "1" / "model.onnx")
    write(tmp_path / ".hidden" / "1" / "model.onnx")
    models = scan_repository(tmp_path).models
    assert ".hidden" not in models
    assert models["badcfg"].error.startswith("badcfg/config.pbtxt: max_batch_size")
    assert "platform: not set" in models["nofiles"].error
    assert "no version folders" in models["noversion"].error
    assert "version_policy" in models["policy"].error


def test_serve_config_lists_every_application(tmp_path: Path) -> None:
    write(tmp_path / "fraud" / "config.pbtxt", FRAUD_CONFIG)
    build_fraud(tmp_path / "fraud" / "1")
    write(tmp_path / "broken" / "config.pbtxt", "max_batch_size: [")
    config = repository_serve_config(tmp_path)
    names = [(a["name"], a["route_prefix"]) for a in config["applications"]]
    assert names == [("fraud:v1", None), ("infergrid:frontdoor", None)]  # no Serve route: the front door listens
    assert config["proxy_location"] == "Disabled"
    assert config["applications"][1]["args"] == {"repository": str(tmp_path), "host": "0.0.0.0", "port": 8000,
                                                 "replicas": 1}


def test_failure_reason_keeps_our_error_line() -> None:
    from deployments.control.serve_calls import failure_reason

    traceback = ("The deployment failed to start 1 times.\nTraceback (most recent call last):\n  File x\n"
                 "onnxruntime...InvalidProtobuf: parse failed\n\nThe above exception...\n"
                 "backends.errors.BackendLoadError: corrupt: cannot load /r/corrupt/1/model.onnx: parse failed\n")
    assert failure_reason(traceback) == "corrupt: cannot load /r/corrupt/1/model.onnx: parse failed"
    assert failure_reason("first\nlast line\n") == "last line"


def test_serve_config_import_paths_build_applications(example_repository: Path) -> None:
    import importlib

    from ray.serve import Application

    for app in repository_serve_config(example_repository)["applications"]:
        module, _, name = app["import_path"].partition(":")
        built = getattr(importlib.import_module(module), name)(app["args"])
        assert isinstance(built, Application), app["name"]
