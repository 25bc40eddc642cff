"""TorchServe archives for the tests, made by the real ``torch-model-archiver`` from the handlers in
``ts_handlers`` (a TorchScript MLP built deterministically here; nothing downloaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HANDLERS = Path(__file__).parent / "ts_handlers"
FEATURES = 16


def mlp_module():
    """The MLP the ``mlp`` archive serves (seeded: the same weights every run)."""
    import torch

    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1),
                               torch.nn.Sigmoid()).eval()


def archive(store: Path, name: str, handler: str, version: str = "1.0", serialized: Path | None = None,
            config_yaml: str | None = None, extra: list[str] | None = None, requirements: Path | None = None,
            file_name: str | None = None) -> Path:
    """``torch-model-archiver`` run as users run it; returns the ``.mar`` in ``store`` (renamed
    ``file_name`` when given: the archiver always names it after the model)."""
    store.mkdir(parents=True, exist_ok=True)
    work = store.parent / f"{name}-{version}-src"
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name, "--version", version,
               "--handler", str(HANDLERS / handler) if handler.endswith(".py") else handler,
               "--export-path", str(store), "--force"]
    if serialized is not None:
        command += ["--serialized-file", str(serialized)]
    if config_yaml is not None:
        (work / "model-config.yaml").write_text(config_yaml)
        command += ["--config-file", str(work / "model-config.yaml")]
    if extra:
        command += ["--extra-files", ",".join(extra)]
    if requirements is not None:
        command += ["--requirements-file", str(requirements)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    made = store / f"{name}.mar"
    return made.rename(store / file_name) if file_name else made


def model_store(root: Path) -> Path:
    """A model store with the three archives: ``mlp`` (BaseHandler over TorchScript, batches of up to
    4), ``echo`` (a handle() module, failing some requests) and ``image`` (raw image bytes)."""
    import torch

    store = root / "model_store"
    root.mkdir(parents=True, exist_ok=True)
    scripted = root / "mlp.pt"
    torch.jit.script(mlp_module()).save(str(scripted))
    archive(store, "mlp", "mlp_handler.py", "1.0", scripted, "batchSize: 4\nmaxBatchDelay: 200\nminWorkers: 1\n")
    archive(store, "echo", "echo_handle.py", "2", config_yaml="batchSize: 8\nmaxBatchDelay: 100\n")
    archive(store, "image", "image_handle.py", "1.0")
    return store


def versioned_store(root: Path) -> Path:
    """A model store with two versions of ``swap`` (``swap-1.mar`` "1.0", ``swap-2.mar`` "2.0"), each
    answering with its version, for registration and set-default under load."""
    store = root / "versioned_store"
    for version in ("1.0", "2.0"):
        archive(store, "swap", "version_handle.py", version, config_yaml="batchSize: 4\nmaxBatchDelay: 5\n",
                file_name=f"swap-{version[0]}.mar")
    return store
