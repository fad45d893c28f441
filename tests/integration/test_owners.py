"""Plain clients bound to their owner, on real processes (issue 12): an attacker that
registered, guessed its victim's id (its own minus one) and wrote at the victim's next
sequences is refused, and nothing of the victim's changes or leaks."""

from __future__ import annotations

import secrets

from chubbypy.protocol.client import (
    ErrorReply,
    Register,
    Registered,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Create, SetContents
from chubbypy.protocol.values import ClientId
from tests.integration.harness import LiveCell
from tests.integration.wire_client import WireClient


def test_another_clients_id_with_a_wrong_credential_is_refused_and_changes_nothing(
    cell: LiveCell,
) -> None:
    """Writes naming the victim's id with the attacker's own, a zero or a random credential
    are refused PERMISSION_DENIED: the victim's later writes are each applied (one content
    generation each), and a retry of the victim's applied write hands nothing out."""
    victim = cell.client()
    path = cell.path("victim")
    victim.create(path, b"v0")
    victim.set_contents(path, b"v1")  # the victim's sequences 1 and 2
    master = cell.wait_master()
    attacker = WireClient(cell.ports[master].client, cell.name)
    registered = attacker.call(lambda rid: Register(rid, secrets.randbits(63)))
    assert isinstance(registered, Registered)
    guess = ClientId(registered.client_id - 1)
    assert guess == victim.twisted._client_id  # the guess of issue 12 is right...
    for credential in (registered.credential, bytes(16), secrets.token_bytes(16)):
        for sequence in (1, 2, 3, 4):  # ...but neither a retry nor a next write gets through
            reply = attacker.call(
                lambda rid, c=credential, s=sequence: WriteRequest(
                    rid, guess, c, s, s, SetContents(path, b"hijacked")
                )
            )
            assert isinstance(reply, ErrorReply), reply
            assert reply.code is ErrorCode.PERMISSION_DENIED
            assert "wrong credential" in reply.message
    for n in (2, 3, 4):
        stat = victim.set_contents(path, f"v{n}".encode())
        assert stat.content_generation == n + 1
    assert victim.get_contents_and_stat(path).contents == b"v4"
    assert "refused a write naming client" in cell.log(master)
    own = attacker.call(
        lambda rid: WriteRequest(
            rid, registered.client_id, registered.credential, 1, 1, Create(cell.path("mine"))
        )
    )
    assert isinstance(own, WriteReply)  # the attacker's own id and credential still work
    attacker.close()
