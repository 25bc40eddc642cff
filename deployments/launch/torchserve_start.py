"""What ``infergrid serve`` takes from TorchServe's start: the archives of its model store.

    --model-store DIR --models all|NAME=FILE.mar,...   as ``torchserve --start`` takes them
    --ts-config config.properties                      the same, and more, from TorchServe's file

Each archive is registered here, before Ray starts, in a ``TorchServeRegistry``
(``deployments.repository.ts_registry``), which unpacks it into a cache folder of the node
(``deployments.repository.mar``): a bad archive refuses the start naming it. Several archives of one
name are its versions (the first, or the one ``models`` marks ``defaultVersion``, the default). The
registry goes to the controller, whose management API (``--ts-management-port``) changes it later.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from backends.errors import ConfigError

__all__ = ["torchserve_models", "mar_cache", "startup_params"]


def mar_cache() -> Path:
    """Where archives are unpacked on this node (``INFERGRID_MAR_CACHE``, else a folder of the temp dir)."""
    return Path(os.environ.get("INFERGRID_MAR_CACHE") or Path(tempfile.gettempdir()) / f"infergrid-mar-{os.getuid()}")


def startup_params(models_json: dict, name: str, model_version: str, where: str = "config.properties models"):
    """(RegisterParams, is the default) for an archive loaded at start, from ``models``' JSON entry of
    its name and version (TorchServe's ``minWorkers``, ``maxWorkers``, ``batchSize``, ``maxBatchDelay``,
    ``responseTimeout``, ``defaultVersion``).

    Raises:
        ConfigError: a setting of the wrong type; names it.
    """
    from deployments.repository.mar import whole_numbers
    from deployments.repository.ts_registry import RegisterParams

    entry = (models_json.get(name) or {}).get(model_version) or {}
    values = whole_numbers(entry, (("minWorkers", "initial_workers", 1), ("maxWorkers", "max_workers", 1),
                                   ("batchSize", "batch_size", 1), ("maxBatchDelay", "max_batch_delay_ms", 0),
                                   ("responseTimeout", "response_timeout_s", 1)), f"{where}: {name} {model_version}")
    return RegisterParams(**values), entry.get("defaultVersion") is True


def torchserve_models(args: argparse.Namespace) -> tuple[dict[str, Path], dict, object, str | None]:
    """(name -> model folder, name -> ModelOverride, the registry (None: no model store), a problem or None)."""
    if not args.model_store:
        return {}, {}, None, None
    from deployments.repository.mar import model_store_archives, read_manifest
    from deployments.repository.ts_registry import TorchServeRegistry

    store = Path(args.model_store).resolve()
    if not store.is_dir():
        return {}, {}, None, f"--model-store {store} is not a folder"
    registry = TorchServeRegistry(store, mar_cache(), getattr(args, "ts_default_workers", 1),
                                  getattr(args, "ts_job_queue_size", 0))
    models_json = getattr(args, "ts_models_json", {}) or {}
    try:
        for name, archive in model_store_archives(store, args.models):
            manifest = read_manifest(archive)
            model_name = name or manifest["modelName"]
            params, default = startup_params(models_json, model_name, str(manifest.get("modelVersion") or "1"))
            url = str(archive.relative_to(store)) if store in archive.resolve().parents else str(archive)
            model, added = registry.register(archive, url, name, params, at_startup=True)
            if default:
                registry.set_default(model.name, added.model_version)
    except ConfigError as exc:
        return {}, {}, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a conflict or bad name in the store refuses the start, named
        return {}, {}, None, f"--model-store {store}: {exc}"
    folders = {name: model.folder for name, model in registry.models.items()}
    overrides = {name: model.override for name, model in registry.models.items()}
    return folders, overrides, registry, None
