"""The fault suite: a real cell on separate network hosts, a nemesis, histories, checkers.

Test support, like the simulator beside it, but over real processes: each replica runs in
its own Linux network namespace; client processes record what they did (`_history`); a
nemesis partitions, drops, delays, kills, pauses and skews clocks; and the histories are
judged by a linearizability checker this project owns (`_linearizability`, over the
models of `_models`) and by direct checks of mutual exclusion and fencing (`_exclusion`).
`python -m chubbypy.testing.faults` (`make faults`) runs it.
"""

from chubbypy.testing.faults._check import Report, check_history
from chubbypy.testing.faults._history import History, Kind, Op, Outcome, read_history
from chubbypy.testing.faults._linearizability import Verdict, check_operations
from chubbypy.testing.faults._models import FencedLock, Register

__all__ = [
    "FencedLock",
    "History",
    "Kind",
    "Op",
    "Outcome",
    "Register",
    "Report",
    "Verdict",
    "check_history",
    "check_operations",
    "read_history",
]
