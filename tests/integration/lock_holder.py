"""A lock holder in its own process, for tests that kill or freeze it.

Usage: python lock_holder.py CONFIG PATH LOCK_DELAY_SECONDS. It opens a session, takes the
lock on PATH, prints ``held <sequencer hex>`` and then, once a second, whether its session
is alive and its sequencer valid: ``alive <state> <valid>`` or ``gone <error>``.
"""

from __future__ import annotations

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from chubbypy.client import Cell, Session
from chubbypy.config import load_config
from chubbypy.protocol.errors import ChubbyError


async def main(reactor: object, config_path: str, path: str, delay: float) -> None:
    cell = Cell.from_config(reactor, load_config(config_path))  # type: ignore[arg-type]
    session = await Session.open(cell, reactor)  # type: ignore[arg-type]
    handle = await session.open_handle(path, create=True, lock_delay_seconds=delay)
    sequencer = await handle.acquire()
    print(f"held {sequencer.hex()}", flush=True)
    while True:
        await deferLater(reactor, 1.0, lambda: None)  # type: ignore[arg-type]
        try:
            await handle.set_contents(b"still here", sequencer=sequencer)  # fenced
            print(f"alive {session.state.value} True", flush=True)
        except ChubbyError as error:
            print(f"gone {type(error).__name__}", flush=True)
            return


if __name__ == "__main__":
    config, path, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, config, path, delay)))
