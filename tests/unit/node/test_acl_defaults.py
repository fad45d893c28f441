"""Issue 13's ACL defaults and quotas on one replica node: the master makes a protected ACL
directory, anonymous clients cannot edit ACL files or list sessions, a listing hides a
protected child's metadata, and plain writes carry their principal into the log, where
quotas hold on every replica alike."""

from __future__ import annotations

from chubbypy.namespace import NamespaceLimits, acl_path
from chubbypy.node import NoteLevel, Persist, SendPeer
from chubbypy.protocol.client import ReadReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Listing,
    ReadDir,
    SetContents,
    Written,
)
from chubbypy.protocol.session import ListSessions
from tests.unit.node.harness import CELL, MEMBERS, R1, ROOT, Cell

OPERATOR = ("operator",)


def serving(**options: object) -> Cell:
    cell = Cell(**options)  # type: ignore[arg-type]
    cell.elect(R1)
    cell.run(2)
    return cell


def test_a_new_cell_s_acl_files_cannot_be_edited_by_anonymous_clients() -> None:
    """The first master makes acl/ and acl/admin (listing the operator) on every replica;
    an anonymous client's edit or creation of an ACL file is refused PERMISSION_DENIED
    before it costs a log entry, and ListSessions is refused to it."""
    cell = serving(admins=OPERATOR)
    for rid in MEMBERS:
        admin = cell.nodes[rid].machine.tree.get(acl_path(CELL, "admin"))
        assert admin is not None
        assert b"\noperator\n" in admin.contents
    client = cell.connect(R1)
    client_id = cell.register(client)
    mark = cell.mark()
    for sequence, write in enumerate(
        [
            SetContents(acl_path(CELL, "admin"), b"anonymous\n"),
            Create(acl_path(CELL, "all"), contents=b"anonymous\n"),
        ],
        start=1,
    ):
        request_id = client.write(client_id, sequence, write)
        cell.settle()
        assert client.code(request_id) is ErrorCode.PERMISSION_DENIED
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    listing = client.call(ListSessions())
    cell.settle()
    assert client.code(listing) is ErrorCode.PERMISSION_DENIED


def test_a_master_warns_of_an_acl_directory_made_before_the_defaults() -> None:
    """A cell whose acl/ directory inherited 'all' (made before) is left as it is, and its
    master says so at a WARN level when it starts serving."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.written(client, client_id, 1, Create(f"{ROOT}/acl", is_directory=True))
    cell.resign(R1)
    cell.run(200)
    master = cell.master()
    warnings = [n for n in cell.notes(master, NoteLevel.WARN) if "ACL defaults" in n]
    assert warnings
    assert "'all'" in warnings[-1]


def test_a_listing_shows_names_alone_for_children_the_reader_may_not_read() -> None:
    """A ReadDir through the node, as anonymous, names a child guarded by an ACL that does
    not admit it but shows no metadata for it."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.written(client, client_id, 1, Create(f"{ROOT}/acl", is_directory=True))
    cell.written(client, client_id, 2, Create(acl_path(CELL, "ops"), contents=b"operator\n"))
    guarded = AclNames("ops", "ops", "ops")
    cell.written(client, client_id, 3, Create(f"{ROOT}/secret", contents=b"s", acl=guarded))
    request_id = client.read(ReadDir(ROOT))
    reply = client.reply(request_id)
    assert isinstance(reply, ReadReply)
    assert isinstance(reply.result, Listing)
    stats = {entry.name: entry.stat for entry in reply.result.entries}
    assert stats["secret"] is None
    assert stats["acl"] is not None


def test_plain_writes_are_charged_to_their_principal_on_every_replica() -> None:
    """A plain write's log command carries its connection's principal: every replica
    charges it; past the quota the master refuses RESOURCE_EXHAUSTED naming the key and
    proposes nothing."""
    limits = NamespaceLimits(nodes_per_principal_max=2)
    cell = serving(namespace_limits=limits)
    client = cell.connect(R1)
    client_id = cell.register(client)
    for sequence in (1, 2):
        reply = cell.written(client, client_id, sequence, Create(f"{ROOT}/f{sequence}"))
        assert isinstance(reply.result, Written)
    cell.run(5)
    for rid in MEMBERS:
        assert cell.nodes[rid].machine.tree.usage("anonymous").nodes == 2
    mark = cell.mark()
    request_id = client.write(client_id, 3, Create(f"{ROOT}/f3"))
    cell.settle()
    error = client.error(request_id)
    assert error.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "limits.nodes_per_principal_max" in error.message
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    assert cell.nodes[R1].machine.tree.get(f"{ROOT}/f3") is None
