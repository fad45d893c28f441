"""The exit codes of every ``chubbypy`` command, in one place (the CLI's module docstring
says what each means for each command)."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
"""The cell refused the operation, a check found a problem, or a lock was lost."""
EXIT_USAGE: Final = 2
"""Bad arguments, no cell, a bad cell file."""
EXIT_UNAVAILABLE: Final = 3
"""The cell could not be reached (no master in time, no replica, another cell)."""
EXIT_NOT_ACQUIRED: Final = 4
"""The lock was not acquired (or the election not won) in time, or ``--try`` found it held."""
EXIT_CANNOT_RUN: Final = 127
"""The command could not be started (as a shell says for a command not found)."""
EXIT_INTERRUPTED: Final = 130
"""Ctrl-C while lock or elect waited (as a shell reports SIGINT: 128 + 2)."""
