"""An election candidate in its own process, for tests that freeze or kill it.

Usage: python candidate.py CONFIG PATH IDENTITY LOCK_DELAY_SECONDS [recampaign]. It
campaigns through the blocking client's `Election` and prints ``elected <sequencer hex>``
each time it leads (its `on_elected` callback) and ``deposed <reason>`` each time it stops
(its `on_deposed` callback). Without ``recampaign`` it exits 0 once deposed; with it, the
election campaigns again by itself, and the process runs until killed.
"""

from __future__ import annotations

import sys
import threading

from chubbypy.client import connect


def main(config: str, path: str, identity: str, delay: float, recampaign: bool) -> None:
    with connect(config, timeout_seconds=15.0) as cell:
        election = cell.election(path, identity, lock_delay_seconds=delay, recampaign=recampaign)
        deposed = threading.Event()

        def lost(reason: Exception | None) -> None:
            print(f"deposed {type(reason).__name__}", flush=True)
            deposed.set()

        election.on_elected.append(
            lambda sequencer: print(f"elected {sequencer.hex()}", flush=True)
        )
        election.on_deposed.append(lost)
        election.campaign()
        while recampaign or not deposed.wait(0.1):
            deposed.wait(0.1)


if __name__ == "__main__":
    again = sys.argv[5:] == ["recampaign"]
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), again)
