"""Plain clients bound to their owner: a registration answers with a credential, and a
write naming a client without its credential is refused before anything else, changing
nothing (issue 12: a guessed client id spent the victim's sequence numbers)."""

from __future__ import annotations

import pytest

from chubbypy.node import NoteLevel, Persist, SendPeer
from chubbypy.protocol import MASTER_CLIENT, ClientId
from chubbypy.protocol.client import Registered, WriteReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Create, GetContentsAndStat, SetContents
from chubbypy.sessions import client_credential, client_credential_matches, session_credential
from tests.unit.node.harness import HANDLE_KEY, R1, R2, ROOT, Cell, metric

FILE = f"{ROOT}/f"


def serving() -> Cell:
    cell = Cell()
    cell.elect(R1)
    return cell


def wrong_credentials(victim: ClientId, attacker: ClientId) -> dict[str, bytes]:
    """What an attacker may show for `victim`: its own credential, a guess, another
    domain's MAC of the same number, another key's."""
    return {
        "the attacker's own": client_credential(attacker, HANDLE_KEY),
        "zeros": bytes(16),
        "the session credential of the same number": session_credential(victim, HANDLE_KEY),
        "under another key": client_credential(victim, b"k" * 32),
    }


def test_a_registration_answers_with_the_clients_credential() -> None:
    """Registered carries a credential that is the new client's and no other's."""
    cell = serving()
    client = cell.connect(R1)
    request_id = client.register(5)
    cell.settle()
    reply = client.reply(request_id)
    assert isinstance(reply, Registered)
    assert client_credential_matches(reply.client_id, reply.credential, HANDLE_KEY)
    assert not client_credential_matches(
        ClientId(reply.client_id + 1), reply.credential, HANDLE_KEY
    )


@pytest.mark.parametrize(
    "shown",
    [
        "the attacker's own",
        "zeros",
        "the session credential of the same number",
        "under another key",
    ],
)
def test_a_write_naming_another_client_is_refused_and_changes_nothing(shown: str) -> None:
    """Writes as the victim with a wrong credential, at the victim's next sequences, are
    refused PERMISSION_DENIED with nothing proposed and one WARN note; the victim's own
    writes at those sequences then apply."""
    cell = serving()
    victim_on, attacker_on = cell.connect(R1), cell.connect(R1, peer="attacker's host")
    victim, attacker = cell.register(victim_on, nonce=1), cell.register(attacker_on, nonce=2)
    cell.written(victim_on, victim, 1, Create(FILE, contents=b"v1"))
    credential = wrong_credentials(victim, attacker)[shown]
    mark = cell.mark()
    for sequence in (2, 3):
        request_id = attacker_on.write(victim, sequence, SetContents(FILE, b"evil"),
                                       credential=credential)  # fmt: skip
        assert attacker_on.code(request_id) is ErrorCode.PERMISSION_DENIED
    cell.settle()
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    (warning,) = cell.notes(R1, NoteLevel.WARN)  # once per connection: no log flood
    assert f"client {victim}" in warning
    assert "attacker's host" in warning
    for sequence, contents in ((2, b"v2"), (3, b"v3")):
        reply = cell.written(victim_on, victim, sequence, SetContents(FILE, contents))
        assert reply.result.stat is not None  # type: ignore[union-attr]
        assert reply.result.stat.content_generation == sequence  # type: ignore[union-attr]
    read = victim_on.read(GetContentsAndStat(FILE))
    assert victim_on.reply(read).result.contents == b"v3"  # type: ignore[union-attr]


def test_a_wrong_credential_gets_no_cached_result() -> None:
    """A retry of the victim's applied write with a wrong credential is refused, not
    answered from the client table: the victim's results are not handed out."""
    cell = serving()
    victim_on, attacker_on = cell.connect(R1), cell.connect(R1)
    victim, attacker = cell.register(victim_on, nonce=1), cell.register(attacker_on, nonce=2)
    cell.written(victim_on, victim, 1, Create(FILE, contents=b"secret"))
    request_id = attacker_on.write(victim, 1, Create(FILE),
                                   credential=client_credential(attacker, HANDLE_KEY))  # fmt: skip
    assert attacker_on.code(request_id) is ErrorCode.PERMISSION_DENIED
    assert not [a for a in attacker_on.answers if isinstance(a, WriteReply)]
    retry = victim_on.write(victim, 1, Create(FILE))
    assert isinstance(victim_on.reply(retry), WriteReply)  # its owner still gets it


def test_the_credential_is_checked_before_anything_else() -> None:
    """A wrong credential is PERMISSION_DENIED whatever else is wrong: on a follower (not
    NOT_MASTER), for the reserved master id or an unknown client (not UNKNOWN_CLIENT)."""
    cell = serving()
    follower, master = cell.connect(R2), cell.connect(R1)
    proposals = metric(cell.nodes[R1], "chubbypy_proposals_total")
    for connection, client_id in ((follower, 1), (master, MASTER_CLIENT), (master, 99)):
        request_id = connection.write(ClientId(client_id), 1, Create(FILE), credential=bytes(16))
        cell.settle()
        assert connection.code(request_id) is ErrorCode.PERMISSION_DENIED
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == proposals
