"""The ``chubbypy`` command: browse and change a cell's namespace, hold its locks, lead its
elections, watch it, and see its replicas and sessions.

Shell (STYLE §1): argument parsing and output around a `chubbypy.client.BlockingCell`, the
only user of Twisted's global reactor. Each short command is a function from a client and
its arguments to an `Outcome` (a JSON document and the text to print), so tests run them
against a stand-in client without a network; the lasting ones (``watch``, ``lock``,
``elect``) are in `chubbypy._cli_hold`.

Usage::

    chubbypy [--cell CELL] [--json] [--timeout SECONDS] COMMAND ...

    ls [-l] [PATH]          children of a directory (the cell root by default); directories
                            end in "/"; -l adds MODE (d or - for directory or file, then e or
                            - for ephemeral), SIZE, GENERATION and INSTANCE columns ("?" for
                            a child you may not read: the cell shows its name only)
    stat PATH               a node's metadata
    cat [--raw] PATH        a file's contents, as raw bytes; on a terminal, control
                            characters and bytes that are not UTF-8 are shown escaped
                            (\\x1b) unless --raw
    put PATH [VALUE | -]    write a file, creating it if missing; the contents come from
                            VALUE, or from standard input if VALUE is "-" or missing.
                            --if-generation N: only if its content generation is N;
                            --create-only: only if it does not exist
    rm PATH                 delete a file or an empty directory
    mkdir [-p] PATH         create a directory (-p: and missing parents; no error if it
                            exists)
    acl get PATH            a node's three ACL names (read, write, change) and their generation
    acl set PATH [--read NAME] [--write NAME] [--change NAME] [--if-generation N]
                            change some of them (the others are kept; without
                            --if-generation, only if no one changed them since they were
                            read). Needs change permission only: the names are read through
                            a handle opened for CHANGE_ACL when the node is not readable.
                            Warns (on standard error; exit 0) about a name with no file in
                            the cell's ACL directory: it admits no one
    watch PATH [--count N]  print the node's events as they come (contents modified, child
                            added or removed, lock acquired, conflicting lock, deleted, master
                            fail-over) until Ctrl-C, or N events; exits 1 if the node is
                            deleted. After a session loss it watches again, saying events may
                            have been missed.
    lock PATH [--shared] [--timeout S] [--try] [--lock-delay S] [--kill-after S] -- CMD ARGS...
                            run CMD while holding the lock of file PATH (created if missing),
                            with the sequencer (hex) in $CHUBBY_SEQUENCER and PATH in
                            $CHUBBY_LOCK_PATH; exit with CMD's status. --timeout: give up after
                            S seconds (exit 4; default: wait); --try: exit 4 at once if held.
                            If the lock is lost while CMD runs, CMD gets SIGTERM (SIGKILL
                            --kill-after seconds later, default 10) and chubbypy exits 1;
                            a session in jeopardy for longer than --lock-delay counts as
                            lost, since another may hold the lock by then.
    elect PATH --id ID [--timeout S] [--lock-delay S] [--kill-after S] -- CMD ARGS...
                            campaign in the election on PATH and run CMD while leading (ID is
                            what the leader advertises in PATH); stop CMD if deposed (exit 1)
    leader PATH             what the leader of the election on PATH advertises (exit 1: none)
    status [REPLICA] [--lag-max ENTRIES]
                            every replica's role, epoch, log positions, lease and master,
                            then one line per problem: a replica unreachable, lagging (its
                            applied index more than ENTRIES, default 1000, behind the most
                            advanced replica's), diverged (its state checksum differed
                            from a peer's), removed from the cell but still running, or no
                            master (`chubbypy._cli_status`)
    sessions                every live session at the master: state, lease left, open
                            handles, locks held, ephemeral files, the client's principal
                            and description (an operator's command: the ACL "admin")
    sessions --end ID       end session ID, which another client owns (operators only): the
                            master extends its lease no more and refuses it, so its client
                            hears at once that it expired; when the lease it has runs out
                            (the time is printed) it ends, its ephemeral files go and its
                            locks are freed after their lock-delay. A warning, exit 0, if it
                            was ending already or there was no such session
    lock-info PATH          the lock of node PATH: mode (free, exclusive or shared), lock
                            generation, holders (session, mode, lock-delay, principal,
                            client), waiters in queue order (how long each has waited) and
                            the rest of a lock-delay (needs read permission on PATH)
    snapshot save FILE      back the cell up: a snapshot of the whole replicated database
                            (files, ACLs, sessions, locks) taken by the master at one log
                            index, read through the client protocol in pieces (operators
                            only: the ACL "admin"), checked, written atomically, mode 0600;
                            progress on standard error for snapshots above 1 MiB
    snapshot restore FILE --data-dir DIR [--rename-cell]
                            seed one replica directory (DATA_DIR/<replica>, absent or
                            empty) of a new cell, the one --cell names, from a backup;
                            restore each replica the same way, then start the cell. Refuses
                            a damaged or truncated file, another cell's (unless
                            --rename-cell: its names move to /ls/<cell>) and a used
                            directory; the old cell's sessions are ended (their locks free
                            after their lock-delay once the cell runs)
    member list             the cell's membership: each replica's role (voter or learner),
                            whether it is master, how far it knows the log chosen and when
                            it last acknowledged the master
    member add ID --peer ADDRESS --client ADDRESS [--if-version N]
                            add replica ID (started with an empty data directory and no
                            --bootstrap) as a learner: it takes the log, never votes
    member promote ID [--wait S] [--if-version N]
                            make learner ID a voter once it has caught up (--wait: ask again
                            for S seconds while it is NOT_CAUGHT_UP)
    member remove ID [--force] [--if-version N]
                            remove ID (the master too: it hands over at once); refused if it
                            would leave fewer than 3 voters, or (unless --force) fewer live
                            voters than a quorum. Operators only (the ACL "admin"); a change
                            the membership already shows is answered at once (exit 0)
    completion bash|zsh     a completion script: eval "$(chubbypy completion bash)"
    serve, cell             run one replica, or a whole cell (see ``chubbypy serve -h``)

The global options may also follow the command. ``--cell`` is, in order of preference, the
option, the ``CHUBBY_CELL`` environment variable, or ``etc/cell.yaml`` in the current
directory. It is either the path of a cell's YAML file or ``[NAME@]ADDRESS[,ADDRESS...]``,
where each address is ``host:port`` or a Twisted endpoint string; one reachable replica is
enough. Without a NAME, the cell's name comes from a path given as ``/ls/NAME/...``, else
it is ``local`` (the example cell's).

Paths are full names (``/ls/<cell>/a/b``) or relative to the cell root: ``a/b``, ``/a/b``
and ``./a/b`` all mean ``/ls/<cell>/a/b``, and ``/``, ``.`` or nothing mean the root.

Who the client is: ``CHUBBY_PRINCIPAL`` and ``CHUBBY_TOKEN`` in the environment (both or
neither; without them, ``anonymous``), or ``CHUBBY_TOKEN_FILE`` naming a file that holds the
token (``chubbypy cell`` prints the operator's). Never on the command line, where other
users of the machine could read the token. Replicas at ``ssl:`` addresses are verified
against the cell file's ``tls.ca``, or the CA in the PEM file ``CHUBBY_CA_FILE`` names
(else the system's authorities), and must name the host dialled.

Text from the cell (names, paths, sessions' names, ACL names, error messages, contents
shown as text) is printed with every unprintable character escaped (``\\x1b``,
``\\u202e``), so that what another client wrote cannot drive the terminal; JSON output
escapes them as ``\\uXXXX`` (`chubbypy._cli_text`).

Exit codes: 0 done; 1 the cell refused the operation (no such node, exists, generation
mismatch, ...: the message on standard error names the path and the error), or the lock
(the leadership) was lost while the command ran, or ``status`` found a problem; 2 usage
error (bad arguments, no cell, a bad cell file); 3 cell unavailable (no master answered
within ``--timeout``, no replica reachable, or the replicas serve another cell or
protocol); 4 the lock was not acquired (or the election not won) within ``--timeout``, or
``--try`` found it held. ``lock`` and ``elect`` otherwise exit with their command's status
(128 + N if a signal N ended it; 127 if it could not be started); 130 if interrupted
(Ctrl-C) while waiting for the lock. ``status`` exits 0 only when every replica answered,
none lags or diverged and one is master; 1 when it found a problem (each is a line after
the table, and standard error sums them up); 3 when no replica answered. ``snapshot
save`` exits 1 if refused (not an operator) or its file could not be written, 3 if no
master kept one snapshot long enough (fail-overs, other backups) or none answered;
``snapshot restore`` exits 1 when it refuses the file or the directory, having written
nothing.

JSON output (``--json``): exactly one JSON object on standard output per invocation, whether
the operation succeeded or failed; usage errors (exit code 2) are only reported as text on
standard error. Every object has::

    "schema": "chubbypy.cli/1"  (changes only if a field changes meaning or goes away)
    "command": the command name, "ok": true or false, "cell": the cell's name

and, by command, when ``ok`` is true (STAT and STATUS are defined below)::

    ls      "path": full name, "entries": [{"name": str, "path": str, "stat": STAT | null},
            ...] (null for a child the caller may not read)
    stat    "path", "stat": STAT
    cat     "path", "contents": {"encoding": "utf-8" | "base64", "data": str}, "stat": STAT
    put     "path", "created": bool, "stat": STAT
    rm      "path", "deleted": true
    mkdir   "path", "created": [full names created, parents first], "stat": STAT
    status  "master": id of a replica that reports itself master, or null,
            "replicas": [{"replica_id": str | null, "address": str, "reachable": bool,
                          "problem": str | null, "status": STATUS | null}, ...],
            "problems": [PROBLEM, ...] (empty when the cell is healthy), "lag_max": int.
            With a problem "ok" is false, and "error" has the code "UNHEALTHY" (exit
            code 1), or "UNAVAILABLE" (3) when no replica answered; the rest is there too.
    acl     "path", "acl": {"read", "write", "change": str}, "acl_generation": int,
            "warnings": [str, ...] (also printed on standard error)
    leader  "path", "leader": str (what the leader advertises)
    sessions "sessions": [SESSION, ...], in session id order; with --end: "session_id":
            int, "found": bool (false: no such session), "already": bool (it was ending
            before: nothing changed), "ends_in_ms": int (its lease's rest, at the master)
    lock-info "path", "lock": LOCK
    member  list: "version", "index" (the log index it governs after), "chosen_index",
            "members": [{"replica_id", "role": "voter" | "learner", "master": bool,
            "peer", "client": str, "chosen_index": int | null, "acked_ms_ago": int |
            null}, ...]; add, promote, remove: "action", "replica_id", "version", "index",
            "already": bool (the membership showed it before: nothing changed)
    snapshot "action": "save" or "restore", "file"; save: "index", "checksum" (hex),
            "bytes", "created" (ISO 8601 UTC); restore: "data_dir", "source_cell",
            "index" (the file's), "restored_index" (after the old sessions' end),
            "sessions_ended", "created". Error codes of a refused restore are
            "RESTORE_REFUSED" (exit 1) or "USAGE" (exit 2); a save that could not write
            its file "WRITE_FAILED" (exit 1)
    lock    printed when the command is over (after CMD's own output): "path",
            "acquired": bool, and when acquired: "sequencer": hex str, "lost": bool,
            "exit_status": CMD's status; always "exit_code": chubbypy's. "ok" is true
            when the exit code is 0.
    elect   the same, with "elected" and "deposed" for "acquired" and "lost".
    watch   one object per line (JSON Lines), one per event: "event": {"kind": the event's
            name ("CONTENTS_MODIFIED", "CHILD_CHANGED", "LOCK_ACQUIRED",
            "CONFLICTING_LOCK", "HANDLE_INVALID", "MASTER_FAILOVER"), "path": str | null,
            "sequence": int (increasing), "time": ISO 8601 UTC str}

    STAT    {"instance", "content_generation", "lock_generation", "acl_generation",
             "checksum", "size": int, "is_directory", "ephemeral": bool,
             "acl": {"read", "write", "change": str}}
    SESSION {"session_id": int, "client": str (its description of itself), "state":
             "live" | "closing" | "doomed" | "operator-ended" | "ending",
             "lease_remaining_ms": int,
             "handles": int (those the master knows of), "locks": [{"path": str, "mode":
             "exclusive" | "shared"}, ...] (at most 16, in path order), "lock_count": int,
             "ephemeral": [full names, ...] (at most 16), "ephemeral_count": int,
             "cached_names": int (names the master registered it as caching),
             "principal": str (whom its client acts as; "" until the master heard from it)}
    LOCK    {"mode": "free" | "exclusive" | "shared", "instance", "lock_generation": int,
             "holders": [{"session_id": int, "client": str, "principal": str, "mode":
             "exclusive" | "shared", "lock_delay_ms": int}, ...], "holder_count": int,
             "waiters": [{"session_id": int, "client": str, "principal": str, "mode": str,
             "waited_ms": int}, ...] (head of the queue first), "waiter_count": int,
             "lock_delay_remaining_ms": int} (the lists are cut at the cell's
             sessions.lock_info_listed_max; the counts are whole)
    STATUS  {"role": "master" | "candidate" | "follower", "epoch", "promised": str,
             "chosen_index", "applied_index", "first_index", "last_index",
             "snapshot_index", "lease_remaining_ms", "uptime_ms": int, "serving",
             "lease_valid": bool, "master_hint": str | null,
             "checksum_mismatches": int (not 0: this replica diverged from a peer),
             "member_role": "voter" | "learner" | "removed" | "joining",
             "membership_version": int (0 while joining)}
    PROBLEM {"kind": "unreachable" | "lagging" | "diverged" | "removed" | "no_master",
             "replica_id": str | null, "address": str | null (both null for no_master),
             "message": str (one line), "lag": int | null (entries behind the most
             advanced replica, for lagging)}

When ``ok`` is false: "path" (the full name, or null) and "error": {"code": the error code's
name (such as "NO_SUCH_NODE" or "UNAVAILABLE", or "UNHEALTHY" for ``status``), "message":
str, "exit_code": int}; the message also goes to standard error. Contents are "utf-8" text
when they are valid UTF-8, else "base64".
"""

from __future__ import annotations

import argparse
import base64
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Final, Protocol

from attrs import evolve, frozen

from chubbypy._cli_outcome import Done, Refused
from chubbypy._cli_status import LAG_MAX_DEFAULT, problem_json, status_problems, summary
from chubbypy._cli_text import json_text, shown, shown_contents
from chubbypy._exit_codes import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from chubbypy.client._addresses import client_endpoint_string, display_address
from chubbypy.client._cell import ReplicaReport
from chubbypy.namespace import acl_files_needed
from chubbypy.protocol.client import CELL_CHARS_MAX, INT64_MAX, ReplicaStatus
from chubbypy.protocol.errors import (
    ChubbyError,
    ErrorCode,
    NodeExists,
    NoSuchNode,
    NotADirectory,
    PermissionDenied,
    Unavailable,
    UnsupportedVersion,
    WrongCell,
)
from chubbypy.protocol.namespace import AclNames, Contents, DirEntry, Stat
from chubbypy.protocol.session import HandleMode
from chubbypy.protocol.values import (
    MEMBER_ADDRESS_CHARS_MAX,
    MEMBERSHIP_VERSION_MAX,
    REPLICA_ID_CHARS_MAX,
)

if TYPE_CHECKING:
    from chubbypy.config import CellConfig

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "SCHEMA",
    "CellClient",
    "CellTarget",
    "Invocation",
    "Outcome",
    "UsageError",
    "build_parser",
    "find_cell",
    "main",
    "resolve_path",
    "run",
]

SCHEMA: Final = "chubbypy.cli/1"
UNAVAILABLE_ERRORS: Final = (Unavailable, WrongCell, UnsupportedVersion)
"""Errors that mean "cannot talk to this cell", not "the cell refused": exit code 3."""

CELL_VARIABLE: Final = "CHUBBY_CELL"
DEFAULT_CONFIG: Final = Path("etc") / "cell.yaml"
DEFAULT_CELL_NAME: Final = "local"
TIMEOUT_SECONDS_DEFAULT: Final = 10.0
REQUEST_TIMEOUT_SECONDS_MAX: Final = 2.0
LOCK_DELAY_SECONDS_MAX: Final = 60.0
"""Chubby's bound on a lock-delay (the cell refuses more)."""
PRINCIPAL_VARIABLE: Final = "CHUBBY_PRINCIPAL"
TOKEN_VARIABLE: Final = "CHUBBY_TOKEN"
TOKEN_FILE_VARIABLE: Final = "CHUBBY_TOKEN_FILE"
CA_FILE_VARIABLE: Final = "CHUBBY_CA_FILE"
PUT_ATTEMPTS_MAX: Final = 3
"""Set-or-create rounds in `put` before giving up on a file that keeps appearing and going."""


class AclHandle(Protocol):
    """What ``acl set`` needs of a handle: `chubbypy.client.blocking.BlockingHandle`'s."""

    @property
    def stat(self) -> Stat: ...
    def set_acl(self, acl: AclNames, expected_generation: int | None = None) -> Stat: ...
    def __enter__(self) -> AclHandle: ...
    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class CellClient(Protocol):
    """What the commands need of a client: `chubbypy.client.BlockingCell`'s methods."""

    def get_contents_and_stat(self, path: str) -> Contents: ...
    def get_stat(self, path: str) -> Stat: ...
    def list_dir(self, path: str) -> tuple[DirEntry, ...]: ...
    def create(self, path: str, contents: bytes = b"", *, directory: bool = False) -> Stat: ...
    def set_contents(
        self, path: str, contents: bytes, expected_generation: int | None = None
    ) -> Stat: ...
    def delete(self, path: str, expected_instance: int | None = None) -> None: ...
    def set_acl(self, path: str, acl: AclNames, expected_generation: int | None = None) -> Stat: ...
    def status(self, replica: str | None = None) -> tuple[ReplicaReport, ...]: ...
    def list_sessions(self) -> Sequence[Any]: ...
    def end_session(self, session_id: int) -> Any: ...
    def lock_info(self, path: str) -> Any: ...
    def snapshot(self, progress: Callable[[int, int], None] | None = None) -> Any: ...
    def members(self) -> Any: ...
    def change_membership(self, step: Any, if_version: int = 0) -> Any: ...
    def open(self, path: str, *, mode: HandleMode = ...) -> AclHandle: ...
    def close(self) -> None: ...


class UsageError(Exception):
    """The command line cannot be acted on; exit code 2."""


@frozen
class CellTarget:
    """Where the cell is: replica addresses, and its name or configuration when known."""

    addresses: tuple[str, ...]
    name: str | None
    config: CellConfig | None = None
    tls_ca: Path | None = None
    """The CA that ``ssl:`` replicas' certificates are verified against, if not the cell
    file's (``CHUBBY_CA_FILE``)."""


@frozen
class Invocation:
    """One command to run: its parsed arguments, the full name of its path (if it has one),
    the cell's name, and standard input."""

    args: argparse.Namespace
    path: str | None
    cell: str
    stdin: BinaryIO


@frozen
class Failed:
    """What a command that ran found wrong: the JSON "error" object's fields."""

    code: str
    message: str
    """One line, for standard error."""
    exit_code: int


@frozen
class Outcome:
    """A command's result: the JSON document's own fields, and the text to print otherwise."""

    document: dict[str, Any]
    text: bytes = b""
    warnings: tuple[str, ...] = ()
    """Printed on standard error (in JSON output, also as "warnings"); the exit code stays 0."""
    failure: Failed | None = None
    """The command ran, and what it found is a failure (``status`` of a cell with a problem):
    the text and document are still shown, "ok" is false, and the command exits with the
    failure's exit code."""


Credentials = tuple[str, str]
"""A principal and its token."""
Connect = Callable[[CellTarget, str, float, "Credentials | None"], CellClient]
"""Makes a client of a cell: its target, its name, the timeout of each operation, and who
the client is (None: anonymous)."""

# ----------------------------------------------------------------------------- entry points


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chubbypy`` with `argv` (default: the process's arguments); the exit code."""
    try:
        return run(
            sys.argv[1:] if argv is None else argv,
            stdin=sys.stdin.buffer,
            stdout=sys.stdout.buffer,
            stderr=sys.stderr,
            environ=os.environ,
            cwd=Path.cwd(),
            connect=_connect_blocking,
        )
    except SystemExit as exit:  # argparse: --help (0) or a usage error (2)
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE


def run(
    argv: Sequence[str],
    *,
    stdin: BinaryIO,
    stdout: BinaryIO,
    stderr: IO[str],
    environ: Mapping[str, str],
    cwd: Path,
    connect: Connect,
) -> int:
    """Parse `argv` and run the command with these streams and surroundings; the exit code.

    Argparse's usage errors raise `SystemExit(2)` after printing to ``sys.stderr``.
    """
    words, command_line = _split_command_line(argv)
    args = build_parser().parse_args(words)
    args.command_line = command_line
    if args.command in SERVER_COMMANDS:
        return _run_server(args, stderr)
    if args.command == "completion":
        stdout.write(completion_script(args.shell).encode())
        return EXIT_OK
    as_json = getattr(args, "json", False)
    try:
        target = find_cell(getattr(args, "cell", None), environ, cwd)
        invocation = _invocation(args, target, stdin)
        credentials = _credentials(environ, cwd)
        target = _with_tls_ca(target, environ, cwd)
        if args.command in ("lock", "elect"):
            _command_line(args)
    except UsageError as error:
        print(f"chubbypy {args.command}: {error}", file=stderr)
        return EXIT_USAGE
    if args.command == "snapshot" and args.action == "restore":
        return _snapshot(None, invocation, target, stdout, stderr, as_json)
    timeout = getattr(args, "timeout", None) or TIMEOUT_SECONDS_DEFAULT
    if args.command in ("lock", "elect", "__complete"):
        timeout = COMPLETION_SECONDS if args.command == "__complete" else TIMEOUT_SECONDS_DEFAULT
    client = connect(target, invocation.cell, timeout, credentials)
    try:
        if args.command in LASTING:
            return _execute_lasting(client, invocation, stdout, stderr, as_json)
        if args.command == "snapshot":
            return _snapshot(client, invocation, target, stdout, stderr, as_json)
        if args.command == "member":
            return _member(client, invocation, stdout, stderr, as_json)
        return _execute(client, invocation, stdout, stderr, as_json)
    finally:
        client.close()


def _credentials(environ: Mapping[str, str], cwd: Path) -> Credentials | None:
    """Who the client is, from the environment (never the command line, which other users
    of the machine can read): the token itself, or the file that holds it."""
    principal, token = environ.get(PRINCIPAL_VARIABLE), environ.get(TOKEN_VARIABLE)
    token_file = environ.get(TOKEN_FILE_VARIABLE)
    if token is not None and token_file is not None:
        raise UsageError(f"set {TOKEN_VARIABLE} or {TOKEN_FILE_VARIABLE}, not both")
    if token_file is not None:
        path = cwd / Path(token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as error:
            raise UsageError(f"{TOKEN_FILE_VARIABLE}: cannot read the token: {error}") from None
    if principal is None and token is None:
        return None
    if not principal or not token:
        raise UsageError(
            f"set both {PRINCIPAL_VARIABLE} and {TOKEN_VARIABLE} (or {TOKEN_FILE_VARIABLE}), "
            "or neither"
        )
    return principal, token


def _with_tls_ca(target: CellTarget, environ: Mapping[str, str], cwd: Path) -> CellTarget:
    """`target` with the CA of ``CHUBBY_CA_FILE``, or of its cell file when it uses TLS;
    a CA file that is not there is a usage error, before anything connects."""
    chosen = environ.get(CA_FILE_VARIABLE)
    config = target.config
    if chosen is not None:
        path = cwd / Path(chosen).expanduser()
    elif config is not None and config.tls is not None:
        path = config.secret_path(config.tls.ca)
    else:
        return target
    if not any(a.startswith("ssl:") for a in target.addresses):
        return target
    if not path.is_file():
        where = CA_FILE_VARIABLE if chosen is not None else "the cell file's tls.ca"
        raise UsageError(f"{where}: no CA certificate at {path}")
    return evolve(target, tls_ca=path)


def _split_command_line(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """For lock and elect, chubbypy's own words and the command after ``--``: split before
    parsing, so that the command's options are never taken for chubbypy's."""
    words = list(argv)
    if "--" in words and {"lock", "elect"} & set(words[: words.index("--")]):
        split = words.index("--")
        return words[:split], words[split + 1 :]
    return words, []


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command after ``--`` that lock and elect run."""
    words: list[str] = args.command_line
    if not words:
        raise UsageError("give the command to run after --, as in: lock PATH -- CMD ARGS...")
    return words


def _execute_lasting(
    client: CellClient, invocation: Invocation, stdout: BinaryIO, stderr: IO[str], as_json: bool
) -> int:
    """watch, lock and elect: they print as they go, and pick their own exit codes."""
    from chubbypy import _cli_hold as hold  # subprocess and signal handling: only for these

    args, path = invocation.args, _path(invocation)
    header = {"schema": SCHEMA, "command": args.command, "cell": invocation.cell}

    def emit(document: dict[str, Any]) -> None:
        if not as_json:
            return
        if args.command == "watch":
            hold.json_line(stdout, {**header, "ok": True, **document})
        else:
            write_json(stdout, {**header, "ok": document.get("exit_code") == 0, **document})

    try:
        if args.command == "watch":
            return hold.watch(client, path, count=args.count, stdout=stdout, stderr=stderr,
                              emit=emit, as_json=as_json)  # fmt: skip
        if args.command == "lock":
            return hold.run_locked(client, path, _command_line(args), shared=args.shared,
                                   timeout=args.timeout, try_only=args.try_only,
                                   lock_delay=args.lock_delay, kill_after=args.kill_after,
                                   stderr=stderr, emit=emit)  # fmt: skip
        return hold.run_elected(client, path, args.identity, _command_line(args),
                                timeout=args.timeout, lock_delay=args.lock_delay,
                                kill_after=args.kill_after,
                                stderr=stderr, emit=emit)  # fmt: skip
    except ChubbyError as error:
        code = EXIT_UNAVAILABLE if isinstance(error, UNAVAILABLE_ERRORS) else EXIT_FAILED
        message = shown(error.message)
        print(f"chubbypy {args.command}: {path}: {error.code.name}: {message}", file=stderr)
        _print_hint(error, stderr)
        if as_json:
            failure = {"code": error.code.name, "message": error.message, "exit_code": code}
            document = {**header, "ok": False, "path": path, "error": failure}
            if args.command == "watch":
                hold.json_line(stdout, document)  # JSON Lines: one line, even for the error
            else:
                write_json(stdout, document)
        return code
    except KeyboardInterrupt:
        print(f"chubbypy {args.command}: interrupted", file=stderr)
        if as_json:
            failure = {
                "code": "INTERRUPTED",
                "message": "interrupted",
                "exit_code": EXIT_INTERRUPTED,
            }
            write_json(stdout, {**header, "ok": False, "path": path, "error": failure})
        return EXIT_INTERRUPTED


_HINTS: Final = (
    (
        "serves no anonymous clients",
        f"set {PRINCIPAL_VARIABLE} and {TOKEN_FILE_VARIABLE} (or {TOKEN_VARIABLE}); "
        "`chubbypy cell` prints them for the operator",
    ),
    (
        "certificate verify failed",
        f"set {CA_FILE_VARIABLE} to the cell's CA certificate (`chubbypy cell` prints it)",
    ),
    (
        "closed cleanly",
        "if the cell serves clients over TLS, its client addresses are ssl: ones",
    ),
)
"""What to do about an error whose message holds the text: said after it."""


def _snapshot(
    client: CellClient | None,
    invocation: Invocation,
    target: CellTarget,
    stdout: BinaryIO,
    stderr: IO[str],
    as_json: bool,
) -> int:
    """``snapshot save`` (with a client) or ``restore`` (without): `chubbypy._cli_snapshot`,
    imported only for them (the store, the node's format), printed as every command is."""
    from chubbypy import _cli_snapshot as snapshots

    args = invocation.args
    if client is not None:
        outcome = snapshots.save(client, invocation.cell, target.config, Path(args.file), stderr)
    else:
        outcome = snapshots.restore(
            target.name, target.config, Path(args.file), args.data_dir, args.rename_cell
        )
    cell = invocation.cell if target.name is None else target.name
    return _outcome_printed(outcome, "snapshot", args.action, cell, stdout, stderr, as_json)


def _member(
    client: CellClient, invocation: Invocation, stdout: BinaryIO, stderr: IO[str], as_json: bool
) -> int:
    """``member list|add|promote|remove``: `chubbypy._cli_member`, printed as every command is."""
    from chubbypy import _cli_member as members

    args = invocation.args
    if args.action == "list":
        outcome = members.listed(client)
    else:
        outcome = members.change(
            client,
            members.step_of(args),
            if_version=args.if_version or 0,
            wait_seconds=getattr(args, "wait", None) or 0.0,
            progress=lambda line: print(f"chubbypy member {args.action}: {line}", file=stderr),
        )
    return _outcome_printed(
        outcome, "member", args.action, invocation.cell, stdout, stderr, as_json
    )


def _outcome_printed(
    outcome: Done | Refused,
    command: str,
    action: str,
    cell: str,
    stdout: BinaryIO,
    stderr: IO[str],
    as_json: bool,
) -> int:
    """Print a ``snapshot`` or ``member`` command's outcome as every command prints (one
    JSON object with --json; else its lines, or the refusal on standard error); its exit
    code."""
    header = {"schema": SCHEMA, "command": command, "action": action, "cell": cell}
    if isinstance(outcome, Refused):
        print(f"chubbypy {command} {action}: {outcome.code}: {shown(outcome.message)}",
              file=stderr)  # fmt: skip
        if as_json:
            failure = {"code": outcome.code, "message": outcome.message,
                       "exit_code": outcome.exit_code}  # fmt: skip
            write_json(stdout, {**header, "ok": False, "path": None, "error": failure})
        return outcome.exit_code
    if as_json:
        write_json(stdout, {**header, "ok": True, **outcome.document})
    else:
        for line in outcome.text.splitlines():
            stdout.write(f"{shown(line)}\n".encode())
        stdout.flush()
    return EXIT_OK


def _print_hint(error: ChubbyError, stderr: IO[str]) -> None:
    for text, hint in _HINTS:
        if text in error.message:
            print(f"chubbypy: hint: {hint}", file=stderr)
            return


def _execute(
    client: CellClient, invocation: Invocation, stdout: BinaryIO, stderr: IO[str], as_json: bool
) -> int:
    args = invocation.args
    header = {"schema": SCHEMA, "command": args.command, "cell": invocation.cell}
    try:
        outcome = COMMANDS[args.command](client, invocation)
    except ChubbyError as error:
        code = EXIT_UNAVAILABLE if isinstance(error, UNAVAILABLE_ERRORS) else EXIT_FAILED
        where = f"{invocation.path}: " if invocation.path is not None else ""
        message = shown(error.message)
        print(f"chubbypy {args.command}: {where}{error.code.name}: {message}", file=stderr)
        _print_hint(error, stderr)
        if as_json:
            failure = {"code": error.code.name, "message": error.message, "exit_code": code}
            write_json(stdout, {**header, "ok": False, "path": invocation.path, "error": failure})
        return code
    except ValueError as error:  # e.g. status of a replica the cell does not have
        print(f"chubbypy {args.command}: {shown(str(error))}", file=stderr)
        return EXIT_USAGE
    for warning in outcome.warnings:
        print(f"chubbypy {args.command}: warning: {shown(warning)}", file=stderr)
    failed = outcome.failure
    if failed is not None:
        print(f"chubbypy {args.command}: {shown(failed.message)}", file=stderr)
    if as_json:
        warnings = {"warnings": list(outcome.warnings)} if outcome.warnings else {}
        found = {} if failed is None else {"path": invocation.path, "error": _error_json(failed)}
        document = {**header, "ok": failed is None, **outcome.document, **warnings, **found}
        write_json(stdout, document)
    else:
        text = outcome.text
        if args.command == "cat" and not args.raw and stdout.isatty():
            text = shown_contents(text)
        stdout.write(text)
        stdout.flush()
    return EXIT_OK if failed is None else failed.exit_code


def _error_json(failed: Failed) -> dict[str, Any]:
    return {"code": failed.code, "message": failed.message, "exit_code": failed.exit_code}


def session_json(info: Any) -> dict[str, Any]:
    """One session of ``sessions``: the documented SESSION object."""
    return {
        "session_id": info.session_id,
        "client": info.name,
        "state": info.state,
        "lease_remaining_ms": info.lease_remaining_ms,
        "handles": info.handles,
        "locks": [{"path": path, "mode": mode} for path, mode in info.locks],
        "lock_count": info.lock_count,
        "ephemeral": list(info.ephemeral),
        "ephemeral_count": info.ephemeral_count,
        "cached_names": info.cached_names,
        "principal": info.principal,
    }


def lock_json(info: Any) -> dict[str, Any]:
    """A `LockInfo` as the documented LOCK object."""
    return {
        "mode": info.mode,
        "instance": info.instance,
        "lock_generation": info.lock_generation,
        "holders": [
            {"session_id": h.session_id, "client": h.client, "principal": h.principal,
             "mode": h.mode, "lock_delay_ms": h.lock_delay_ms}
            for h in info.holders
        ],
        "holder_count": info.holder_count,
        "waiters": [
            {"session_id": w.session_id, "client": w.client, "principal": w.principal,
             "mode": w.mode, "waited_ms": w.waited_ms}
            for w in info.waiters
        ],
        "waiter_count": info.waiter_count,
        "lock_delay_remaining_ms": info.lock_delay_remaining_ms,
    }  # fmt: skip


def _connect_blocking(
    target: CellTarget, cell: str, timeout_seconds: float, credentials: Credentials | None
) -> CellClient:
    from chubbypy.client.blocking import connect  # the global reactor: only when needed

    request_timeout_seconds = min(REQUEST_TIMEOUT_SECONDS_MAX, timeout_seconds)
    principal, token = credentials if credentials is not None else (None, None)
    tls: dict[str, Path] = {} if target.tls_ca is None else {"tls_ca": target.tls_ca}
    return connect(
        target.config or list(target.addresses),
        cell,
        timeout_seconds=timeout_seconds,
        request_timeout_seconds=request_timeout_seconds,
        principal=principal,
        token=token,
        **tls,
    )


SERVER_COMMANDS: Final = {
    "serve": ("chubbypy.server", "serve_main"),
    "cell": ("chubbypy._cli_cell", "cell_main"),
    "web": ("chubbypy.web", "web_main"),
}


def _run_server(args: argparse.Namespace, stderr: IO[str]) -> int:
    """``serve`` lives in `chubbypy.server`, ``cell`` in `chubbypy._cli_cell` and ``web`` in
    `chubbypy.web`, imported only for them."""
    module, entry_name = SERVER_COMMANDS[args.command]
    try:
        entry = getattr(importlib.import_module(module), entry_name)
    except (ImportError, AttributeError) as error:
        print(
            f"chubbypy {args.command}: the server is not available in this installation "
            f"({module}.{entry_name}: {error})",
            file=stderr,
        )
        return EXIT_USAGE
    return int(entry(args))


# ----------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """The ``chubbypy`` argument parser, with every command."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the command's parser.
    common.add_argument(
        "--cell",
        default=argparse.SUPPRESS,
        metavar="CELL",
        help=f"a cell YAML file, or [NAME@]ADDRESS[,ADDRESS...] (default: ${CELL_VARIABLE}, "
        f"then {DEFAULT_CONFIG})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    common.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"give up after this long without a master (default {TIMEOUT_SECONDS_DEFAULT:g})",
    )
    parser = argparse.ArgumentParser(
        prog="chubbypy",
        description="Browse, change and watch a chubbypy cell's namespace; run commands under "
        "its locks or as an election's leader; see its replicas and sessions.",
        epilog="Exit codes: 0 done, 1 refused by the cell (or a lock lost), 2 usage error, "
        "3 cell unavailable, 4 lock not acquired in time; status exits 1 when it found a "
        "problem (a replica unreachable, lagging or diverged; no master); lock and elect exit "
        "with their command's status otherwise.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_namespace_commands(commands, common)
    _add_lock_commands(commands, common)
    status = commands.add_parser(
        "status",
        parents=[common],
        help="every replica's state, and the cell's problems (exit 1 if any)",
    )
    status.add_argument("replica", nargs="?", help="only this replica (an id or an address)")
    status.add_argument(
        "--lag-max",
        type=_entries,
        default=LAG_MAX_DEFAULT,
        metavar="ENTRIES",
        help="a replica whose applied index trails the most advanced one's by more is a "
        f"problem (default {LAG_MAX_DEFAULT})",
    )
    sessions = commands.add_parser(
        "sessions", parents=[common], help="the cell's sessions (at the master), or end one"
    )
    sessions.add_argument(
        "--end",
        type=_session_id,
        metavar="ID",
        help="end this session: refused from now on, ended when its lease runs out "
        "(operators only)",
    )
    lock_info = commands.add_parser(
        "lock-info", parents=[common], help="a lock's holders, waiters and lock-delay"
    )
    lock_info.add_argument("path")
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    _add_snapshot_commands(commands, common)
    _add_member_commands(commands, common)
    complete = commands.add_parser("__complete", parents=[common])  # used by the scripts
    complete.add_argument("word", nargs="?", default="")
    _add_server_commands(commands)
    return parser


def _add_namespace_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    ls = commands.add_parser("ls", parents=[common], help="list a directory")
    ls.add_argument("path", nargs="?", default="", help="a directory (default: the cell root)")
    ls.add_argument("-l", dest="long", action="store_true", help="show metadata columns")
    commands.add_parser("stat", parents=[common], help="show a node's metadata").add_argument(
        "path"
    )
    cat = commands.add_parser("cat", parents=[common], help="print a file")
    cat.add_argument("path")
    cat.add_argument(
        "--raw",
        action="store_true",
        help="write the bytes as they are even to a terminal (default: escape control "
        "characters there)",
    )
    put = commands.add_parser("put", parents=[common], help="write a file")
    put.add_argument("path")
    put.add_argument("value", nargs="?", help='the contents (default, or "-": standard input)')
    only = put.add_mutually_exclusive_group()
    only.add_argument(
        "--if-generation",
        type=_generation,
        metavar="N",
        help="only if the file's content generation is N",
    )
    only.add_argument("--create-only", action="store_true", help="only if it does not exist")
    commands.add_parser("rm", parents=[common], help="delete a node").add_argument("path")
    mkdir = commands.add_parser("mkdir", parents=[common], help="create a directory")
    mkdir.add_argument("path")
    mkdir.add_argument("-p", "--parents", action="store_true", help="create missing parents")


def _add_lock_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    acl = commands.add_parser("acl", parents=[common], help="show or change a node's ACL names")
    acl_commands = acl.add_subparsers(dest="acl_command", required=True, metavar="get|set")
    acl_commands.add_parser("get", parents=[common], help="show them").add_argument("path")
    acl_set = acl_commands.add_parser("set", parents=[common], help="change them")
    acl_set.add_argument("path")
    for name in ("read", "write", "change"):
        acl_set.add_argument(f"--{name}", metavar="NAME", help=f"the {name} ACL's name")
    acl_set.add_argument(
        "--if-generation", type=_generation, metavar="N", help="only if the ACL generation is N"
    )
    watch = commands.add_parser("watch", parents=[common], help="print a node's events")
    watch.add_argument("path")
    watch.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    # lock and elect: --timeout is how long to wait for the lock (for the lead), so their
    # parsers take the other common options only.
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--cell", default=argparse.SUPPRESS, metavar="CELL", help="the cell (as for every command)"
    )
    waiting.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object when done",
    )
    waiting.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="give up (exit 4) if not acquired in this long (default: wait)",
    )
    waiting.add_argument(
        "--kill-after",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="after SIGTERM, SIGKILL a command that outlives a lost lock",
    )
    waiting.add_argument(
        "--lock-delay",
        type=_lock_delay,
        default=0.0,
        metavar="SECONDS",
        help="keep the lock from others this long if this process is lost",
    )
    lock = commands.add_parser(
        "lock", parents=[waiting], help="run a command while holding a lock",
        usage="chubbypy lock [--shared] [--try] [--timeout S] [options] PATH -- CMD [ARGS...]",
    )  # fmt: skip
    lock.add_argument("path")
    lock.add_argument("--shared", action="store_true", help="a reader's (shared) lock")
    lock.add_argument(
        "--try", dest="try_only", action="store_true", help="exit 4 at once if the lock is held"
    )

    elect = commands.add_parser(
        "elect", parents=[waiting], help="run a command while leading an election",
        usage="chubbypy elect --id ID [--timeout S] [options] PATH -- CMD [ARGS...]",
    )  # fmt: skip
    elect.add_argument("path")
    elect.add_argument(
        "--id",
        dest="identity",
        required=True,
        metavar="ID",
        help="what this candidate advertises while it leads",
    )

    leader = commands.add_parser("leader", parents=[common], help="who leads an election")
    leader.add_argument("path")


def _add_member_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    member = commands.add_parser(
        "member", parents=[common], help="list or change the cell's members (replace a replica)"
    )
    actions = member.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="every member, its role and progress")
    add = actions.add_parser("add", parents=[common], help="add a new replica as a learner")
    promote = actions.add_parser("promote", parents=[common], help="make a learner a voter")
    remove = actions.add_parser("remove", parents=[common], help="remove a member")
    for parser in (add, promote, remove):
        parser.add_argument("replica_id", metavar="ID", type=_replica_id_argument)
        parser.add_argument(
            "--if-version", type=_version_argument, metavar="N",
            help="only if the membership is at version N (member list shows it)",
        )  # fmt: skip
    for option, who in (("--peer", "the other replicas"), ("--client", "clients")):
        add.add_argument(
            option, required=True, type=_address_argument, metavar="ADDRESS",
            help=f"where {who} reach it (host:port or an endpoint)",
        )  # fmt: skip
    promote.add_argument("--wait", type=float, metavar="SECONDS",
                         help="ask again while it is catching up, for this long")  # fmt: skip
    remove.add_argument("--force", action="store_true",
                        help="even if fewer live voters than a quorum would remain")  # fmt: skip


def _replica_id_argument(text: str) -> str:
    if not 1 <= len(text) <= REPLICA_ID_CHARS_MAX or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"a replica id is 1 to {REPLICA_ID_CHARS_MAX} printable characters"
        )
    return text


def _version_argument(text: str) -> int:
    try:
        version = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a version number") from None
    if not 1 <= version <= MEMBERSHIP_VERSION_MAX:
        raise argparse.ArgumentTypeError(f"a version is 1 to {MEMBERSHIP_VERSION_MAX}")
    return version


def _address_argument(text: str) -> str:
    try:
        client_endpoint_string(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not 1 <= len(text) <= MEMBER_ADDRESS_CHARS_MAX:
        raise argparse.ArgumentTypeError(
            f"an address is at most {MEMBER_ADDRESS_CHARS_MAX} characters"
        )
    return text


def _add_snapshot_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    snapshot = commands.add_parser(
        "snapshot", parents=[common], help="back the cell up to a file, or seed a new cell"
    )
    actions = snapshot.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = actions.add_parser(
        "save", parents=[common], help="save a snapshot of the cell (operators only)"
    )
    save.add_argument("file", help="the backup file to write (replaced atomically)")
    restore = actions.add_parser(
        "restore", parents=[common], help="seed a new cell's replica directory from a backup"
    )
    restore.add_argument("file", help="a backup file saved by snapshot save")
    restore.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="the replica's directory (DATA_DIR/<replica>), absent or empty",
    )
    restore.add_argument(
        "--rename-cell",
        action="store_true",
        help="restore another cell's backup into this cell, moving its names to /ls/<cell>",
    )


def _add_server_commands(commands: Any) -> None:
    # The same options as chubbypy.server's own parsers (serve_parser, cell_parser), which are
    # not imported here: the server's modules load only for these two commands.
    serve = commands.add_parser("serve", help="run one replica of a cell")
    serve.add_argument("--config", required=True, metavar="FILE", help="the cell's YAML file")
    serve.add_argument("--replica", required=True, metavar="ID", help="which replica to run")
    serve.add_argument(
        "--bootstrap",
        action="store_true",
        help="this replica's store is new because the cell is new (not because a disk was lost)",
    )
    serve.add_argument("--data-dir", type=Path, metavar="DIR", help="override the data_dir")
    cell = commands.add_parser("cell", help="run a whole cell on this machine")
    cell.add_argument("--config", metavar="FILE", help="the cell's YAML file")
    cell.add_argument(
        "--replicas",
        type=int,
        choices=(3, 5),
        default=3,
        help="3 (etc/cell.yaml) or 5 (etc/cell5.yaml) when no --config is given",
    )
    cell.add_argument("--data-dir", type=Path, metavar="DIR", help="override the data_dir")
    cell.add_argument(
        "--auto-tls",
        action="store_true",
        help="with a tls: section, create a cell CA and each replica's certificate if missing",
    )
    cell.add_argument(
        "--init",
        action="store_true",
        help="create the cell's missing keys (and certificates) and exit without starting",
    )
    cell.add_argument(
        "--no-web", action="store_true", help="do not start the web page (chubbypy web) beside it"
    )
    web = commands.add_parser("web", help="serve the cell's admin namespace browser")
    web.add_argument(
        "--config", metavar="FILE", help="the cell's YAML file (default etc/cell.yaml)"
    )
    web.add_argument(
        "--listen",
        metavar="ENDPOINT",
        help='a Twisted endpoint string (default: the cell file\'s web.listen, "tcp:7400:...")',
    )


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return seconds


def _session_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a session id (1 to {INT64_MAX})")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count of 1 or more")
    return int(text)


def _entries(text: str) -> int:
    if not text.isdigit() or int(text) > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of log entries (0 or more)")
    return int(text)


def _lock_delay(text: str) -> float:
    seconds = float(text) if text.replace(".", "", 1).isdigit() else -1.0
    if not 0 <= seconds <= LOCK_DELAY_SECONDS_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 0 to {LOCK_DELAY_SECONDS_MAX:g} seconds"
        )
    return seconds


def _generation(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a generation number (0 or more)")
    return int(text)


# ----------------------------------------------------------------------------- the cell


def find_cell(option: str | None, environ: Mapping[str, str], cwd: Path) -> CellTarget:
    """The cell named by `option`, else by ``$CHUBBY_CELL``, else by ``etc/cell.yaml``."""
    if option is not None:
        return parse_cell(option, "--cell")
    if environ.get(CELL_VARIABLE, "").strip():
        return parse_cell(environ[CELL_VARIABLE], f"${CELL_VARIABLE}")
    if (cwd / DEFAULT_CONFIG).is_file():
        return parse_cell(str(cwd / DEFAULT_CONFIG), str(DEFAULT_CONFIG))
    raise UsageError(
        f"no cell: give --cell (a cell YAML file or [NAME@]ADDRESS[,ADDRESS...]), set "
        f"{CELL_VARIABLE}, or run where {DEFAULT_CONFIG} exists"
    )


def parse_cell(value: str, origin: str) -> CellTarget:
    """A cell YAML file's path, or ``[NAME@]ADDRESS[,ADDRESS...]``; `origin` names the
    source of `value` in messages."""
    text = value.strip()
    if os.path.isfile(text) or text.endswith((".yaml", ".yml")):
        return _load_cell_file(text, origin)
    name, at, listed = text.rpartition("@") if "@" in text else ("", "", text)
    if at and not 1 <= len(name) <= CELL_CHARS_MAX:
        raise UsageError(f"{origin}: {name!r} is not a cell name")
    addresses = tuple(a.strip() for a in listed.split(",") if a.strip())
    if not addresses:
        raise UsageError(f"{origin}: no replica address in {value!r}")
    for address in addresses:
        try:
            client_endpoint_string(address)
        except ValueError as error:
            raise UsageError(f"{origin}: {error}") from None
    return CellTarget(addresses, name or None)


def _load_cell_file(path: str, origin: str) -> CellTarget:
    from chubbypy.config import ConfigError, load_config  # YAML only when a file is given

    try:
        config = load_config(path)
    except ConfigError as error:
        raise UsageError(f"{origin}: {error}") from None
    return CellTarget(tuple(r.client for r in config.replicas), config.cell, config)


def resolve_path(path: str, cell: str) -> str:
    """The full name of `path`: itself if it starts with ``/ls/``, else under the cell root."""
    if path == "/ls" or path.startswith("/ls/"):
        return path.rstrip("/") or "/"
    relative = path.removeprefix("./").strip("/")
    root = f"/ls/{cell}"
    return root if relative in ("", ".") else f"{root}/{relative}"


def _path_cell(path: str) -> str | None:
    """The cell a full name ``/ls/<cell>/...`` names; None for a relative path."""
    parts = path.split("/")
    return parts[2] if path.startswith("/ls/") and parts[2] else None


def _invocation(args: argparse.Namespace, target: CellTarget, stdin: BinaryIO) -> Invocation:
    given = getattr(args, "path", None)
    named = None if given is None else _path_cell(given)
    if target.name is not None and named is not None and named != target.name:
        raise UsageError(f"{given} is in cell {named!r}, but the cell given is {target.name!r}")
    cell = target.name or named or DEFAULT_CELL_NAME
    path = None if given is None else resolve_path(given, cell)
    return Invocation(args, path, cell, stdin)


# ----------------------------------------------------------------------------- commands


def _ls(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    entries = client.list_dir(path)
    document = {
        "path": path,
        "entries": [
            {
                "name": e.name,
                "path": f"{path}/{e.name}",
                "stat": None if e.stat is None else stat_json(e.stat),
            }
            for e in entries
        ],
    }
    if call.args.long:
        rows = [["MODE", "SIZE", "GENERATION", "INSTANCE", "NAME"]]
        rows += [[*_columns(e.stat), _shown_name(e)] for e in entries]
        return Outcome(document, _table(rows, right=(1, 2, 3)))
    return Outcome(document, "".join(f"{_shown_name(e)}\n" for e in entries).encode())


def _stat(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    stat = client.get_stat(path)
    acl = stat.acl
    lines = [
        ("path", path),
        ("type", "directory" if stat.is_directory else "file"),
        ("ephemeral", "yes" if stat.ephemeral else "no"),
        ("size", str(stat.size)),
        ("instance", str(stat.instance)),
        ("content_generation", str(stat.content_generation)),
        ("lock_generation", str(stat.lock_generation)),
        ("acl_generation", str(stat.acl_generation)),
        ("checksum", f"{stat.checksum:#018x}"),
        ("acl", shown(f"read={acl.read} write={acl.write} change={acl.change}")),
    ]
    text = "".join(f"{key:<20}{value}\n" for key, value in lines)
    return Outcome({"path": path, "stat": stat_json(stat)}, text.encode())


def _cat(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    read = client.get_contents_and_stat(path)
    document = {"path": path, "contents": bytes_json(read.contents), "stat": stat_json(read.stat)}
    return Outcome(document, read.contents)


def _put(client: CellClient, call: Invocation) -> Outcome:
    path, args = _path(call), call.args
    value = args.value
    contents = call.stdin.read() if value is None or value == "-" else os.fsencode(value)
    if args.create_only:
        stat, created = client.create(path, contents), True
    elif args.if_generation is not None:
        stat, created = client.set_contents(path, contents, args.if_generation), False
    else:
        stat, created = _set_or_create(client, path, contents)
    return Outcome({"path": path, "created": created, "stat": stat_json(stat)})


def _set_or_create(client: CellClient, path: str, contents: bytes) -> tuple[Stat, bool]:
    """Replace the file's contents, or create it if it is missing (whichever is true when
    the write reaches the cell); whether it was created."""
    for _ in range(PUT_ATTEMPTS_MAX - 1):
        try:
            return client.set_contents(path, contents), False
        except NoSuchNode:
            pass
        try:
            return client.create(path, contents), True
        except NodeExists:
            continue  # created by someone else meanwhile: set it after all
    return client.set_contents(path, contents), False


def _rm(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    client.delete(path)
    return Outcome({"path": path, "deleted": True})


def _mkdir(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    if not call.args.parents:
        stat = client.create(path, directory=True)
        return Outcome({"path": path, "created": [path], "stat": stat_json(stat)})
    created, last = _make_parents(client, path, f"/ls/{call.cell}")
    return Outcome({"path": path, "created": created, "stat": stat_json(last)})


def _make_parents(client: CellClient, path: str, root: str) -> tuple[list[str], Stat]:
    """Create each missing directory from the root down to `path` (like ``mkdir -p``); the
    names created and `path`'s metadata."""
    below = path.removeprefix(root + "/").split("/") if path.startswith(root + "/") else []
    created: list[str] = []
    last = client.get_stat(path) if not below else None
    for depth in range(1, len(below) + 1):
        name = "/".join([root, *below[:depth]])
        try:
            last = client.create(name, directory=True)
            created.append(name)
        except NodeExists:
            last = client.get_stat(name)
            if not last.is_directory:
                raise NotADirectory(f"{name} exists and is a file") from None
    assert last is not None
    return created, last


def _status(client: CellClient, call: Invocation) -> Outcome:
    reports = client.status(call.args.replica)
    master = next(
        (r.status.replica_id for r in reports if r.status and r.status.role == "master"), None
    )
    lag_max = call.args.lag_max
    problems = status_problems(reports, lag_max, whole_cell=call.args.replica is None)
    document = {
        "master": master,
        "replicas": [report_json(r) for r in reports],
        "problems": [problem_json(p) for p in problems],
        "lag_max": lag_max,
    }
    rows = [["REPLICA", "ADDRESS", "ROLE", "EPOCH", "CHOSEN", "APPLIED", "FIRST", "LAST"]]
    rows[0] += ["LEASE", "MASTER"]
    rows += [_status_row(report) for report in reports]
    # An unreachable replica's problem names its address already; its id, when known, is added.
    notes = [shown(f"{p.replica_id}: {p.message}" if p.replica_id else p.message) for p in problems]
    notes = [note + "\n" for note in notes]
    text = _table(rows, right=(3, 4, 5, 6, 7, 8)) + "".join(notes).encode()
    failure = None
    if not any(r.reachable for r in reports):
        failure = Failed("UNAVAILABLE", "no replica answered", EXIT_UNAVAILABLE)
    elif problems:
        failure = Failed("UNHEALTHY", summary(problems), EXIT_FAILED)
    return Outcome(document, text, failure=failure)


def _status_row(report: ReplicaReport) -> list[str]:
    where = [shown(report.replica_id or "?"), shown(display_address(report.address))]
    status = report.status
    if status is None:
        return [*where, "unreachable", *["-"] * 7]
    lease = f"{status.lease_remaining_ms / 1000:.1f}s" if status.lease_valid else "-"
    indexes = (status.chosen_index, status.applied_index, status.first_index, status.last_index)
    master = status.master_hint or "-"
    texts = [*where, status.role, str(status.epoch), *map(str, indexes), lease, master]
    return [shown(text) for text in texts]


def _acl(client: CellClient, call: Invocation) -> Outcome:
    path, args = _path(call), call.args
    warnings: tuple[str, ...] = ()
    if args.acl_command == "set":
        given = {name: getattr(args, name) for name in ("read", "write", "change")}
        if not any(given.values()):
            raise ValueError("name at least one of --read, --write, --change")
        stat = _set_acl(client, path, given, args.if_generation)
        warnings = _unknown_acl_names(client, call.cell, given)
    else:
        stat = client.get_stat(path)
    acl = stat.acl
    names = shown(f"read={acl.read} write={acl.write} change={acl.change}")
    text = f"{names} (generation {stat.acl_generation})\n"
    document = {"path": path, "acl": stat_json(stat)["acl"], "acl_generation": stat.acl_generation}
    return Outcome(document, text.encode(), warnings)


def _set_acl(
    client: CellClient, path: str, given: dict[str, str | None], if_generation: int | None
) -> Stat:
    """Set the ACL names given, keeping the others. All three given: nothing is read. Else
    the current names are read, from the node if the caller may read it, otherwise from
    a handle opened for CHANGE_ACL alone (which needs change permission only, as the
    change itself does): so an operator who set a read ACL that admits no one can still
    set it back."""
    if all(given.values()):
        return client.set_acl(path, AclNames(**given), if_generation)  # type: ignore[arg-type]
    try:
        stat = client.get_stat(path)
    except PermissionDenied:
        with client.open(path, mode=HandleMode.CHANGE_ACL) as handle:
            stat = handle.stat
            wanted, expected = _wanted_acl(stat, given, if_generation)
            return handle.set_acl(wanted, expected)
    wanted, expected = _wanted_acl(stat, given, if_generation)
    return client.set_acl(path, wanted, expected)


def _wanted_acl(
    stat: Stat, given: dict[str, str | None], if_generation: int | None
) -> tuple[AclNames, int]:
    """The names to set, and the ACL generation to expect (the one read, unless given)."""
    wanted = AclNames(**{k: v or getattr(stat.acl, k) for k, v in given.items()})
    return wanted, stat.acl_generation if if_generation is None else if_generation


def _unknown_acl_names(
    client: CellClient, cell: str, given: dict[str, str | None]
) -> tuple[str, ...]:
    """A warning for each ACL name given that has no file (`acl_files_needed`)."""
    warnings = []
    for needed in acl_files_needed(cell, given):
        try:
            found: Stat | None = client.get_stat(needed.path)
        except NoSuchNode:
            found = None
        except ChubbyError:
            continue  # unreadable or unreachable: it may well exist
        warning = needed.warning(found)
        if warning is not None:
            warnings.append(warning)
    return tuple(warnings)


def _leader(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    try:
        contents = client.get_contents_and_stat(path).contents
    except NoSuchNode:
        contents = b""
    leader = contents.decode(errors="replace") or None
    if leader is None:
        raise NoLeader(f"{path}: no leader (no one has won, or the last one resigned)")
    return Outcome({"path": path, "leader": leader}, f"{shown(leader)}\n".encode())


class NoLeader(ChubbyError):
    """``chubbypy leader`` found no leader: exit code 1."""

    code = ErrorCode.NO_SUCH_NODE


def _sessions(client: CellClient, call: Invocation) -> Outcome:
    if call.args.end is not None:
        return _end_session(client, call.args.end)
    sessions = client.list_sessions()
    document = {"sessions": [session_json(s) for s in sessions]}
    rows = [["SESSION", "STATE", "LEASE", "HANDLES", "LOCKS", "EPHEMERAL", "PRINCIPAL", "CLIENT"]]
    for info in sessions:
        locks = ",".join(f"{p}({m[0]})" for p, m in info.locks) or "-"
        if info.lock_count > len(info.locks):
            locks += f",+{info.lock_count - len(info.locks)}"
        rows.append([str(info.session_id), shown(info.state),
                     f"{info.lease_remaining_ms / 1000:.1f}s", str(info.handles), shown(locks),
                     str(info.ephemeral_count), shown(info.principal or "-"),
                     shown(info.name)])  # fmt: skip
    return Outcome(document, _table(rows, right=(2, 3, 5)))


def _end_session(client: CellClient, session_id: int) -> Outcome:
    """``sessions --end ID``: end the session, saying when; a warning if it was ending
    already or there was none to end."""
    ending = client.end_session(session_id)
    document = {"session_id": session_id, "found": ending.found, "already": ending.already,
                "ends_in_ms": ending.ends_in_ms}  # fmt: skip
    ends = f"it ends when its lease runs out, in {ending.ends_in_ms / 1000:.1f}s"
    if not ending.found:
        warning = (
            f"session {session_id} was not in the cell: it had ended already, or there never "
            "was such a session"
        )
        return Outcome(document, warnings=(warning,))
    if ending.already:
        return Outcome(document, warnings=(f"session {session_id} was ending already: {ends}",))
    told = f"session {session_id} ending: its client is refused from now on; {ends}\n"
    return Outcome(document, told.encode())


def _lock_info(client: CellClient, call: Invocation) -> Outcome:
    path = _path(call)
    info = client.lock_info(path)
    lines = [
        ("path", path),
        ("mode", info.mode),
        ("instance", str(info.instance)),
        ("lock_generation", str(info.lock_generation)),
        ("lock_delay_left", f"{info.lock_delay_remaining_ms / 1000:.1f}s"),
        ("holders", _counted(len(info.holders), info.holder_count)),
        ("waiters", _counted(len(info.waiters), info.waiter_count)),
    ]
    text = "".join(f"{key:<20}{shown(value)}\n" for key, value in lines)
    if info.holders:
        rows = [["HOLDER", "MODE", "LOCK-DELAY", "PRINCIPAL", "CLIENT"]]
        rows += [[str(h.session_id), h.mode, f"{h.lock_delay_ms / 1000:.1f}s",
                  shown(h.principal or "-"), shown(h.client)] for h in info.holders]  # fmt: skip
        text += "\n" + _table(rows, right=(2,)).decode()
    if info.waiters:
        rows = [["#", "WAITER", "MODE", "WAITED", "PRINCIPAL", "CLIENT"]]
        rows += [[str(n), str(w.session_id), w.mode, f"{w.waited_ms / 1000:.1f}s",
                  shown(w.principal or "-"), shown(w.client)]
                 for n, w in enumerate(info.waiters, start=1)]  # fmt: skip
        text += "\n" + _table(rows, right=(0, 3)).decode()
    return Outcome({"path": path, "lock": lock_json(info)}, text.encode())


def _counted(listed: int, count: int) -> str:
    """How many there are, and how many of them are listed when not all are."""
    return str(count) if listed == count else f"{count} (the first {listed} listed)"


def _complete(client: CellClient, call: Invocation) -> Outcome:
    """Names under the directory of the word being completed (for the shell scripts)."""
    word = call.args.word
    directory, _, start = word.rpartition("/")
    full = resolve_path(directory, call.cell) if directory else f"/ls/{call.cell}"
    try:
        entries = client.list_dir(full)
    except ChubbyError:
        entries = ()
    prefix = f"{directory}/" if directory or word.startswith("/") else ""
    names = [shown(prefix) + _shown_name(e) for e in entries if e.name.startswith(start)]
    return Outcome({"completions": names}, "".join(f"{n}\n" for n in names).encode())


COMMANDS: Final[dict[str, Callable[[CellClient, Invocation], Outcome]]] = {
    "ls": _ls,
    "stat": _stat,
    "cat": _cat,
    "put": _put,
    "rm": _rm,
    "mkdir": _mkdir,
    "status": _status,
    "acl": _acl,
    "leader": _leader,
    "sessions": _sessions,
    "lock-info": _lock_info,
    "__complete": _complete,
}
LASTING: Final = frozenset({"watch", "lock", "elect"})
"""Commands that last and print as they go (`chubbypy._cli_hold`)."""
COMPLETION_SECONDS: Final = 2.0
"""How long a shell's completion may wait for the cell before completing nothing."""


def completion_script(shell: str) -> str:
    """A bash or zsh script that completes commands, options and the cell's names."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = sorted(name for name in subparsers.choices if not name.startswith("__"))
    options = {
        name: sorted(o for a in sub._actions for o in a.option_strings)
        for name, sub in subparsers.choices.items()
    }
    cases = "".join(
        f'        {name}) opts="{" ".join(opts)}" ;;\n' for name, opts in sorted(options.items())
    )
    script = _BASH_COMPLETION.format(commands=" ".join(commands), cases=cases)
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


_BASH_COMPLETION = """# chubbypy completion: eval "$(chubbypy completion bash)" (or zsh)
_chubbypy() {{
    local cur command opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    command="${{COMP_WORDS[1]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=( $(compgen -W "{commands}" -- "$cur") )
        return
    fi
    case "$command" in
{cases}        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
        return
    fi
    case "$command" in
        ls|stat|cat|put|rm|mkdir|acl|watch|lock|elect|leader|lock-info)
            local IFS=$'\\n'
            COMPREPLY=( $(chubbypy __complete "$cur" 2>/dev/null) )
            compopt -o nospace 2>/dev/null
            ;;
    esac
}}
complete -F _chubbypy chubbypy
"""

# ----------------------------------------------------------------------------- output


def stat_json(stat: Stat) -> dict[str, Any]:
    """A `Stat` as the documented STAT object."""
    return {
        "instance": stat.instance,
        "content_generation": stat.content_generation,
        "lock_generation": stat.lock_generation,
        "acl_generation": stat.acl_generation,
        "checksum": stat.checksum,
        "size": stat.size,
        "is_directory": stat.is_directory,
        "ephemeral": stat.ephemeral,
        "acl": {"read": stat.acl.read, "write": stat.acl.write, "change": stat.acl.change},
    }


def status_json(status: ReplicaStatus) -> dict[str, Any]:
    """A `ReplicaStatus` as the documented STATUS object."""
    return {
        "role": status.role,
        "epoch": status.epoch,
        "promised": status.promised,
        "chosen_index": status.chosen_index,
        "applied_index": status.applied_index,
        "first_index": status.first_index,
        "last_index": status.last_index,
        "snapshot_index": status.snapshot_index,
        "serving": status.serving,
        "lease_valid": status.lease_valid,
        "lease_remaining_ms": status.lease_remaining_ms,
        "master_hint": status.master_hint,
        "uptime_ms": status.uptime_ms,
        "checksum_mismatches": status.checksum_mismatches,
        "member_role": status.member_role,
        "membership_version": status.membership_version,
    }


def report_json(report: ReplicaReport) -> dict[str, Any]:
    """One replica of ``status``'s "replicas" list."""
    return {
        "replica_id": report.replica_id,
        "address": display_address(report.address),
        "reachable": report.reachable,
        "problem": report.problem,
        "status": None if report.status is None else status_json(report.status),
    }


def bytes_json(data: bytes) -> dict[str, str]:
    """Bytes as UTF-8 text when they are valid UTF-8, else as base64; the encoding named."""
    try:
        return {"encoding": "utf-8", "data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii")}


def write_json(stdout: BinaryIO, document: dict[str, Any]) -> None:
    stdout.write(json_text(document, indent=2).encode() + b"\n")
    stdout.flush()


def _table(rows: list[list[str]], right: tuple[int, ...] = ()) -> bytes:
    """Rows as aligned columns: numbers (columns in `right`) to the right, text to the left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines).encode()


def _columns(stat: Stat | None) -> list[str]:
    """``ls -l``'s MODE, SIZE, GENERATION and INSTANCE; "?" where the cell showed the name
    only (the caller may not read that child)."""
    if stat is None:
        return ["?"] * 4
    mode = ("d" if stat.is_directory else "-") + ("e" if stat.ephemeral else "-")
    return [mode, str(stat.size), str(stat.content_generation), str(stat.instance)]


def _shown_name(entry: DirEntry) -> str:
    name = shown(entry.name)
    return name + "/" if entry.stat is not None and entry.stat.is_directory else name


def _path(call: Invocation) -> str:
    assert call.path is not None, call.args.command
    return call.path
