"""Operators list the cell's sessions (`Cell.list_sessions`) against a live three-replica
cell: what the master says of each session, and who may ask."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chubbypy.client import Session
from chubbypy.client.blocking import BlockingCell, running_reactor
from chubbypy.protocol.errors import PermissionDenied
from chubbypy.protocol.session import SessionInfo
from tests.integration.harness import LiveCell
from tests.integration.test_acl import ALICE, AUTH
from tests.integration.test_sessions import on_reactor


def named_session(client: BlockingCell, name: str) -> Session:
    """A new session of `client`'s cell that introduces itself as `name`."""
    return on_reactor(
        lambda: Session.open(client._cell, running_reactor(), name=name)  # type: ignore[arg-type]
    )


def list_sessions(client: BlockingCell) -> tuple[SessionInfo, ...]:
    return on_reactor(lambda: client._cell.list_sessions())


def test_a_session_holding_a_lock_and_an_ephemeral_file_is_listed_with_them(
    make_cell: Callable[..., LiveCell],
) -> None:
    """The listing shows a session's name, state, lease, handles, the lock it holds and
    the ephemeral file it owns; an idle session is listed with none of them."""
    cell = make_cell(auth={"admins": ["anonymous"]})  # every client may list
    client = cell.client()
    holder, idle = named_session(client, "holder"), named_session(client, "idle")
    lock, mine = cell.path("lock"), cell.path("mine")
    handle = on_reactor(lambda: holder.open_handle(lock, create=True))
    on_reactor(lambda: handle.acquire())
    on_reactor(lambda: holder.open_handle(mine, create=True, ephemeral=True))

    listed = list_sessions(cell.client())
    ids = [info.session_id for info in listed]
    assert ids == sorted(ids)
    by_id = {info.session_id: info for info in listed}
    held = by_id[holder.session_id]
    assert (held.name, held.state, held.handles) == ("holder", "live", 2)
    assert held.locks == ((lock, "exclusive"),)
    assert (held.ephemeral, held.ephemeral_count, held.lock_count) == ((mine,), 1, 1)
    assert 0 < held.lease_remaining_ms <= 60_000
    quiet = by_id[idle.session_id]
    assert (quiet.name, quiet.state) == ("idle", "live")
    assert (quiet.handles, quiet.locks, quiet.ephemeral) == (0, (), ())


def test_a_principal_the_admin_acl_does_not_admit_may_not_list_sessions(
    make_cell: Callable[..., LiveCell],
) -> None:
    """The listing shows clients' names and what they hold: an anonymous client's listing
    is refused PermissionDenied, while alice, the cell's operator (in acl/admin), gets
    every session."""
    cell = make_cell(auth=AUTH)
    admin = cell.client(principal=ALICE[0], token=ALICE[1])
    session = named_session(admin, "alice's")
    with pytest.raises(PermissionDenied):
        list_sessions(cell.client())
    listed = list_sessions(admin)
    assert [(info.session_id, info.name) for info in listed] == [(session.session_id, "alice's")]
