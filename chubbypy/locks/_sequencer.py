"""Sequencers: fencing tokens for locks (Chubby §2.4). Pure: a value and its bytes.

A sequencer is an opaque byte string describing a lock right after it was acquired: the
cell, the node's name and instance, the mode, and the lock generation. A lock holder gets
one (`GetSequencer`) and passes it to the servers it talks to; they ask the cell whether it
is still valid (`CheckSequencer`, or a handle with `SetSequencer`), or keep the highest
generation they have seen. It is valid while the node of that instance exists, its lock is
held in that mode, and its lock generation is unchanged: the generation rises on every
free-to-held transition, so any later holder makes every earlier sequencer invalid.

The node *instance* is in it so that a deleted and re-created node (whose generations start
again) never validates an old sequencer; the cell is in it so that one cell never accepts
another's. Nothing in it is secret, so it carries no MAC: validity is always decided by
looking at the cell's state, never by trusting the bytes.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from chubbypy.protocol._plain import DecodeError, array, integer, pack, text, unpack
from chubbypy.protocol.namespace import LockMode
from chubbypy.protocol.session import SEQUENCER_BYTES_MAX

SEQUENCER_FORMAT = 1


@frozen
class Sequencer:
    """A lock's identity at one acquisition; see the module docstring."""

    cell: str
    path: str
    instance: int
    mode: LockMode
    lock_generation: int

    def encode(self) -> bytes:
        return pack(
            [
                SEQUENCER_FORMAT,
                self.cell,
                self.path,
                self.instance,
                int(self.mode),
                self.lock_generation,
            ]
        )


def decode_sequencer(data: bytes) -> Sequencer:
    """The sequencer `data` encodes; DecodeError for bytes `Sequencer.encode` did not write."""
    if len(data) > SEQUENCER_BYTES_MAX:
        raise DecodeError(f"a sequencer of {len(data)} bytes (at most {SEQUENCER_BYTES_MAX})")
    return unpack(data, _from_plain)


def _from_plain(data: Any) -> Sequencer:
    version, cell, path, instance, mode, generation = array(data, 6)
    if type(version) is not int or version != SEQUENCER_FORMAT:
        raise DecodeError(f"unknown sequencer format {version!r:.20}")
    try:
        lock_mode = LockMode(integer(mode))
    except ValueError:
        raise DecodeError(f"unknown lock mode {mode!r:.20}") from None
    return Sequencer(text(cell), text(path), integer(instance), lock_mode, integer(generation))
