"""A reader for protobuf text format, enough for Triton's config.pbtxt.

Why our own: the only schema-aware parser would need Triton's compiled ``model_config.proto`` at
run time, and it rejects the fields we want to warn about instead. This reads any well-formed text
message into plain data: every field maps to a *list* of values (text format has no other way to
tell a repeated field), nested messages are dicts, ``[a, b]`` lists are flattened into the field.
"""

from __future__ import annotations

import re
from typing import Any

from backends.errors import ConfigError

__all__ = ["parse_text_message", "TextMessage"]

TextMessage = dict[str, list[Any]]

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}\[\]<>:,;])
    """,
    re.VERBOSE,
)
_CLOSE = {"{": "}", "<": ">"}


class _Tokens:
    """A cursor over (kind, text, line) tokens."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.items: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise ConfigError(f"{source}:{line}: unexpected character {text[pos]!r}")
            kind = match.lastgroup or ""
            if kind != "ws":
                self.items.append((kind, match.group(), line))
            line += match.group().count("\n")
            pos = match.end()
        self.index = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise ConfigError(f"{self.source}: unexpected end of file")
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        kind, got, line = self.take()
        if got != text:
            raise ConfigError(f"{self.source}:{line}: expected {text!r}, found {got!r}")

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == text and token[0] == "punct":
            self.index += 1
            return True
        return False


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _number(text: str) -> int | float:
    text = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    try:
        return int(text, 0)
    except ValueError:
        return float(text)


def _scalar(tokens: _Tokens) -> Any:
    kind, text, line = tokens.take()
    if kind == "string":
        value = _unquote(text)
        while (nxt := tokens.peek()) is not None and nxt[0] == "string":
            value += _unquote(tokens.take()[1])
        return value
    if kind == "number":
        return _number(text)
    if kind == "ident":
        return {"true": True, "false": False}.get(text, text)
    raise ConfigError(f"{tokens.source}:{line}: expected a value, found {text!r}")


def _value(tokens: _Tokens) -> Any:
    token = tokens.peek()
    if token is not None and token[1] in _CLOSE and token[0] == "punct":
        opener = tokens.take()[1]
        return _message(tokens, _CLOSE[opener])
    return _scalar(tokens)


def _field_values(tokens: _Tokens) -> list[Any]:
    if tokens.accept("["):
        values: list[Any] = []
        while not tokens.accept("]"):
            values.append(_value(tokens))
            tokens.accept(",")
        return values
    return [_value(tokens)]


def _message(tokens: _Tokens, closer: str | None) -> TextMessage:
    fields: TextMessage = {}
    while True:
        token = tokens.peek()
        if token is None:
            if closer is not None:
                raise ConfigError(f"{tokens.source}: missing {closer!r} at end of file")
            return fields
        if token[0] == "punct" and token[1] == closer:
            tokens.take()
            return fields
        kind, name, line = tokens.take()
        if kind != "ident":
            raise ConfigError(f"{tokens.source}:{line}: expected a field name, found {name!r}")
        tokens.accept(":")
        fields.setdefault(name, []).extend(_field_values(tokens))
        tokens.accept(",") or tokens.accept(";")


def parse_text_message(text: str, source: str = "config.pbtxt") -> TextMessage:
    """Parse protobuf text format into ``{field: [values...]}``.

    Args:
        text: the file's contents.
        source: the file name used in error messages.

    Raises:
        ConfigError: the text is not well-formed; the message names the file and line.
    """
    return _message(_Tokens(text, source), None)
