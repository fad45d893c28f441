"""msgpack plumbing shared by every codec: pack, unpack, and validators for plain data.

Decoding validates as it goes and raises `DecodeError`, and nothing else, for bytes that are
not what a codec wrote: peers, clients and stores may hand a codec anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")


class DecodeError(ValueError):
    """Bytes that do not decode to a well-formed value."""


def pack(data: object) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


def unpack(
    data: bytes, parse: Callable[[Any], T], containers_max: int | None = None, named: str = ""
) -> T:
    """Decode msgpack `data` and validate it with `parse`; only DecodeError escapes.

    With `containers_max`, decoding stops at the array or map past it (a refusal naming the
    limit as `named`): each costs msgpack about a microsecond, and a 1 MiB body of empty
    arrays holds a million of them.
    """
    hooks = {} if containers_max is None else _counted(containers_max, named)
    try:
        plain = msgpack.unpackb(data, raw=False, strict_map_key=True, **hooks)
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as error:
        detail = f": {error}" if str(error) else ""
        raise DecodeError(f"not msgpack: {type(error).__name__}{detail}") from error
    except RecursionError as error:
        raise DecodeError("nested too deeply") from error
    try:
        return parse(plain)
    except RecursionError as error:
        raise DecodeError("nested too deeply") from error


def _counted(containers_max: int, named: str) -> dict[str, Callable[[Any], Any]]:
    """msgpack hooks that count the arrays and maps decoded, and stop past the limit."""
    decoded = 0

    def count(container: Any) -> Any:
        nonlocal decoded
        decoded += 1
        if decoded > containers_max:
            limit = f" ({named})" if named else ""
            raise DecodeError(f"more than {containers_max} arrays and maps in one message{limit}")
        return container

    return {"list_hook": count, "object_hook": count}


def integer(data: Any, low: int = 0) -> int:
    if type(data) is not int or data < low:
        raise DecodeError(f"expected an integer >= {low}, got {data!r:.40}")
    return data


INT64_MAX = (1 << 63) - 1


def uint64(data: Any, low: int = 0) -> int:
    """An integer from `low` to INT64_MAX: what the wire's ids and counters may be."""
    value = integer(data, low)
    if value > INT64_MAX:
        raise DecodeError(f"integer {value} is above the limit of {INT64_MAX}")
    return value


def bounded(data: Any, low: int, high: int, what: str) -> int:
    """An integer from `low` to `high`; DecodeError, naming `what`, for anything else."""
    value = integer(data, low)
    if value > high:
        raise DecodeError(f"{what} {value} is above the limit of {high}")
    return value


def optional_integer(data: Any, low: int = 0) -> int | None:
    return None if data is None else integer(data, low)


def boolean(data: Any) -> bool:
    if type(data) is not bool:
        raise DecodeError(f"expected a boolean, got {data!r:.40}")
    return data


def binary(data: Any) -> bytes:
    if type(data) is not bytes:
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    return data


def text(data: Any) -> str:
    if type(data) is not str:
        raise DecodeError(f"expected a string, got {type(data).__name__}")
    return data


def optional_text(data: Any) -> str | None:
    return None if data is None else text(data)


def array(data: Any, length: int | None = None) -> list[Any]:
    if type(data) is not list or (length is not None and len(data) != length):
        raise DecodeError(f"expected a list of {length or 'any'} items, got {data!r:.40}")
    return data


def tagged(data: Any, table: dict[int, tuple[int, Callable[[list[Any]], T]]], what: str) -> T:
    """Decode ``[tag, field, ...]`` with the builder `table` gives for `tag` and its arity."""
    fields = array(data)
    if not fields:
        raise DecodeError(f"empty {what}")
    tag = fields[0]
    if type(tag) is not int or tag not in table:
        raise DecodeError(f"unknown {what} tag {tag!r:.20}")
    arity, build = table[tag]
    if len(fields) != arity + 1:
        raise DecodeError(f"{what} tag {tag} needs {arity} fields, got {len(fields) - 1}")
    return build(fields[1:])
