"""Whether the ports a local cell needs are free, and who holds one that is not.

Shell (STYLE §1), beside `chubbypy._cli_cell`, which asks `first_taken` before it creates
anything: a second ``make run`` while a cell runs, or another program on a replica's port,
is refused with one line, instead of a cell of replicas that each die on their first
listen. A port counts as taken when a socket cannot bind it the way Twisted's ``listenTCP``
does (``SO_REUSEADDR``, so a port left in TIME_WAIT by a cell that just stopped is free).

Who holds it is found the way ``ss -lp`` finds it, best effort and Linux only: the
listening socket's inode from ``/proc/net/tcp`` (and ``tcp6``), then the process with a
descriptor on ``socket:[inode]`` among ``/proc/<pid>/fd``. Another user's processes are
not visible to an ordinary user; then the line says the port is in use, and not by whom.
The parsers of those two texts are pure (`listening_inodes`, `socket_inode`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

from chubbypy._cli_text import shown
from chubbypy.config import CellConfig
from chubbypy.server._endpoints import tcp_listen_address

__all__ = [
    "Listener",
    "cell_listeners",
    "first_taken",
    "holder_of",
    "listening_inodes",
    "refusal",
    "socket_inode",
    "taken_line",
]

PROC = Path("/proc")
LISTEN_STATE = "0A"
"""TCP_LISTEN, as /proc/net/tcp writes a socket's state."""
COMMAND_CHARS_SHOWN = 160


@frozen
class Listener:
    """One port the cell listens on, and what for."""

    host: str
    """The interface, as the cell file gives it ("" for every one)."""
    port: int
    purpose: str
    """For a person: "r1's peer port", "the web page's port"."""


def cell_listeners(config: CellConfig, with_web: bool) -> list[Listener]:
    """Every TCP port of the cell file's replicas (peer, client, admin), and the web
    page's if it is started too, in the file's order (``unix:`` endpoints are left out)."""
    wanted = [
        (endpoint, f"{replica.id}'s {role} port")
        for replica in config.replicas
        for role, endpoint in (
            ("peer", replica.peer),
            ("client", replica.client),
            ("admin", replica.admin),
        )
    ]
    if with_web:
        wanted.append((config.web.listen, "the web page's port"))
    listeners = []
    for endpoint, purpose in wanted:
        address = tcp_listen_address(endpoint)
        if address is not None:
            listeners.append(Listener(address[0], address[1], purpose))
    return listeners


def refusal(listener: Listener) -> OSError | None:
    """Why `listener`'s port cannot be bound now (None: it can). A host this machine cannot
    resolve is not judged here: the replica will say so itself."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listener.host, listener.port))
        except socket.gaierror:
            return None
        except OSError as error:
            return error
    return None


def first_taken(config: CellConfig, with_web: bool, proc: Path = PROC) -> str | None:
    """The line that refuses to start the cell, or None when every port is free."""
    refused = []
    for listener in cell_listeners(config, with_web):
        error = refusal(listener)
        if error is not None:
            refused.append((listener, error))
    if not refused:
        return None
    listener, error = refused[0]
    holder = holder_of(listener.port, proc) if error.errno == errno.EADDRINUSE else None
    return taken_line(listener, error, holder, len(refused) - 1)


def taken_line(listener: Listener, error: OSError, holder: str | None, others: int) -> str:
    """One line: the port, what it is for, who holds it (if known), and what to do."""
    where = f"port {listener.port} ({listener.purpose})"
    more = f"; {others} more of its ports are taken too" if others else ""
    if error.errno != errno.EADDRINUSE:
        return f"{where} cannot be listened on: {error.strerror or error}{more}"
    if holder is None:
        return (
            f"{where} is in use by another process (one this user cannot see){more}: stop it, "
            "or give the cell file other ports"
        )
    hint = (
        "is this cell running already? Stop it first (Ctrl-C), or give the cell file other ports"
        if "chubbypy" in holder
        else "stop it, or give the cell file other ports"
    )
    return f"{where} is in use by {holder}{more}: {hint}"


def holder_of(port: int, proc: Path = PROC) -> str | None:
    """ "pid N (its command line)" of a process listening on TCP `port`, if one can be seen."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            inodes |= listening_inodes((proc / "net" / table).read_text(), port)
    if not inodes:
        return None
    for pid, link in _descriptors(proc):
        if socket_inode(link) in inodes:
            return f"pid {pid} ({_command_line(proc, pid)})"
    return None


def listening_inodes(table: str, port: int) -> set[int]:
    """The inodes of the sockets listening on `port` in a /proc/net/tcp or tcp6 `table`."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN_STATE:
            continue
        _, _, hex_port = fields[1].rpartition(":")
        try:
            if int(hex_port, 16) == port:
                found.add(int(fields[9]))
        except ValueError:
            continue
    return found


def socket_inode(link: str) -> int | None:
    """The inode of a descriptor's link text ``socket:[12345]``; None for anything else."""
    if not (link.startswith("socket:[") and link.endswith("]")):
        return None
    inode = link[len("socket:[") : -1]
    return int(inode) if inode.isdigit() else None


def _descriptors(proc: Path) -> Iterator[tuple[int, str]]:
    """(pid, link text) of every descriptor of every process this user may look into."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            names = os.listdir(entry / "fd")
        except OSError:  # another user's process, or it ended
            continue
        for name in names:
            with contextlib.suppress(OSError):
                yield int(entry.name), os.readlink(entry / "fd" / name)


def _command_line(proc: Path, pid: int) -> str:
    try:
        words = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(word.decode("utf-8", "replace") for word in words if word)
    if len(text) > COMMAND_CHARS_SHOWN:
        text = text[: COMMAND_CHARS_SHOWN - 3] + "..."
    return shown(text) or "?"
