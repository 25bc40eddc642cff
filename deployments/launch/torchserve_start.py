"""What ``infergrid serve`` takes from TorchServe's start flags: the archives of its model store.

    --model-store DIR --models all|NAME=FILE.mar,...   as ``torchserve --start`` takes them

Each archive is unpacked here, before Ray starts, into a cache folder of the node
(``deployments.repository.mar``): a bad archive refuses the start naming it. The folders are served
as models named one by one (beside any --model-repository), their TorchServe version strings as
version labels.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from backends.errors import ConfigError

__all__ = ["torchserve_models", "mar_cache"]


def mar_cache() -> Path:
    """Where archives are unpacked on this node (``INFERGRID_MAR_CACHE``, else a folder of the temp dir)."""
    return Path(os.environ.get("INFERGRID_MAR_CACHE") or Path(tempfile.gettempdir()) / f"infergrid-mar-{os.getuid()}")


def torchserve_models(args: argparse.Namespace) -> tuple[dict[str, Path], dict, str | None]:
    """(name -> unpacked model folder, name -> ModelOverride with its version label, a problem or None)."""
    if not args.model_store:
        return {}, {}, None
    from deployments.repository.mar import model_store_archives, unpack_mar
    from deployments.repository.tfserving_config import ModelOverride

    store = Path(args.model_store).resolve()
    if not store.is_dir():
        return {}, {}, f"--model-store {store} is not a folder"
    folders, overrides = {}, {}
    try:
        for name, archive in model_store_archives(store, args.models):
            model = unpack_mar(archive, mar_cache(), name)
            if model.name in folders:
                raise ConfigError(f"{archive}: model {model.name!r} is named by two archives")
            folders[model.name] = model.folder
            if model.labels:
                overrides[model.name] = ModelOverride(version_labels=model.labels)
    except ConfigError as exc:
        return {}, {}, str(exc)
    return folders, overrides, None
