"""The controller's calls for models named one by one rather than found in a repository folder:
TF Serving's config reload and version labels. Mixed into ``RepositoryController`` (the actor's
methods must be its class's), over its roots, reconciler and start event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from backends.errors import ModelNotFound, RepositoryError
from deployments.repository.tfserving_config import ModelOverride, parse_reload_config, served_labels
from deployments.repository.ts_registry import DEFAULT_LABEL

__all__ = ["NamedModelCalls"]

logger = logging.getLogger("infergrid")


class NamedModelCalls:
    """TF Serving's reload and the version-label calls of the repository API."""

    async def reload_model_config(self, config: bytes) -> None:
        """TF Serving's ``ModelService.HandleReloadConfigRequest``: serve the models of this serialized
        ``ModelServerConfig`` (with its policies and labels) in place of those named one by one so far
        (models of ``--model-repository`` folders stay); returns once each has loaded or failed.

        Raises:
            ConfigError: an invalid config, or a ``base_path`` that is no folder: nothing changes.
            RepositoryError: explicit mode; or the config was applied and a model in it could not load.
        """
        if self._mode == "explicit":
            raise RepositoryError("a config reload is not allowed with --model-control-mode=explicit "
                                  "(use the repository load and unload API)")
        await self._started.wait()
        models = parse_reload_config(config, "ReloadConfigRequest.config")
        for folder in models.folders.values():  # the caller says they are ready: no settling wait
            for version_dir in folder.iterdir():
                if version_dir.is_dir() and version_dir.name.isdigit():
                    self._models.tracker_moved_in(version_dir)
        before = set(self._roots.named)
        self._roots.rename(models.folders, models.overrides)
        logger.info("config reloaded: now %s", ", ".join(sorted(models.folders)) or "no models named")
        names = before | set(models.folders)
        await asyncio.gather(*(self._models.reconcile_locked(name) for name in names))
        statuses = await self.models()
        failed = {name: statuses[name].reason for name in models.folders
                  if name in statuses and statuses[name].reason}
        if failed:
            raise RepositoryError("config reloaded; could not load " +
                                  "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items())))

    async def version_labels(self, name: str) -> dict[str, int]:
        """The model's version labels now (TF Serving's ``stable`` -> 3).

        Raises:
            ModelNotFound: no such model.
        """
        await self._started.wait()
        if name not in self._models.states:
            raise ModelNotFound(f"unknown model {name!r}")
        override = self._roots.overrides.get(name)
        labels = override.version_labels if override is not None else ()
        return {label: version for label, version in labels if label != DEFAULT_LABEL}

    async def set_version_labels(self, name: str, labels: dict) -> dict[str, int]:
        """Replace the model's version labels (our repository API's ``PUT .../labels``); each must name a
        version that serves, as TF Serving requires. They move with no reload and no failed request:
        the front door takes the new mapping once published. Returns the labels now.

        Raises:
            ModelNotFound: no such model, or it serves no version.
            ConfigError: a bad label, or one naming a version that does not serve (nothing changes).
        """
        await self._started.wait()
        state = self._models.states.get(name)
        if state is None or not state.served:
            raise ModelNotFound(f"model {name!r} serves no version to label")
        checked = served_labels(labels, state.served, f"{name} labels request")
        current = self._roots.overrides.get(name) or ModelOverride()
        default = tuple(item for item in current.version_labels if item[0] == DEFAULT_LABEL)  # TorchServe's
        self._roots.overrides[name] = replace(current, version_labels=tuple(sorted(checked + default)))
        await self._models.reconcile_locked(name)
        await self._front_doors_applied()
        logger.info("model %s: version labels now %s", name, dict(checked) or "none")
        return dict(checked)
