"""The master's part of issue 13's ACL defaults and quotas: it makes a new cell's ACL
directory, refuses sessions' unprintable names, lets a handle opened for CHANGE_ACL alone
change ACL names, and proposes a call's writes for its principal (quotas)."""

from __future__ import annotations

from chubbypy.master import Done, HandleOpened
from chubbypy.namespace import ADMIN, PROTECTED_ACL, NamespaceLimits, acl_path, admits
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    InSession,
    MultiOp,
    SetAcl,
    SetContents,
)
from chubbypy.protocol.session import HandleMode
from tests.unit.master.harness import CELL, ROOT, RW, Cell

OPERATORS = ("operator", "ops2")


def test_a_master_makes_a_missing_acl_directory_listing_the_operators() -> None:
    """A master of a cell without acl/ proposes the protected ACL directory at once, as
    its own command (for no principal); acl/admin admits the operators alone."""
    cell = Cell(admins=OPERATORS)
    cell.settle()
    (proposal,) = cell.proposed
    assert isinstance(proposal.write, MultiOp)
    assert (proposal.token, proposal.principal) == (None, "")
    tree = cell.machine.tree
    directory = tree.get(f"{ROOT}/acl")
    assert directory is not None
    assert directory.acl == PROTECTED_ACL
    assert all(admits(tree, ADMIN, name) for name in OPERATORS)
    assert not admits(tree, ADMIN, "anonymous")


def test_a_master_leaves_an_existing_acl_directory_as_it_is() -> None:
    """The next master, and a master of a cell whose acl/ was made before, propose
    nothing for it."""
    cell = Cell(admins=OPERATORS)
    cell.settle()
    cell.fail_over()
    cell.settle()
    assert len(cell.proposed) == 1
    old = Cell()
    old.client_write(Create(f"{ROOT}/acl", is_directory=True))
    old.admins = OPERATORS
    old.fail_over()
    old.settle()
    assert old.proposed == []
    assert old.machine.tree.get(acl_path(CELL, ADMIN)) is None


def test_a_master_without_operators_makes_no_acl_directory() -> None:
    """MasterService without admins (unit tests, the simulator's default) proposes nothing."""
    cell = Cell()
    cell.settle()
    assert cell.proposed == []


def test_a_session_name_with_a_terminal_escape_is_refused_and_opens_nothing() -> None:
    """CreateSession with a control character (an escape sequence), a line break or a
    right-to-left override is refused BAD_REQUEST naming the character; nothing is
    proposed; a printable name (spaces, accents) is fine."""
    cell = Cell()
    for name in ("\x1b[2J\x1b[31mroot", "one\ntwo", "abc\u202edef"):
        token = cell.call("create_session", name)
        refused = cell.result(token)
        assert isinstance(refused, Failure)
        assert refused.code is ErrorCode.BAD_REQUEST
        assert "printable" in refused.message
    assert cell.proposed == []
    assert cell.machine.tree.sessions() == []
    assert cell.ok("create_session", "chubbypy@hôte:42 (night job)")


def test_a_handle_opened_for_change_acl_alone_changes_acl_names() -> None:
    """SetAcl needs a handle opened for CHANGE_ACL, not one for WRITE: an operator whose
    read and write ACLs admit no one can still repair the node's ACL names; a
    CHANGE_ACL-only handle cannot write contents."""
    cell = Cell()
    cell.client_write(Create(f"{ROOT}/acl", is_directory=True))
    cell.client_write(Create(acl_path(CELL, "ops"), contents=b"ops\n"))
    locked = AclNames("nosuchacl", "nosuchacl", "ops")
    cell.client_write(Create(f"{ROOT}/f", contents=b"x", acl=locked))
    session = cell.session()
    denied = cell.result(cell.call("open", session, f"{ROOT}/f", HandleMode.READ, principal="ops"))
    assert isinstance(denied, Failure)
    assert denied.code is ErrorCode.PERMISSION_DENIED
    opened = cell.ok("open", session, f"{ROOT}/f", HandleMode.CHANGE_ACL, principal="ops")
    assert isinstance(opened, HandleOpened)
    assert (opened.stat.acl, opened.stat.acl_generation) == (locked, 1)
    written = cell.code("write", opened.handle, SetContents(f"{ROOT}/f", b"y"))
    assert written is ErrorCode.PERMISSION_DENIED
    repaired = AclNames("all", "nosuchacl", "ops")
    done = cell.ok("write", opened.handle, SetAcl(f"{ROOT}/f", repaired, 1), principal="ops")
    assert isinstance(done, Done)
    assert done.stat is not None
    assert done.stat.acl == repaired


def test_a_session_s_writes_are_proposed_for_its_principal_and_held_to_its_quota() -> None:
    """An open that creates, and a handle write, are proposed for the caller's principal,
    who is charged; past its quota the master refuses RESOURCE_EXHAUSTED before proposing;
    an operator is exempt."""
    limits = NamespaceLimits(
        nodes_per_principal_max=2, bytes_per_principal_max=10, quota_exempt=frozenset({"op"})
    )
    cell = Cell(limits=limits)
    session = cell.session()
    handle = cell.open(session, "a", create=Create(f"{ROOT}/a"), principal="bob")
    proposal = cell.proposed[-1]
    assert isinstance(proposal.write, InSession)
    assert proposal.principal == "bob"
    assert cell.machine.tree.usage("bob").nodes == 1
    cell.ok("write", handle, SetContents(f"{ROOT}/a", b"x" * 10), principal="carol")
    proposed = len(cell.proposed)
    grow = cell.result(cell.call("write", handle, SetContents(f"{ROOT}/a", b"x" * 11)))
    assert isinstance(grow, Failure)
    assert grow.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "limits.bytes_per_principal_max" in grow.message
    cell.open(session, "b", create=Create(f"{ROOT}/b"), principal="bob")
    proposed = len(cell.proposed)
    third = cell.call("open", session, f"{ROOT}/c", RW, create=Create(f"{ROOT}/c"),
                      principal="bob")  # fmt: skip
    refused = cell.result(third)
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "limits.nodes_per_principal_max" in refused.message
    assert len(cell.proposed) == proposed, "refused before it cost a log entry"
    assert cell.open(session, "c", create=Create(f"{ROOT}/c"), principal="op")
