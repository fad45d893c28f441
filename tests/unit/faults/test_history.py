"""History files of the fault suite: written line by line, read back whole, judged whole."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from attrs import evolve

from chubbypy.testing.faults._check import check_history
from chubbypy.testing.faults._history import (
    History,
    HistoryWriter,
    Kind,
    Op,
    Outcome,
    parse_lines,
    read_history,
)


def test_an_invocation_never_completed_reads_back_as_unknown() -> None:
    """A worker that died mid-call leaves an op of unknown outcome, never a lost one."""
    stream = io.StringIO()
    writer = HistoryWriter(stream)
    first = writer.invoke(Op(0, "p1", "register/a", Kind.WRITE, 10, value="x"))
    writer.complete(evolve(first, complete_ns=20, outcome=Outcome.OK, generation=2))
    writer.invoke(Op(0, "p1", "register/a", Kind.WRITE, 30, value="y"))
    ops = list(parse_lines(stream.getvalue().splitlines(), "test"))
    assert [(o.value, o.outcome, o.complete_ns) for o in ops] == [
        ("x", Outcome.OK, 20),
        ("y", Outcome.UNKNOWN, None),
    ]
    assert ops[1].error == "never completed"


def test_a_line_that_is_not_json_names_its_file_and_line() -> None:
    """A damaged history is refused with where the damage is."""
    with pytest.raises(ValueError, match=r"w1\.history\.jsonl:2: not a history line"):
        list(
            parse_lines(
                [
                    '{"event":"invoke","id":1,"process":"p","key":"k","kind":"read","invoke_ns":1}',
                    "{",
                ],
                "w1.history.jsonl",
            )
        )


def test_a_run_directory_is_read_and_judged(tmp_path: Path) -> None:
    """Two workers' files and the initial states make one history; a stale read in it is
    reported with the operations that show it."""
    (tmp_path / "initial.json").write_text(json.dumps({"register/a": ["init", 1]}))
    for name, ops in {
        "w1": [Op(0, "w1", "register/a", Kind.WRITE, 10, 20, Outcome.OK, value="x", generation=2)],
        "w2": [
            Op(0, "w2", "register/a", Kind.READ, 30, 40, Outcome.OK, value="init", generation=1)
        ],
    }.items():
        with (tmp_path / f"{name}.history.jsonl").open("w") as stream:
            writer = HistoryWriter(stream)
            for op in ops:
                writer.complete(writer.invoke(op))
    history = read_history(tmp_path)
    assert isinstance(history, History)
    assert [op.id for op in history.ops] == [1, 2]
    report = check_history(history)
    assert not report.linearizable
    assert report.exclusive
    assert report.fenced
    assert "register/a: no linearization" in report.explain()
    assert "#2 w2 read() on register/a" in report.explain()
    assert report.summary()[0].startswith("history: 2 operations of 2 client processes (2 ok)")
