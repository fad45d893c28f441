"""What the ``chubbypy`` command prints of what came from a cell, made safe for a terminal.

Shell (STYLE §1), beside `chubbypy.cli`. Names, paths, sessions' names, ACL names, error
messages and contents shown as text all come from the cell, and some of them from its other
clients: a session named with a terminal escape, or a file of escape codes, must not be
able to drive the operator's terminal (move the cursor, rewrite what is shown, set the
title). Every character Python does not call printable (`str.isprintable`: control
characters, line and paragraph separators, invisible formatting characters such as a
right-to-left override, unassigned code points) is written as an escape instead:
``\\x1b``, ``\\u202e``, ``\\U000e0001``. JSON output escapes the same characters as
``\\uXXXX`` (JSON itself only requires it of the C0 controls).
"""

from __future__ import annotations

import json
from typing import Any


def shown(text: str) -> str:
    """`text` with every character that is not printable written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def shown_contents(data: bytes) -> bytes:
    """A file's contents for a terminal: its text with line breaks and tabs kept, every
    other unprintable character escaped, and bytes that are not UTF-8 as ``\\xNN``."""
    text = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c in "\n\t" else _escape(c) for c in text).encode()


def json_text(document: Any, *, indent: int | None = None) -> str:
    """`document` as JSON, non-ASCII text kept readable but every unprintable character
    escaped, so that the output is safe to show on a terminal and is the same JSON."""
    encoded = json.dumps(document, indent=indent, ensure_ascii=False)
    if encoded.isprintable():
        return encoded
    return "".join(c if c.isprintable() or c == "\n" else _json_escape(c) for c in encoded)


def _escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _json_escape(character: str) -> str:
    code = ord(character)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
