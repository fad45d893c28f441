"""Authentication and ACLs (Chubby §2.3) against a live three-replica cell: principals
prove themselves with their token; ACL files in /ls/<cell>/acl decide who may read, write,
open and lock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chubbypy.client import Session
from chubbypy.client.blocking import running_reactor
from chubbypy.protocol.errors import PermissionDenied
from chubbypy.protocol.namespace import AclNames
from tests.integration.harness import LiveCell
from tests.integration.test_sessions import on_reactor

ALICE = ("alice", "alice's token, long enough")
AUTH = {"principals": {ALICE[0]: ALICE[1]}, "admins": [ALICE[0]]}
"""alice is the cell's operator: the ACL directory the cell makes is hers to write."""


def alice(cell: LiveCell) -> dict[str, str]:
    return {"principal": ALICE[0], "token": ALICE[1]}


def test_acl_files_decide_who_reads_writes_opens_and_locks(
    make_cell: Callable[..., LiveCell],
) -> None:
    """A directory guarded by ACL 'admins' (alice): anonymous clients may not read, write,
    open it for writing or lock in it; alice may; a wrong token is refused."""
    cell = make_cell(auth=AUTH)
    admin = cell.client(**alice(cell))
    admin.create(cell.path("acl/admins"), b"alice\n")
    admin.create(cell.path("jobs"), directory=True, acl=AclNames("admins", "admins", "admins"))
    admin.create(cell.path("jobs/nightly"), b"plan")
    anonymous = cell.client()
    with pytest.raises(PermissionDenied):
        anonymous.get_contents_and_stat(cell.path("jobs/nightly"))
    with pytest.raises(PermissionDenied):
        anonymous.set_contents(cell.path("jobs/nightly"), b"mine")
    with pytest.raises(PermissionDenied):
        anonymous.create(cell.path("jobs/other"))
    assert admin.get_contents_and_stat(cell.path("jobs/nightly")).contents == b"plan"

    stranger = on_reactor(
        lambda: Session.open(anonymous._cell, running_reactor())  # type: ignore[arg-type]
    )
    with pytest.raises(PermissionDenied):
        on_reactor(lambda: stranger.open_handle(cell.path("jobs/nightly")))
    with pytest.raises(PermissionDenied):
        on_reactor(lambda: stranger.get_stat(cell.path("jobs/nightly")))
    owner = on_reactor(
        lambda: Session.open(admin._cell, running_reactor())  # type: ignore[arg-type]
    )
    handle = on_reactor(lambda: owner.open_handle(cell.path("jobs/nightly")))
    assert on_reactor(lambda: handle.acquire())

    with pytest.raises(PermissionDenied):
        cell.client(principal="alice", token="not alice's token at all").get_stat(cell.path())


def test_a_cell_without_anonymous_access_refuses_unauthenticated_clients(
    make_cell: Callable[..., LiveCell],
) -> None:
    """auth.anonymous false: only authenticated clients are served; the CLI says which
    variables to set."""
    cell = make_cell(auth={**AUTH, "anonymous": False})
    with pytest.raises(PermissionDenied):
        cell.client(timeout_seconds=5).get_stat(cell.path())
    assert cell.client(**alice(cell)).get_stat(cell.path()).is_directory
    refused = cell.cli("stat", cell.path())
    assert refused.code != 0
    assert "hint: set CHUBBY_PRINCIPAL and CHUBBY_TOKEN_FILE" in refused.stderr, refused.stderr
