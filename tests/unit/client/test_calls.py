"""MasterCall, the sans-IO retry policy: where to send, what to retry, back-off, deadlines."""

from __future__ import annotations

import pytest

from chubbypy.client.core import (
    DROP_AFTER_SEND,
    REDIRECTS_MAX,
    RESEND_EARLY,
    RETRIED_CODES,
    AskLocations,
    CallSettings,
    CellView,
    ConnectionClosed,
    Failed,
    Finished,
    MasterCall,
    Pause,
    RequestTimedOut,
    SendRequest,
    SendTimes,
)
from chubbypy.protocol.client import (
    ErrorReply,
    MasterLocation,
    ReadReply,
    ReplicaAddress,
    RequestId,
)
from chubbypy.protocol.errors import (
    ERROR_CLASSES,
    ErrorCode,
    FrameTooLarge,
    Unavailable,
    WrongCell,
)
from chubbypy.protocol.namespace import Listing
from chubbypy.protocol.values import Epoch, LogIndex, ReplicaId

R1, R2, R3 = ReplicaId("r1"), ReplicaId("r2"), ReplicaId("r3")
SETTINGS = CallSettings()  # 10 s calls, 2 s attempts, back-off 0.05 s to 1 s, polls 0.1 s
RID = RequestId(1)
OK = ReadReply(RID, LogIndex(1), Listing((), more=False))


class Chance:
    """Jitter at its top (`high`) or bottom, and the rare path at the named sites."""

    def __init__(self, *sites: str, high: bool = False) -> None:
        self.sites, self.high = sites, high

    def randint(self, low: int, high: int) -> int:
        return high if self.high else low

    def buggify(self, site: str) -> bool:
        return site in self.sites


def view(master: str | None = None) -> CellView:
    """A cell of r1, r2, r3 addressed by replica id, as a simulator addresses them."""
    made = CellView(("r1", "r2", "r3"), endpoint_of=lambda member: member.replica_id)
    made.members = {R1: "r1", R2: "r2", R3: "r3"}
    made.master = master
    return made


def located(master: ReplicaId | None) -> MasterLocation:
    members = tuple(ReplicaAddress(r, f"tcp:{7200 + i}") for i, r in enumerate((R1, R2, R3)))
    return MasterLocation(RID, master, Epoch(1), members)


def error(code: ErrorCode, hint: ReplicaId | None = None) -> ErrorReply:
    return ErrorReply(RID, code, "said so", hint)


def call(
    cell: CellView, *, now: float = 0.0, chance: Chance | None = None, **options: object
) -> MasterCall:
    deadline = now + SETTINGS.timeout_seconds
    return MasterCall(cell, SETTINGS, deadline, chance=chance or Chance(), **options)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- locating


def test_a_call_without_a_master_asks_every_known_replica() -> None:
    """No master believed: ask every member, then every seed not yet named."""
    cell = view()
    cell.seeds = ("r1", "seed:9")
    assert call(cell).started(0.0) == AskLocations(("r1", "r2", "r3", "seed:9"), 2.0)


def test_the_first_answer_naming_a_master_is_followed_and_teaches_the_members() -> None:
    """One seed's MasterLocation names every member and the master, which is sent to."""
    cell = CellView(("seed",), endpoint_of=lambda member: member.replica_id)
    carried = call(cell)
    assert carried.started(0.0) == AskLocations(("seed",), 2.0)
    assert carried.location_answered(0.1, "seed", located(R2)) == SendRequest("r2", 2.0, 2.0)
    assert cell.members == {R1: "r1", R2: "r2", R3: "r3"}
    assert cell.master == "r2"


def test_answers_that_name_no_master_wait_for_the_others_then_pause() -> None:
    """The round ends when every replica answered or failed; the pause names them all."""
    carried = call(view())
    carried.started(0.0)
    assert carried.location_answered(0.1, "r1", located(None)) is None
    assert carried.location_failed(0.1, "r2", ConnectionClosed("r2: cannot connect")) is None
    step = carried.location_answered(0.2, "r3", error(ErrorCode.BUSY))
    assert isinstance(step, Pause)
    assert step.until_seconds <= 0.2 + 0.05
    assert carried.pause_ended(step.until_seconds) == AskLocations(("r1", "r2", "r3"), 2.0)


def test_a_refused_hello_is_raised_only_if_no_replica_names_a_master() -> None:
    """WRONG_CELL from one replica is ignored if another names the master, else final."""
    carried = call(view())
    carried.started(0.0)
    assert carried.location_failed(0.1, "r1", WrongCell("r1 serves another cell")) is None
    assert carried.location_answered(0.1, "r2", located(R3)) == SendRequest("r3", 2.0, 2.0)
    refused = call(view())
    refused.started(0.0)
    wrong = WrongCell("serves cell 'other'")
    refused.location_failed(0.1, "r1", wrong)
    refused.location_failed(0.1, "r2", ConnectionClosed("r2: gone"))
    assert refused.location_answered(0.1, "r3", located(None)) == Failed(wrong)


def test_late_and_repeated_location_answers_are_ignored() -> None:
    """An answer from a replica already heard, or after the round ended, changes nothing."""
    carried = call(view())
    carried.started(0.0)
    assert carried.location_answered(0.1, "r1", located(None)) is None
    assert carried.location_answered(0.1, "r1", located(R2)) is None
    assert carried.location_answered(0.2, "r2", located(R2)) == SendRequest("r2", 2.0, 2.0)
    assert carried.location_answered(0.3, "r3", located(R3)) is None
    assert carried.location_failed(0.1, "r3", ConnectionClosed("late")) is None


def test_a_locate_only_call_finishes_with_the_location() -> None:
    """locate_only asks even when a master is believed, and returns the answer."""
    carried = call(view("r1"), locate_only=True)
    assert carried.started(0.0) == AskLocations(("r1", "r2", "r3"), 2.0)
    step = carried.location_answered(0.1, "r2", located(R2))
    assert step == Finished(located(R2), SendTimes(0.1, 0.1))


# ----------------------------------------------------------------------------- following


def test_a_reply_finishes_the_call() -> None:
    """Any reply that is not an error is the call's answer."""
    carried = call(view("r1"))
    assert carried.started(0.0) == SendRequest("r1", 2.0, 2.0)
    assert carried.replied(0.1, OK) == Finished(OK, SendTimes(0.0, 0.0))


def test_not_master_with_a_hint_redirects_at_once_a_few_times_then_pauses() -> None:
    """Hints are followed REDIRECTS_MAX times in a row without a pause, then back-off."""
    cell = view("r1")
    carried = call(cell)
    carried.started(0.0)
    targets = ["r2", "r1", "r2"]
    for i, target in enumerate(targets):
        hint = ReplicaId(target)
        assert carried.replied(0.01 * i, error(ErrorCode.NOT_MASTER, hint)).address == target  # type: ignore[union-attr]
    assert len(targets) == REDIRECTS_MAX
    step = carried.replied(0.05, error(ErrorCode.NOT_MASTER, R1))
    assert isinstance(step, Pause)
    assert cell.master == "r1", "the hint is believed even when it is not followed at once"
    assert carried.pause_ended(step.until_seconds) == SendRequest("r1", 2.0, 2.0)


def test_not_master_without_a_hint_forgets_the_master_and_locates_again() -> None:
    """A follower that knows no master: pause, then ask the cell again."""
    cell = view("r1")
    carried = call(cell)
    carried.started(0.0)
    step = carried.replied(0.1, error(ErrorCode.NOT_MASTER))
    assert isinstance(step, Pause)
    assert cell.master is None
    assert isinstance(carried.pause_ended(step.until_seconds), AskLocations)


def test_a_hint_naming_the_replica_itself_is_no_hint() -> None:
    """NOT_MASTER from r1 naming r1 forgets r1 instead of asking it again."""
    cell = view("r1")
    carried = call(cell)
    carried.started(0.0)
    assert isinstance(carried.replied(0.1, error(ErrorCode.NOT_MASTER, R1)), Pause)
    assert cell.master is None


@pytest.mark.parametrize("code", sorted(RETRIED_CODES), ids=lambda c: c.name)
def test_not_now_errors_are_retried_on_the_same_master(code: ErrorCode) -> None:
    """EPOCH_CHANGED, BUSY, UNAVAILABLE: pause, then the same request to the same master."""
    carried = call(view("r1"))
    carried.started(0.0)
    step = carried.replied(0.1, error(code))
    assert isinstance(step, Pause)
    assert carried.pause_ended(step.until_seconds) == SendRequest("r1", 2.0, 2.0)


@pytest.mark.parametrize(
    "code", sorted(set(ErrorCode) - {ErrorCode.NOT_MASTER, *RETRIED_CODES}), ids=lambda c: c.name
)
def test_every_other_error_is_the_answer(code: ErrorCode) -> None:
    """Any other error code fails the call with its ChubbyError class."""
    carried = call(view("r1"))
    carried.started(0.0)
    step = carried.replied(0.1, error(code))
    assert isinstance(step, Failed)
    assert type(step.error) is ERROR_CLASSES[code]
    assert step.error.message == "said so"


def test_a_connection_failure_forgets_the_master_and_pauses() -> None:
    """A timeout or a lost connection: the master may be dead; locate it after a pause."""
    cell = view("r1")
    carried = call(cell)
    carried.started(0.0)
    assert isinstance(carried.send_failed(2.0, RequestTimedOut("r1: no reply")), Pause)
    assert cell.master is None


def test_a_refusal_of_the_request_is_final() -> None:
    """A request above the frame limit, or a refused hello, fails the call at once."""
    carried = call(view("r1"))
    carried.started(0.0)
    too_large = FrameTooLarge("too large")
    assert carried.send_failed(0.1, too_large) == Failed(too_large)


def test_any_answer_means_the_cell_is_up() -> None:
    """Replies, error replies and location answers all count as a replica answering."""
    cell = view("r1")
    carried = call(cell)
    carried.started(0.0)
    carried.replied(0.3, error(ErrorCode.BUSY))
    assert cell.answered_at == 0.3
    assert cell.polling(1.29)
    assert not cell.polling(1.3)


# ----------------------------------------------------------------------------- pauses, deadlines


def pauses(*, answered: bool, chance: Chance) -> list[float]:
    """The lengths of successive pauses: after BUSY answers from the master, or after
    connection failures of the master and then of every replica asked where it is."""
    carried = call(view("r1"), chance=chance)
    step = carried.started(0.0)
    lengths, now = [], 0.0
    for _ in range(7):
        if isinstance(step, SendRequest) and answered:
            step = carried.replied(now, error(ErrorCode.BUSY))
        elif isinstance(step, SendRequest):
            step = carried.send_failed(now, ConnectionClosed("r1: gone"))
        else:
            assert isinstance(step, AskLocations)
            for address in step.addresses:
                ended = carried.location_failed(now, address, ConnectionClosed(f"{address}: gone"))
            step = ended
        assert isinstance(step, Pause)
        lengths.append(round(step.until_seconds - now, 6))
        now = step.until_seconds
        step = carried.pause_ended(now)
    return lengths


def test_pauses_double_up_to_the_maximum_with_jitter() -> None:
    """With no replica answering: 0.05 s doubling to 1 s, times half to all of it."""
    assert pauses(answered=False, chance=Chance(high=True)) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert pauses(answered=False, chance=Chance()) == [0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_pauses_poll_while_a_replica_answered_lately() -> None:
    """While the cell answers, pauses are capped at poll_seconds (0.1 s)."""
    assert pauses(answered=True, chance=Chance(high=True)) == [0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]


def test_the_deadline_ends_the_call_unavailable_naming_the_last_problem() -> None:
    """A pause that would pass the deadline fails the call with the last problem seen."""
    carried = call(view("r1"), now=0.0)
    carried.started(9.0)
    step = carried.send_failed(9.99, ConnectionClosed("r1: cannot connect: refused"))
    assert isinstance(step, Failed)
    assert isinstance(step.error, Unavailable)
    assert step.error.message == (
        "no master answered within 10 s; last problem: r1: cannot connect: refused"
    )


def test_an_attempt_waits_at_most_the_request_timeout_or_what_is_left() -> None:
    """2 s per attempt, less near the deadline; none at all once it passed."""
    carried = call(view("r1"))
    assert carried.started(9.5) == SendRequest("r1", 0.5, 0.5)
    late = call(view("r1"))
    step = late.started(10.0)
    assert isinstance(step, Failed)
    assert step.error.message == "no master answered within 10 s"


def test_a_call_the_master_holds_waits_its_own_attempt_time() -> None:
    """A KeepAlive's 13 s attempt overrides the request timeout, within the deadline."""
    carried = MasterCall(view("r1"), SETTINGS, 50.0, attempt_seconds=13.0)
    assert carried.started(0.0) == SendRequest("r1", 2.0, 13.0)
    near = MasterCall(view("r1"), SETTINGS, 50.0, attempt_seconds=13.0)
    assert near.started(45.0) == SendRequest("r1", 2.0, 5.0)


def test_finished_says_when_the_call_was_first_and_last_sent() -> None:
    """A call sent at 1, retried at 3.5 and answered, was first sent at 1, last at 3.5."""
    carried = call(view("r1"), now=1.0)
    carried.started(1.0)
    step = carried.send_failed(3.0, RequestTimedOut("r1: no reply"))
    assert isinstance(step, Pause)
    assert isinstance(carried.pause_ended(3.2), AskLocations)
    assert carried.location_answered(3.5, "r2", located(R2)) == SendRequest("r2", 2.0, 2.0)
    assert carried.replied(3.6, OK) == Finished(OK, SendTimes(1.0, 3.5))


# ----------------------------------------------------------------------------- chance


def test_chance_drops_the_connection_after_sending() -> None:
    """At DROP_AFTER_SEND the driver is told to drop the link once the request is out."""
    carried = call(view("r1"), chance=Chance(DROP_AFTER_SEND))
    assert carried.started(0.0) == SendRequest("r1", 2.0, 2.0, drop_after_send=True)


def test_chance_gives_up_an_attempt_early_so_a_duplicate_is_sent() -> None:
    """At RESEND_EARLY the attempt waits a tenth of its time, then the call goes again."""
    carried = call(view("r1"), chance=Chance(RESEND_EARLY))
    assert carried.started(0.0) == SendRequest("r1", 2.0, pytest.approx(0.2))  # type: ignore[arg-type]
