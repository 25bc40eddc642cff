"""TF Serving's ``--enable_batching --batching_parameters_file``: its ``BatchingParameters`` onto our
dynamic batching.

``BatchingParameters`` lives in TF Serving's ``session_bundle_config.proto``, which no pip package
ships (``tensorflow-serving-api`` has the ``apis`` and ``config`` protos only). So its message is
described here, field by field as that proto names them (wrapped ``Int64Value``/``StringValue``
fields parse as ``max_batch_size { value: 128 }``, as TF Serving's do), and the text is parsed with
protobuf's text format against it: a misspelt field is an error with its line and column.

Mapping (a model's own ``dynamic_batching`` in config.pbtxt wins over these):

* ``max_batch_size`` -> the largest batch (the model's ``max_batch_size`` when its folder sets none:
  TF Serving batches every input on its first dimension);
* ``batch_timeout_micros`` -> ``max_queue_delay_microseconds``;
* ``allowed_batch_sizes`` -> ``preferred_batch_size`` (TF Serving's rule: increasing, the last equal
  to ``max_batch_size``);
* ``max_enqueued_batches`` -> a queue bound of ``max_enqueued_batches * max_batch_size`` rows, then 503;
* ``num_batch_threads``, ``thread_pool_name``, ``pad_variable_length_inputs`` and the newer
  large-batch-splitting fields: read and ignored (one batch per replica at a time; replicas scale).

Pure: protobuf only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from backends.errors import ConfigError
from backends.model_config import DynamicBatching
from deployments.repository.triton_schema import read_config_text, text_format_error

__all__ = ["TfBatching", "PER_MODEL_FILE", "parse_batching_parameters", "read_batching_parameters",
           "version_batching"]

PER_MODEL_FILE = "batching_params.pbtxt"  # TF Serving's, in a SavedModel's folder

_INT64, _STRING, _BOOL = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", ".google.protobuf.BoolValue"
# (name, number, wrapped type or a scalar's FieldDescriptorProto type, repeated)
_FIELDS = (
    ("max_batch_size", 1, _INT64, False), ("batch_timeout_micros", 2, _INT64, False),
    ("num_batch_threads", 3, _INT64, False), ("max_enqueued_batches", 4, _INT64, False),
    ("allowed_batch_sizes", 6, descriptor_pb2.FieldDescriptorProto.TYPE_INT64, True),
    ("pad_variable_length_inputs", 7, descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, False),
    ("thread_pool_name", 8, _STRING, False), ("enable_large_batch_splitting", 9, _BOOL, False),
    ("max_execution_batch_size", 10, _INT64, False),
)


def _message_class() -> type:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(name="infergrid/tf_batching_parameters.proto",
                                              package="tensorflow.serving", syntax="proto3",
                                              dependency=[wrappers.name])
    message = file.message_type.add(name="BatchingParameters")
    for name, number, kind, repeated in _FIELDS:
        label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated \
            else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        if isinstance(kind, str):
            message.field.add(name=name, number=number, label=label, type_name=kind,
                              type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
        else:
            message.field.add(name=name, number=number, label=label, type=kind)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


_BatchingParameters = _message_class()


@dataclass(frozen=True)
class TfBatching:
    """What a ``BatchingParameters`` file asks for, in our terms."""

    max_batch_size: int
    dynamic_batching: DynamicBatching
    per_model: bool = False  # --enable_per_model_batching_parameters: a SavedModel's batching_params.pbtxt wins

    def triton_fields(self, max_batch_size: int) -> dict:
        """The same batching in Triton's config JSON (what ``GET /v2/models/{m}/config`` reports)."""
        batching = self.dynamic_batching
        block: dict = {"max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
                       "default_queue_policy": {"max_queue_size": batching.max_queue_size}}
        if batching.preferred_batch_size:
            block["preferred_batch_size"] = list(batching.preferred_batch_size)
        return {"max_batch_size": max_batch_size, "dynamic_batching": block}


def _wrapped(message, name: str, default: int) -> int:
    return getattr(message, name).value if message.HasField(name) else default


def parse_batching_parameters(text: str, source: str) -> TfBatching:
    """Parse a ``--batching_parameters_file``'s text (TF Serving's defaults where a field is unset:
    ``max_batch_size`` 1000, ``batch_timeout_micros`` 0, ``max_enqueued_batches`` 1000000).

    Raises:
        ConfigError: not a ``BatchingParameters`` (``<source>:<line>:<column>: ...``), or values TF
            Serving refuses too (sizes below 1, ``allowed_batch_sizes`` not increasing or not
            ending at ``max_batch_size``).
    """
    message = _BatchingParameters()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise text_format_error(exc, source) from None
    max_batch = _wrapped(message, "max_batch_size", 1000)
    timeout_us = _wrapped(message, "batch_timeout_micros", 0)
    enqueued = _wrapped(message, "max_enqueued_batches", 1000000)
    allowed = tuple(int(size) for size in message.allowed_batch_sizes)
    if max_batch < 1:
        raise ConfigError(f"{source}: max_batch_size: must be >= 1, got {max_batch}")
    if timeout_us < 0:
        raise ConfigError(f"{source}: batch_timeout_micros: must be >= 0, got {timeout_us}")
    if enqueued < 1:
        raise ConfigError(f"{source}: max_enqueued_batches: must be >= 1, got {enqueued}")
    if allowed and (list(allowed) != sorted(set(allowed)) or allowed[0] < 1 or allowed[-1] != max_batch):
        raise ConfigError(f"{source}: allowed_batch_sizes: must increase and end at max_batch_size ({max_batch}), "
                          f"got {list(allowed)}")
    queue_rows = min(enqueued * max_batch, 2**31 - 1)
    return TfBatching(max_batch, DynamicBatching(preferred_batch_size=allowed, max_queue_delay_microseconds=timeout_us,
                                                 max_queue_size=queue_rows))


def read_batching_parameters(path: Path) -> TfBatching:
    """Read ``--batching_parameters_file`` (see ``parse_batching_parameters``).

    Raises:
        ConfigError: unreadable or invalid.
    """
    return parse_batching_parameters(read_config_text(path), str(path))


def version_batching(version_dir: Path, default: TfBatching) -> TfBatching:
    """``--enable_per_model_batching_parameters``: the ``batching_params.pbtxt`` in a version's SavedModel
    folder (``<version>/`` as TF Serving lays it out, or ``<version>/model.savedmodel/`` as Triton
    does), else ``default``.

    Raises:
        ConfigError: the file is unreadable or invalid.
    """
    for candidate in (version_dir / PER_MODEL_FILE, version_dir / "model.savedmodel" / PER_MODEL_FILE):
        if candidate.is_file():
            own = read_batching_parameters(candidate)
            return TfBatching(own.max_batch_size, own.dynamic_batching, per_model=True)
    return default
