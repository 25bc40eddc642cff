"""The controller's side of TorchServe's management API: register, scale, set the default, unregister,
describe and list, over the controller's ``TorchServeRegistry``. Mixed into ``RepositoryController``
(the actor's methods must be its class's).

Each change lays the registry's view of the model (``TsModel.override``) over its cache folder in the
repository roots and reconciles it like any other model: a new version is deployed beside the serving
ones and published once it answers; a moved default is a label moved in the front door's table; a
dropped version goes after the front doors acked the table without it; workers are replicas, resized in
place. So none of these calls fails a request to a version that stays.
"""

from __future__ import annotations

import logging

from backends.errors import BackendLoadError, RepositoryError
from deployments.control.state import READY
from deployments.repository.ts_registry import RegisterParams, TorchServeRegistry, TsModel, TsVersion

__all__ = ["TorchServeCalls", "JOB_QUEUE_SIZE"]

logger = logging.getLogger("infergrid")

JOB_QUEUE_SIZE = 100  # TorchServe's job_queue_size default, reported as the queue's capacity


class TorchServeCalls:
    """TorchServe's management calls (``deployments.ingress.torchserve_management`` is the HTTP side)."""

    _ts: TorchServeRegistry | None

    def _registry(self) -> TorchServeRegistry:
        if self._ts is None:
            raise RepositoryError("TorchServe's management API needs a model store (--model-store or model_store "
                                  "in --ts-config)")
        return self._ts

    def _apply(self, model_name: str, model: TsModel | None) -> None:
        """Serve the registry's view of ``model_name`` (None: it is registered no more)."""
        self._roots.place(model_name, model.folder if model else None, model.override if model else None)
        if model is not None:
            self._models.know(model_name, wanted=True)

    async def _settle(self, model_name: str, synchronous: bool) -> None:
        if synchronous:
            await self._models.reconcile_locked(model_name)
        else:
            self._kick(model_name)

    async def ts_register(self, url: str, model_name: str | None, params: RegisterParams,
                          synchronous: bool) -> tuple[str, str, int]:
        """Register the store's archive ``url`` (as ``model_name``; default its ``modelName``); returns
        (name, TorchServe version, workers). Synchronous: once it serves, else refused and dropped.

        Raises:
            InvalidRequest / ModelNotFound: a bad url. ConfigError: a bad archive. Conflict: registered.
            BackendLoadError: synchronous, and the version failed to load (it is not registered).
        """
        await self._started.wait()
        registry = self._registry()
        model, added = registry.register(registry.archive(url), url, model_name, params)
        self._models.tracker_moved_in(model.folder / str(added.version))  # unpacked whole: no settling wait
        self._apply(model.name, model)
        self._models.forget_failures(model.name)  # registering again retries a version that failed
        logger.info("TorchServe: registered %s version %s (%s) from %s", model.name, added.model_version,
                    added.version, url)
        await self._settle(model.name, synchronous)
        if synchronous and added.version not in self._models.states[model.name].served:
            failure = self._models.states[model.name].failed.get(added.version)
            reason = failure.reason if failure is not None else "it did not load"
            self._apply(model.name, registry.unregister(model.name, added.model_version))
            await self._models.reconcile_locked(model.name)
            raise BackendLoadError(f"Failed to load model {model.name} version {added.model_version}: {reason}")
        return model.name, added.model_version, model.workers

    async def ts_unregister(self, model_name: str, model_version: str | None) -> None:
        """Drop a version (None: the default); once the last goes, the model goes.

        Raises:
            ModelNotFound: no such model or version. InvalidRequest: the default while others remain.
        """
        await self._started.wait()
        self._apply(model_name, self._registry().unregister(model_name, model_version))
        await self._models.reconcile_locked(model_name)

    async def ts_set_default(self, model_name: str, model_version: str) -> None:
        """Unversioned requests go to ``model_version`` from the next published table on.

        Raises:
            ModelNotFound: no such model or version.
        """
        await self._started.wait()
        self._apply(model_name, self._registry().set_default(model_name, model_version))
        await self._models.reconcile_locked(model_name)
        await self._front_doors_applied()

    async def ts_scale(self, model_name: str, min_workers: int | None, max_workers: int | None,
                       synchronous: bool) -> int:
        """Workers (replicas of each version) of a model; returns the count now asked for.

        Raises:
            ModelNotFound: no such model. InvalidRequest: a bad count.
        """
        await self._started.wait()
        model = self._registry().scale(model_name, min_workers, max_workers)
        self._apply(model_name, model)
        await self._settle(model_name, synchronous)
        return model.workers

    async def ts_list(self) -> list[tuple[str, str]]:
        """Every registered model with its default version's url, by name."""
        registry = self._registry()
        return [(name, registry.models[name].find(None).url) for name in sorted(registry.models)]

    async def ts_describe(self, model_name: str, model_version: str | None) -> list[dict]:
        """TorchServe's describe JSON of one version (None: the default; ``all``: every version).

        Raises:
            ModelNotFound: no such model or version.
        """
        model = self._registry().get(model_name)
        chosen = model.versions if model_version == "all" else (model.find(model_version),)
        state = self._models.states.get(model_name)
        apps = [app for app in state.apps.values() if app.state == READY] if state is not None else []
        served = state.served if state is not None else []
        return [_description(model, item, next((a for a in apps if a.version == item.version), None),
                             item.version in served) for item in chosen]


def _description(model: TsModel, item: TsVersion, app, serving: bool) -> dict:
    """One version as TorchServe's ``DescribeModelResponse`` has it; a worker per running replica."""
    replicas = app.replicas if app is not None and serving else 0
    workers = [{"id": f"{app.app}#{index}", "startTime": "", "status": "READY", "memoryUsage": 0, "pid": -1,
                "gpu": item.settings.device_type == "gpu", "gpuUsage": "N/A"} for index in range(replicas)]
    return {"modelName": model.name, "modelVersion": item.model_version, "modelUrl": item.url,
            "runtime": "python", "minWorkers": model.workers, "maxWorkers": model.max_workers,
            "batchSize": item.settings.batch_size, "maxBatchDelay": item.settings.max_batch_delay_ms,
            "responseTimeout": item.settings.response_timeout_s, "loadedAtStartup": item.at_startup,
            "isDefault": item.version == model.default, "workers": workers,
            "jobQueueStatus": {"remainingCapacity": item.settings.job_queue_size or JOB_QUEUE_SIZE,
                               "pendingRequests": 0}}
