"""An election candidate in its own process, for tests that freeze or kill it.

Usage: python candidate.py CONFIG PATH IDENTITY LOCK_DELAY_SECONDS. It campaigns through the
blocking client's `Election` and prints ``elected <sequencer hex>`` once it leads, then
``deposed <reason>`` from its `on_deposed` callback if it stops leading, and exits 0.
"""

from __future__ import annotations

import sys
import threading

from chubbypy.client import connect


def main(config: str, path: str, identity: str, delay: float) -> None:
    with connect(config, timeout_seconds=15.0) as cell:
        election = cell.election(path, identity, lock_delay_seconds=delay)
        deposed = threading.Event()

        def lost(reason: Exception | None) -> None:
            print(f"deposed {type(reason).__name__}", flush=True)
            deposed.set()

        election.on_deposed.append(lost)
        sequencer = election.campaign()
        print(f"elected {sequencer.hex()}", flush=True)
        while not deposed.wait(0.1):
            pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
