"""A small register store: the state machine the simulator replicates.

Its commands are msgpack arrays ``["put", key, value]``; the result of a put is the log
index it was applied at and the value, so the checkers can match every acknowledgement to
its place in the log.
"""

from __future__ import annotations

import hashlib

import msgpack

from chubbypy.protocol import LogIndex


def put_payload(key: str, value: int) -> bytes:
    return bytes(msgpack.packb(["put", key, value], use_bin_type=True))


def is_put(payload: bytes) -> bool:
    """Whether `payload` is a put (and not, in a whole-cell run, a namespace write)."""
    decoded = msgpack.unpackb(payload, raw=False)
    return isinstance(decoded, list) and bool(decoded) and decoded[0] == "put"


def parse_put(payload: bytes) -> tuple[str, int]:
    verb, key, value = msgpack.unpackb(payload, raw=False)
    assert verb == "put", verb
    return str(key), int(value)


def parse_put_result(result: bytes) -> tuple[LogIndex, int]:
    index, value = msgpack.unpackb(result)
    return LogIndex(int(index)), int(value)


class KvMachine:
    """Registers of integers, keyed by name; a `StateMachine`."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def apply(self, index: LogIndex, payload: bytes) -> bytes:
        key, value = parse_put(payload)
        self.values[key] = value
        return bytes(msgpack.packb([index, value]))

    def get(self, key: str) -> int | None:
        return self.values.get(key)

    def snapshot(self) -> bytes:
        return bytes(msgpack.packb(sorted(self.values.items()), use_bin_type=True))

    def restore(self, data: bytes) -> None:
        self.values = {str(k): int(v) for k, v in msgpack.unpackb(data, raw=False)}

    def checksum(self) -> bytes:
        return hashlib.blake2b(self.snapshot(), digest_size=8).digest()
