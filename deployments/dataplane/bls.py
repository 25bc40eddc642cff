"""BLS: a Python model's calls to other served models (``pb_utils.InferenceRequest.exec``).

The model's code runs on the replica's worker thread (or its own loop, for ``async def execute``);
its calls are handed to the replica's event loop, where one ``ModelRouter`` per called model
follows that model's routing table from the repository controller. So a BLS call is batched with
the called model's other requests, counted in its metrics, and follows its hot swaps, like an
ensemble's member call. Routers are made on the first call to each model: a Python model does not
declare what it calls.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future

import numpy as np
from ray import serve

from backends.errors import ModelNotReady
from deployments.dataplane.router import ModelRouter
from deployments.dataplane.table import Watcher, bls_watcher
from deployments.names import CONTROLLER_NAME
from deployments.observability.metrics import Recorder

__all__ = ["BlsCalls", "FIRST_TABLE_WAIT_S"]

FIRST_TABLE_WAIT_S = 30.0  # a router just made waits this long for the called model's first table
logger = logging.getLogger("infergrid")


class BlsCalls:
    """The routers of one replica's BLS calls. Made on the replica's event loop (its first request).

    Args:
        caller: the calling model's name (errors name it).
        recorder: where the calls are counted, as the called model's requests (None: not counted).
    """

    def __init__(self, caller: str, recorder: Recorder | None = None) -> None:
        self._caller, self._recorder = caller, recorder
        self._loop = asyncio.get_running_loop()
        self._routers: dict[str, ModelRouter] = {}
        self._tasks: set[asyncio.Task] = set()
        context = serve.get_replica_context()
        self._watcher: Watcher = bls_watcher(Watcher(context.replica_id.unique_id, context.app_name,
                                                     context.deployment))

    def submit(self, model: str, inputs: dict[str, np.ndarray], version: int | None,
               timeout_s: float | None) -> Future:
        """From any thread: run the call on the replica's loop; the future holds the outputs."""
        return asyncio.run_coroutine_threadsafe(self.call(model, inputs, version, timeout_s), self._loop)

    async def call(self, model: str, inputs: dict[str, np.ndarray], version: int | None = None,
                   timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Outputs of ``model`` (its ``version``, else the newest ready) for ``inputs``.

        Raises:
            ModelNotReady: the model is not served (or not yet, after ``FIRST_TABLE_WAIT_S``), or
                is an ensemble or pipeline (they have no versions to route to).
            ServingError: what the called model answered.
        """
        router = self._routers.get(model) or self._follow(model)
        if not await router.wait_for_table(FIRST_TABLE_WAIT_S) or not router.versions:
            raise ModelNotReady(f"BLS call from {self._caller!r}: model {model!r} is not served (BLS calls "
                                f"reach models with versions, not ensembles or pipelines)")
        return (await router.infer(inputs, version, timeout_s))[1]

    def _follow(self, model: str) -> ModelRouter:
        router = ModelRouter(model, None, self._recorder)
        self._routers[model] = router
        task = self._loop.create_task(router.follow(CONTROLLER_NAME, self._watcher))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info("model %s: BLS calls to %s follow its routing table", self._caller, model)
        return router
