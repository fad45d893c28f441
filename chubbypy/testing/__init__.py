"""A deterministic simulator of a whole cell, and the checkers that judge every run.

Shell-side: it may use `random` (seeded), because it plays the world around the pure core:
clocks, network, disks, crashes and clients. One seed replays one run exactly.
"""

from chubbypy.testing._cell import SimCell, SimResult, SimSettings, default_settings
from chubbypy.testing._checkers import Observer, Violation
from chubbypy.testing._world import NetworkFaults

__all__ = [
    "NetworkFaults",
    "Observer",
    "SimCell",
    "SimResult",
    "SimSettings",
    "Violation",
    "default_settings",
]
