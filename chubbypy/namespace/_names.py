"""Names and limits of the namespace. Pure: checks on strings, no state.

A name is a full path, ``/ls/<cell>/a/b`` (Chubby §2.3): ``/ls``, the cell, then components
separated by single slashes. The cell root ``/ls/<cell>`` is itself a name. Every check
returns a `Failure` value (STYLE §9), or None when the name is acceptable.

Components use the POSIX portable filename character set, ``[A-Za-z0-9._-]``: it needs no
quoting in a shell, a URL path or a YAML file, and it is ASCII, so a name's length in
characters is its length in bytes. ``.`` and ``..`` are refused because they would read as
relative names in every tool that shows a path. ACL names name files in the cell's ACL
directory (``/ls/<cell>/acl/<name>``), so an ACL name is held to the same rules as a
component.
"""

from __future__ import annotations

import re

from attrs import asdict, frozen

from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import AclNames

_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")


@frozen
class NamespaceLimits:
    """Every size bound of the namespace. Part of the replicated state machine's definition:
    every replica of a cell must use the same limits, or the same log gives different states."""

    file_bytes_max: int = 256 * 1024
    """Contents of one file (Chubby §4.5: "a file size limit of 256 kBytes")."""
    path_bytes_max: int = 1024
    """A whole name, ``/ls/<cell>`` included."""
    component_bytes_max: int = 255
    """One component of a name."""
    depth_max: int = 32
    """Components below the cell root: ``/ls/<cell>/a/b`` has depth 2."""
    readdir_entries_max: int = 1000
    """Entries in one ReadDir page; a larger limit is clamped to this."""
    multiop_operations_max: int = 64
    """Guard tests plus the operations of both branches of one MultiOp."""
    acl_name_bytes_max: int = 255
    """One ACL name."""
    session_answers_max: int = 64
    """Answers of one session's numbered calls kept for its retries (`SessionCalls`): a
    client with more calls unanswered than this may find an old one's answer dropped, and
    its retry refused STALE_REQUEST (never carried out twice)."""
    nodes_per_principal_max: int = 20_000
    """Nodes one principal may have created and not deleted (`chubbypy.namespace._quota`)."""
    bytes_per_principal_max: int = 32 * 1024 * 1024
    """Bytes of contents in the files one principal created."""
    quota_exempt: frozenset[str] = frozenset()
    """Principals no quota applies to: the cell's operators (``auth.admins``)."""

    def __attrs_post_init__(self) -> None:
        for name, value in asdict(self, recurse=False).items():
            assert not isinstance(value, int) or value >= 1, (name, value)


def cell_root(cell: str) -> str:
    """The name of a cell's root directory."""
    assert component_problem(cell, len(cell)) is None, cell
    return f"/ls/{cell}"


def parent_of(path: str) -> str:
    """The name of the directory that holds `path` (which is not a cell root)."""
    return path.rpartition("/")[0]


def base_name(path: str) -> str:
    """The last component of `path`."""
    return path.rpartition("/")[2]


def check_path(path: str, cell: str, limits: NamespaceLimits) -> Failure | None:
    """Why `path` is not a well-formed name in `cell` under `limits`, as an INVALID_NAME
    Failure; None if it is one."""
    problem = _path_problem(path, cell_root(cell), limits)
    return None if problem is None else Failure(ErrorCode.INVALID_NAME, f"{path!r:.80}: {problem}")


def _path_problem(path: str, root: str, limits: NamespaceLimits) -> str | None:
    if path != root and not path.startswith(root + "/"):
        return f"not a name in this cell: names start with {root}/"
    components = path[len(root) + 1 :].split("/") if path != root else []
    if len(components) > limits.depth_max:
        return f"{len(components)} components below the cell root; at most {limits.depth_max}"
    for position, component in enumerate(components):
        problem = component_problem(component, limits.component_bytes_max)
        if problem is not None:
            return f"component {position + 1} {problem}"
    if len(path) > limits.path_bytes_max:
        return f"{len(path)} bytes long; at most {limits.path_bytes_max}"
    return None


def component_problem(component: str, bytes_max: int) -> str | None:
    """Why `component` cannot be one component of a name, or None."""
    if not component:
        return "is empty (a doubled or trailing slash)"
    if component in (".", ".."):
        return f"is {component!r}; relative names are not allowed"
    if not _COMPONENT.fullmatch(component):
        return f"{component!r:.40} has a character outside [A-Za-z0-9._-]"
    if len(component) > bytes_max:
        return f"is {len(component)} bytes long; at most {bytes_max}"
    return None


def check_acl(acl: AclNames, limits: NamespaceLimits) -> Failure | None:
    """Why one of `acl`'s names cannot name a file in the ACL directory, as an INVALID_NAME
    Failure; None if all three can."""
    for role, name in (("read", acl.read), ("write", acl.write), ("change", acl.change)):
        problem = component_problem(name, limits.acl_name_bytes_max)
        if problem is not None:
            return Failure(ErrorCode.INVALID_NAME, f"the {role} ACL name {problem}")
    return None
