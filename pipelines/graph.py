"""A config-driven ensemble as a checked graph of steps. Pure: no Ray, no frameworks.

Triton's ``ensemble_scheduling`` lists steps; each reads ensemble tensors (``input_map``) and
writes new ones (``output_map``). Checking happens once, when the ensemble loads, so a request
never meets a wiring fault: every member exists, every tensor a step reads is written by exactly
one producer, every member input is fed, every ensemble output is produced, and the steps form no
cycle. The order they run in is not stored: at run time each step starts as soon as the tensors it
reads exist, so independent steps run in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backends.errors import ConfigError
from backends.model_config import EnsembleStep, ModelConfig

__all__ = ["EnsembleGraph", "build_graph", "step_label"]


def step_label(index: int, step: EnsembleStep) -> str:
    """How errors name a step: its position and member, e.g. ``step 1 (credit_score)``."""
    version = "" if step.model_version == -1 else f" version {step.model_version}"
    return f"step {index} ({step.model_name}{version})"


@dataclass(frozen=True)
class EnsembleGraph:
    """A validated ensemble: its steps, and which step writes each intermediate tensor."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[EnsembleStep, ...]
    producer: Mapping[str, int]  # ensemble tensor -> index of the step that writes it

    @property
    def members(self) -> tuple[str, ...]:
        """Member model names, each once, in step order."""
        return tuple(dict.fromkeys(step.model_name for step in self.steps))

    def order(self) -> list[int]:
        """Step indices in an order where every step comes after the steps it reads from."""
        return _topological_order(self)


def _fail(source: str, field: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {field}: {problem}")


def _check_member(source: str, config: ModelConfig, index: int, step: EnsembleStep,
                  member: ModelConfig | None) -> None:
    field = f"ensemble_scheduling.step[{index}]"
    if step.model_name == config.name:
        raise _fail(source, f"{field}.model_name", f"the ensemble {config.name!r} cannot be its own member (cycle)")
    if member is None:
        raise _fail(source, f"{field}.model_name", f"no model {step.model_name!r} in the repository (missing member)")
    if member.composite:
        raise _fail(source, f"{field}.model_name",
                    f"{step.model_name!r} is itself an ensemble or pipeline; members must be models")
    declared_in = {t.name for t in member.inputs}
    declared_out = {t.name for t in member.outputs}
    mapped_in = {k for k, _ in step.input_map}
    if declared_in:
        unknown = sorted(mapped_in - declared_in)
        if unknown:
            raise _fail(source, f"{field}.input_map", f"{step.model_name!r} has no input {unknown[0]!r} "
                        f"(its inputs: {', '.join(sorted(declared_in))})")
        unfed = sorted(declared_in - mapped_in)
        if unfed:
            raise _fail(source, f"{field}.input_map", f"unmapped tensor: input {unfed[0]!r} of "
                        f"{step.model_name!r} is fed by nothing")
    if declared_out:
        unknown = sorted({k for k, _ in step.output_map} - declared_out)
        if unknown:
            raise _fail(source, f"{field}.output_map", f"{step.model_name!r} has no output {unknown[0]!r} "
                        f"(its outputs: {', '.join(sorted(declared_out))})")


def _check_datatypes(source: str, config: ModelConfig, members: Mapping[str, ModelConfig | None]) -> None:
    """Ensemble inputs and outputs must have the datatype of the member tensors they connect to."""
    declared = {t.name: t.datatype for t in (*config.inputs, *config.outputs)}
    for index, step in enumerate(config.ensemble_steps):
        member = members.get(step.model_name)
        if member is None:
            continue
        member_types = {t.name: t.datatype for t in (*member.inputs, *member.outputs)}
        for member_tensor, tensor in (*step.input_map, *step.output_map):
            ours, theirs = declared.get(tensor), member_types.get(member_tensor)
            if ours and theirs and ours != theirs:
                raise _fail(source, f"ensemble_scheduling.step[{index}]",
                            f"tensor {tensor!r} is {ours} in the ensemble but {step.model_name!r}.{member_tensor} "
                            f"is {theirs}")


def build_graph(config: ModelConfig, members: Mapping[str, ModelConfig | None] | None = None,
                source: str | None = None) -> EnsembleGraph:
    """Check an ensemble config and return its graph.

    Args:
        config: the ensemble's config (``platform: "ensemble"``).
        members: each member's config by model name (None: not in the repository). Leave out to
            check only the wiring inside the ensemble (replicas do; the controller checked members).
        source: the file named in errors (default ``<name>/config.pbtxt``).

    Raises:
        ConfigError: a missing member, a cycle, an unmapped or twice-written tensor; the message
            names the file and the field.
    """
    source = source or f"{config.name}/config.pbtxt"
    if not config.ensemble_steps:
        raise _fail(source, "ensemble_scheduling", "an ensemble needs at least one step")
    if not config.inputs or not config.outputs:
        raise _fail(source, "input" if not config.inputs else "output",
                    "an ensemble declares its inputs and outputs (they are its signature)")
    for index, step in enumerate(config.ensemble_steps):
        if members is not None:
            _check_member(source, config, index, step, members.get(step.model_name))
        elif step.model_name == config.name:
            raise _fail(source, f"ensemble_scheduling.step[{index}].model_name", "an ensemble cannot be its own member")
    inputs = tuple(t.name for t in config.inputs)
    producer = _producers(source, config, inputs)
    _check_reads(source, config, inputs, producer)
    if members is not None:
        _check_datatypes(source, config, members)
    graph = EnsembleGraph(config.name, inputs, tuple(t.name for t in config.outputs), config.ensemble_steps, producer)
    graph.order()  # raises on a cycle
    return graph


def _producers(source: str, config: ModelConfig, inputs: tuple[str, ...]) -> dict[str, int]:
    """Ensemble tensor -> the one step that writes it."""
    producer: dict[str, int] = {}
    for index, step in enumerate(config.ensemble_steps):
        field = f"ensemble_scheduling.step[{index}].output_map"
        if not step.output_map:
            raise _fail(source, field, "a step must write at least one tensor")
        for _, tensor in step.output_map:
            if tensor in inputs:
                raise _fail(source, field, f"{tensor!r} is an ensemble input; a step cannot overwrite it")
            if tensor in producer:
                raise _fail(source, field, f"tensor {tensor!r} is already written by step {producer[tensor]}")
            producer[tensor] = index
    return producer


def _check_reads(source: str, config: ModelConfig, inputs: tuple[str, ...], producer: Mapping[str, int]) -> None:
    """Every tensor read exists, every ensemble output is written, every ensemble input is read."""
    read = set()
    for index, step in enumerate(config.ensemble_steps):
        for _, tensor in step.input_map:
            read.add(tensor)
            if tensor not in inputs and tensor not in producer:
                raise _fail(source, f"ensemble_scheduling.step[{index}].input_map",
                            f"unmapped tensor: {tensor!r} is neither an ensemble input nor written by any step")
    for output in config.outputs:
        if output.name not in producer:
            raise _fail(source, "output", f"unmapped tensor: ensemble output {output.name!r} is written by no step")
    for name in inputs:
        if name not in read:
            raise _fail(source, "input", f"unmapped tensor: ensemble input {name!r} is read by no step")


def _topological_order(graph: EnsembleGraph) -> list[int]:
    needs = {index: {graph.producer[t] for _, t in step.input_map if t in graph.producer}
             for index, step in enumerate(graph.steps)}
    order: list[int] = []
    done: set[int] = set()
    while len(order) < len(needs):
        ready = [i for i in needs if i not in done and needs[i] <= done]
        if not ready:
            stuck = [i for i in needs if i not in done]
            path = " -> ".join(step_label(i, graph.steps[i]) for i in _cycle(needs, stuck))
            raise ConfigError(f"{graph.name}/config.pbtxt: ensemble_scheduling: the steps form a cycle: {path}")
        for i in ready:
            done.add(i)
            order.append(i)
    return order


def _cycle(needs: Mapping[int, set[int]], stuck: list[int]) -> list[int]:
    """Follow "reads from" links between stuck steps until one repeats: that loop is the cycle."""
    pending = set(stuck)
    seen: list[int] = []
    current = stuck[0]
    while current not in seen:
        seen.append(current)
        current = min(needs[current] & pending)  # a stuck step always waits on another stuck step
    loop = seen[seen.index(current):]
    return [*loop, loop[0]]
