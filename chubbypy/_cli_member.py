"""``chubbypy member list|add|promote|remove``: the cell's membership, and changing it one
step at a time (docs/design/membership.md; README "Membership").

A replacement is three steps: start the new replica (its entry in the cell file, an empty
data directory, no ``--bootstrap``), ``member add`` it as a learner, ``member promote`` it
once it has caught up (``--wait`` asks again while the master says NOT_CAUGHT_UP), then
``member remove`` the old one. Each change is answered once chosen; one the membership
already shows is answered at once ("already so", exit 0), so a retry is harmless.

The calls go to the master as an operator's (the cell's ACL ``admin``). Printing is the
CLI's (`chubbypy.cli`); this module returns what to print.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from chubbypy._cli_outcome import Done, Refused
from chubbypy._exit_codes import EXIT_FAILED, EXIT_UNAVAILABLE
from chubbypy.client._calls import RETRIED_CODES
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.errors import ChubbyError, ErrorCode, NotCaughtUp
from chubbypy.protocol.session import (
    AddLearner,
    MemberList,
    MembershipDone,
    MembershipStep,
    Promote,
    Remove,
    describe_step,
)

__all__ = ["Done", "MembersClient", "Refused", "change", "listed", "member_document", "step_of"]

WAIT_PAUSE_SECONDS: Final = 0.5
"""Between two attempts of ``promote --wait`` while the learner catches up."""
UNAVAILABLE_CODES: Final = frozenset({ErrorCode.NOT_MASTER, ErrorCode.UNAVAILABLE, *RETRIED_CODES})


class MembersClient(Protocol):
    """What these commands need of a client (`chubbypy.client.BlockingCell`)."""

    def members(self) -> MemberList: ...
    def change_membership(self, step: MembershipStep, if_version: int = 0) -> MembershipDone: ...


def listed(client: MembersClient) -> Done | Refused:
    """``member list``: every member, its role and progress, as the master sees them."""
    try:
        members = client.members()
    except ChubbyError as error:
        return _refused(error)
    lines = [
        f"membership version {members.version} (in effect after index {members.index}; "
        f"the master knows the log chosen through {members.chosen_index})",
        f"{'ID':<12} {'ROLE':<8} {'MASTER':<6} {'CHOSEN':>8} {'ACKED':>9}  PEER  CLIENT",
    ]
    for m in members.members:
        chosen = "-" if m.chosen_index is None else str(m.chosen_index)
        acked = "never" if m.acked_ms_ago is None else f"{m.acked_ms_ago} ms"
        role = "voter" if m.voter else "learner"
        master = "yes" if m.master else ""
        lines.append(
            f"{m.replica_id:<12} {role:<8} {master:<6} {chosen:>8} {acked:>9}  {m.peer}  {m.client}"
        )
    voters = sum(1 for m in members.members if m.voter)
    if voters % 2 == 0:
        lines.append(
            f"note: {voters} voters tolerate {voters // 2 - 1} failure(s), as {voters - 1} do: "
            "finish the replacement (remove the old voter)"
        )
    return Done(member_document(members), "\n".join(lines))


def member_document(members: MemberList) -> dict[str, Any]:
    """The JSON fields of a member list."""
    return {
        "version": members.version,
        "index": members.index,
        "chosen_index": members.chosen_index,
        "members": [
            {
                "replica_id": m.replica_id,
                "role": "voter" if m.voter else "learner",
                "master": m.master,
                "peer": m.peer,
                "client": m.client,
                "chosen_index": m.chosen_index,
                "acked_ms_ago": m.acked_ms_ago,
            }
            for m in members.members
        ],
    }


def change(
    client: MembersClient,
    step: MembershipStep,
    *,
    if_version: int = 0,
    wait_seconds: float = 0.0,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Done | Refused:
    """``member add|promote|remove``: one change, answered once chosen. With
    `wait_seconds`, a promotion refused NOT_CAUGHT_UP is asked again until then."""
    deadline = clock() + wait_seconds
    last_said = ""
    while True:
        try:
            done = client.change_membership(step, if_version)
        except NotCaughtUp as error:
            if clock() + WAIT_PAUSE_SECONDS > deadline:
                return _refused(error)
            if progress is not None and error.message != last_said:
                progress(f"waiting: {error.message}")
                last_said = error.message
            sleep(WAIT_PAUSE_SECONDS)
            continue
        except ChubbyError as error:
            return _refused(error)
        break
    what = describe_step(step)
    when = "already so" if done.already else f"chosen at index {done.index}"
    text = f"{what}: membership version {done.version} ({when})"
    document = {
        "action": _action(step),
        "replica_id": step.replica_id,
        "version": done.version,
        "index": done.index,
        "already": done.already,
    }
    return Done(document, text)


def _refused(error: ChubbyError) -> Refused:
    exit_code = EXIT_UNAVAILABLE if error.code in UNAVAILABLE_CODES else EXIT_FAILED
    return Refused(error.code.name, error.message, exit_code)


def _action(step: MembershipStep) -> str:
    match step:
        case AddLearner():
            return "add"
        case Promote():
            return "promote"
        case Remove():
            return "remove"
    raise AssertionError(step)


def step_of(args: Any) -> MembershipStep:
    """The step an argparse namespace of ``member add|promote|remove`` asks for."""
    rid = ReplicaId(args.replica_id)
    match args.action:
        case "add":
            return AddLearner(rid, args.peer, args.client)
        case "promote":
            return Promote(rid)
        case "remove":
            return Remove(rid, force=args.force)
    raise AssertionError(args.action)
