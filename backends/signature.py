"""What a model takes and returns: names, v2 datatypes and shapes (``-1`` = any size).

Shapes here are full shapes, batch dimension included: for a model with ``max_batch_size > 0`` the
first dimension is ``-1``, as Triton reports in ``GET /v2/models/{m}``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TensorSpec", "ModelSignature"]


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output tensor."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_metadata(self) -> dict:
        """The v2 ``$metadata_tensor`` object."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """Inputs and outputs of one model version, in declaration order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        """The input called ``name``, or None."""
        return next((spec for spec in self.inputs if spec.name == name), None)
