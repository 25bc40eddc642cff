"""A config-driven ensemble (``platform: "ensemble"``) run as a DAG over its members.

Every step is an asyncio task that waits for the tensors it reads, calls its member and publishes
what it writes; so a step starts as soon as its inputs exist and independent steps run in parallel.
The first failing step cancels the rest and the request fails with that step's error (a 5xx that
names the step and member).
"""

from __future__ import annotations

import asyncio

import numpy as np

from backends.errors import StepFailed
from backends.model_config import EnsembleStep, ModelConfig
from pipelines.base import MemberCalls, Pipeline
from pipelines.graph import EnsembleGraph, build_graph, step_label

__all__ = ["Ensemble"]


class Ensemble(Pipeline):
    """The pipeline an ``ensemble_scheduling`` block describes."""

    def __init__(self, config: ModelConfig, calls: MemberCalls) -> None:
        super().__init__(config, calls)
        self.graph: EnsembleGraph = build_graph(config)

    @classmethod
    def member_names(cls, config: ModelConfig) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.model_name for step in config.ensemble_steps))

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        tensors: dict[str, asyncio.Future] = {}
        for name in self.graph.inputs:
            tensors[name] = loop.create_future()
            tensors[name].set_result(inputs[name])
        for name in self.graph.producer:
            tensors[name] = loop.create_future()
        tasks = [loop.create_task(self._step(index, step, tensors)) for index, step in enumerate(self.graph.steps)]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
        return {name: tensors[name].result() for name in self.graph.outputs}

    async def _step(self, index: int, step: EnsembleStep, tensors: dict[str, asyncio.Future]) -> None:
        member_inputs = {member_input: await tensors[tensor] for member_input, tensor in step.input_map}
        outputs = await self.calls.call(step.model_name, member_inputs,
                                        None if step.model_version == -1 else step.model_version,
                                        step_label(index, step))
        for member_output, tensor in step.output_map:
            if member_output not in outputs:
                raise StepFailed(f"{self.config.name!r} {step_label(index, step)} failed: "
                                 f"{step.model_name!r} returned no output {member_output!r}")
            tensors[tensor].set_result(outputs[member_output])
