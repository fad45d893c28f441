"""Take a lock in a chubbypy cell, write the file fenced by the sequencer, let go.

Run against `make run`'s cell: .venv/bin/python examples/lock.py [etc/cell.yaml]
"""

from __future__ import annotations

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from chubbypy.client import Cell, Session
from chubbypy.config import load_config


async def main(reactor: object, config_path: str) -> None:
    config = load_config(config_path)
    cell = Cell.from_config(reactor, config)  # type: ignore[arg-type]
    session = await Session.open(cell, reactor)  # type: ignore[arg-type]
    path = f"/ls/{config.cell}/example-lock"
    handle = await session.open_handle(path, create=True)
    sequencer = await handle.acquire()  # waits until this session holds the lock
    await handle.set_contents(b"held by examples/lock.py", sequencer=sequencer)
    print(f"holding {path}; sequencer valid: {await session.check_sequencer(sequencer)}")
    await handle.release()
    print(f"released; sequencer valid: {await session.check_sequencer(sequencer)}")
    await session.close()
    await cell.close()


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "etc/cell.yaml"
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, path)))
