"""What a CLI command that is not a plain namespace call returns for `chubbypy.cli` to print
(``snapshot``, ``member``): done, with its JSON fields and its text, or refused."""

from __future__ import annotations

from typing import Any

from attrs import frozen

__all__ = ["Done", "Refused"]


@frozen
class Done:
    """A command done: its JSON document's own fields, and the lines to print."""

    document: dict[str, Any]
    text: str


@frozen
class Refused:
    """A command refused: its error code's name, why, and the exit code."""

    code: str
    message: str
    exit_code: int
