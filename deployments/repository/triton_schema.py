"""Triton's ``ModelConfig`` protobuf, from the ``model_config_pb2`` that ships in ``tritonclient``.

Why the schema and not our own reader: Triton itself parses ``config.pbtxt`` with protobuf's text
format against this message, so a misspelt field, a wrong type or an unknown enum value is an error
with a line and column, and the JSON form of a config (the load API's ``parameters.config``,
``GET /v2/models/{m}/config``) is protobuf's JSON mapping of the same message. Parsing against the
same schema gives the same errors and accepts exactly what Triton accepts (camelCase JSON included).

Here: parse (text or JSON) into the message, turn a message into the plain ``{field: [values]}``
form that ``deployments.repository.config`` validates, and render a message as Triton's HTTP API
writes it. No validation of meaning here; that is ``config``'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2

from backends.errors import ConfigError

__all__ = ["TextMessage", "parse_text", "text_format_error", "read_config_text", "parse_json", "from_dict", "to_dict", "to_fields", "to_triton_json"]

# Every field maps to a list of values (one for a singular field); nested messages are dicts of the
# same form; enums are their value names; maps are lists of ``{"key": [k], "value": [v]}`` entries.
TextMessage = dict[str, list[Any]]

_INT64_TYPES = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64})


def parse_text(text: str, source: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt's text as Triton does.

    Raises:
        ConfigError: not valid text format for ``ModelConfig``; the message starts
            ``<source>:<line>:<column>:`` and names the field.
    """
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise text_format_error(exc, source) from None


def text_format_error(exc: text_format.ParseError, source: str) -> ConfigError:
    """A protobuf text-format error as ``<source>:<line>:<column>: <problem>``."""
    line, column = exc.GetLine(), exc.GetColumn()
    problem = str(exc)
    if line is not None and problem.startswith(f"{line}:{column} : "):
        problem = problem[len(f"{line}:{column} : "):]
    where = f"{source}:{line}:{column}" if line is not None else source
    return ConfigError(f"{where}: {problem}")


def read_config_text(path: Path) -> str:
    """A config file's text (UTF-8).

    Raises:
        ConfigError: ``<path>: cannot read: <why>``.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def parse_json(text: str, source: str) -> model_config_pb2.ModelConfig:
    """Parse a config in protobuf's JSON mapping (camelCase or the proto's own snake_case names).

    Raises:
        ConfigError: not JSON, not an object, or not a ``ModelConfig``; the message names the field.
    """
    try:
        return json_format.Parse(text, model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise ConfigError(f"{source}: {_first_line(exc)}") from None


def from_dict(data: dict, source: str) -> model_config_pb2.ModelConfig:
    """Like ``parse_json`` for an already decoded JSON object."""
    try:
        return json_format.ParseDict(data, model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise ConfigError(f"{source}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    """protobuf's JSON errors append the list of every field of the message; the first line says it."""
    return str(exc).split("\n", 1)[0].strip()


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_fields(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        described = field.enum_type.values_by_number.get(value)
        return described.name if described is not None else value
    return value


def to_fields(message: Message) -> TextMessage:
    """The fields set in ``message``, in the ``{field: [values]}`` form."""
    fields: TextMessage = {}
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            fields[field.name] = [{"key": [_value(key_field, k)], "value": [_value(value_field, value[k])]}
                                  for k in value]
        elif field.is_repeated:
            fields[field.name] = [_value(field, item) for item in value]
        else:
            fields[field.name] = [_value(field, value)]
    return fields


def _int64_as_numbers(message: Message, rendered: dict) -> dict:
    """protobuf's JSON writes 64-bit integers as strings; Triton's server writes them as numbers."""
    for field in message.DESCRIPTOR.fields:
        name = field.name
        if name not in rendered:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            value = getattr(message, name)
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for key, item in rendered[name].items():
                        _int64_as_numbers(value[key], item)
                elif value_field.type in _INT64_TYPES:
                    rendered[name] = {k: int(v) for k, v in rendered[name].items()}
            elif field.is_repeated:
                for item, out in zip(value, rendered[name]):
                    _int64_as_numbers(item, out)
            else:
                _int64_as_numbers(value, rendered[name])
        elif field.type in _INT64_TYPES:
            item = rendered[name]
            rendered[name] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return rendered


def to_dict(message: Message) -> dict:
    """The fields set in ``message`` as Triton's JSON: the proto's names, 64-bit integers as numbers
    (what ``from_dict`` reads, and what a Python model's ``initialize`` gets)."""
    return _int64_as_numbers(message, json_format.MessageToDict(message, preserving_proto_field_name=True))


def to_triton_json(message: Message) -> dict:
    """``message`` as Triton's ``GET /v2/models/{m}/config`` writes it: the proto's field names,
    every field including defaults, 64-bit integers as numbers."""
    rendered = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    return _int64_as_numbers(message, rendered)
