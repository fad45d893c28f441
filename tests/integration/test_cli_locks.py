"""The CLI's lasting commands (lock, elect, watch) and acl, leader, sessions against a live
three-replica cell, as real processes, including across a kill -9 of the master."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.harness import LiveCell, child_environment, chubbypy_command

SHORT_SESSIONS = {"lease_seconds": 2.0, "keepalive_answer_before_seconds": 0.5}
"""Session leases short enough for tests that wait for one to run out."""
WAIT_SECONDS = 30.0


def chubbypy(cell: LiveCell, *args: str, **options: object) -> subprocess.Popen[str]:
    """``chubbypy --cell <cell> ARGS`` started in the background, its output piped."""
    command = [*chubbypy_command(), "--cell", str(cell.config_path), *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_environment(), cwd=cell.directory, **options,  # type: ignore[call-overload]
    )  # fmt: skip


def wait_for_file(path: Path, what: str, timeout: float = WAIT_SECONDS) -> str:
    """The contents of `path` once it exists and is not empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{what}: {path} never appeared")


def finish(process: subprocess.Popen[str], timeout: float = WAIT_SECONDS) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_lock_runs_the_command_with_the_sequencer_and_exits_with_its_status(
    cell: LiveCell, tmp_path: Path
) -> None:
    """The child sees CHUBBY_SEQUENCER (valid while it runs), and its exit status is
    chubbypy's; the lock is free once it ends."""
    seen = tmp_path / "sequencer"
    code, _, err = finish(chubbypy(
        cell, "lock", "jobs", "--", sys.executable, "-c",
        "import os, sys; open(sys.argv[1], 'w').write(os.environ['CHUBBY_SEQUENCER']);"
        " sys.exit(7)", str(seen),
    ))  # fmt: skip
    assert code == 7, err
    sequencer = bytes.fromhex(seen.read_text())
    assert not cell.client().check_sequencer(sequencer), "released after the command"
    assert cell.cli("lock", "--try", "jobs", "--", "true").code == 0


def test_lock_exits_4_when_the_lock_stays_held(cell: LiveCell) -> None:
    """--try exits 4 at once and --timeout 1 after a second, without running the command."""
    client = cell.client()
    with client.lock(cell.path("busy")):
        started = time.monotonic()
        tried = cell.cli("lock", "--try", "busy", "--", "touch", "ran")
        assert tried.code == 4, tried
        timed = cell.cli("--json", "lock", "--timeout", "1", "busy", "--", "touch", "ran")
        assert timed.code == 4, timed
        assert timed.json()["acquired"] is False
        assert 1.0 <= time.monotonic() - started < 15
    assert not (cell.directory / "ran").exists()


def test_a_locked_command_keeps_running_across_a_kill_9_of_the_master(
    cell: LiveCell, tmp_path: Path
) -> None:
    """kill -9 of the master while the command runs: the lock survives, the command is
    not stopped, and chubbypy exits 0 after it."""
    started, release = tmp_path / "started", tmp_path / "release"
    script = (
        "import os, sys, time\n"
        "open(sys.argv[1], 'w').write(os.environ['CHUBBY_SEQUENCER'])\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\n"
    )
    holder = chubbypy(cell, "lock", "survivor", "--", sys.executable, "-c", script,
                      str(started), str(release))  # fmt: skip
    sequencer = bytes.fromhex(wait_for_file(started, "the locked command"))
    master = cell.wait_master()
    cell.kill_replica(master)
    cell.wait_for(lambda: (cell.master() not in (None, master)) or None, "a new master", 30)
    assert cell.client().check_sequencer(sequencer), "the lock survived the fail-over"
    assert holder.poll() is None, "the command is still running"
    release.write_text("go")
    code, _, err = finish(holder)
    assert code == 0, err


def test_a_lost_lock_stops_the_command_and_exits_1(cell: LiveCell, tmp_path: Path) -> None:
    """Deleting the lock file under a running command: SIGTERM to it, exit 1."""
    started = tmp_path / "started"
    holder = chubbypy(cell, "lock", "doomed", "--", sys.executable, "-c",
                      "import sys, time; open(sys.argv[1], 'w').write('x'); time.sleep(60)",
                      str(started))  # fmt: skip
    wait_for_file(started, "the locked command")
    cell.client().delete(cell.path("doomed"))
    code, _, err = finish(holder)
    assert code == 1, err
    assert "lost the lock" in err


def test_a_standby_leads_once_a_frozen_leader_loses_its_session_and_the_leader_is_deposed(
    make_cell: Callable[..., LiveCell], tmp_path: Path
) -> None:
    """elect: the first candidate runs its command; frozen past its lease it loses the
    lead, the standby's command starts within lease + lock-delay, and the woken leader
    stops its command and exits 1."""
    cell = make_cell(sessions=SHORT_SESSIONS)
    runs = {name: tmp_path / name for name in ("alpha", "beta")}
    script = "import sys, time; open(sys.argv[1], 'w').write('leading'); time.sleep(120)"
    alpha = chubbypy(cell, "elect", "service", "--id", "alpha", "--lock-delay", "1",
                     "--", sys.executable, "-c", script, str(runs["alpha"]))  # fmt: skip
    wait_for_file(runs["alpha"], "alpha's command")
    assert cell.cli("leader", "service").stdout == "alpha\n"
    beta = chubbypy(cell, "elect", "service", "--id", "beta",
                    "--", sys.executable, "-c", script, str(runs["beta"]))  # fmt: skip
    time.sleep(1.0)
    assert not runs["beta"].exists(), "beta waits while alpha leads"
    alpha.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_for_file(runs["beta"], "beta's command", timeout=20)
        took = time.monotonic() - frozen
        assert took < 2.0 + 1.0 + 5.0, took  # lease + lock-delay, and some slack
        assert cell.cli("leader", "service").stdout == "beta\n"
    finally:
        alpha.send_signal(signal.SIGCONT)
    code, _, err = finish(alpha)
    assert code == 1, err
    assert "deposed" in err
    beta.send_signal(signal.SIGTERM)
    code, _, err = finish(beta)
    assert code == 128 + signal.SIGTERM, err


def test_watch_prints_events_as_json_lines(cell: LiveCell) -> None:
    """watch --json --count 2 prints one document per event, then exits 0."""
    client = cell.client()
    client.create(cell.path("watched"), b"v1")
    watcher = chubbypy(cell, "watch", "watched", "--json", "--count", "2")
    assert watcher.stderr is not None
    assert "watching" in watcher.stderr.readline()
    client.set_contents(cell.path("watched"), b"v2")
    client.set_contents(cell.path("watched"), b"v3")
    code, out, err = finish(watcher)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"]["kind"] for e in events] == ["CONTENTS_MODIFIED"] * 2
    assert events[0]["schema"] == "chubbypy.cli/1"
    assert events[0]["event"]["path"] == cell.path("watched")
    assert events[0]["event"]["sequence"] < events[1]["event"]["sequence"]


def test_acl_set_and_get_and_sessions_list_a_holder(make_cell: Callable[..., LiveCell]) -> None:
    """acl set/get round-trip with compare-and-swap; sessions shows a holder's lock (to an
    operator: anonymous clients are this cell's operators)."""
    cell = make_cell(auth={"admins": ["anonymous"]})
    client = cell.client()
    client.create(cell.path("guarded"), b"")
    changed = cell.cli("--json", "acl", "set", "guarded", "--write", "writers")
    assert changed.code == 0, changed
    assert changed.json()["acl"] == {"read": "all", "write": "writers", "change": "all"}
    assert changed.json()["acl_generation"] == 2
    assert cell.cli("acl", "get", "guarded").stdout.startswith("read=all write=writers")
    stale = cell.cli("acl", "set", "guarded", "--read", "x", "--if-generation", "1")
    assert stale.code == 1, stale
    assert "GENERATION_MISMATCH" in stale.stderr
    with client.lock(cell.path("guarded-lock")):
        listed = cell.cli("--json", "sessions")
        assert listed.code == 0, listed
        locks = [lock for s in listed.json()["sessions"] for lock in s["locks"]]
        assert {"path": cell.path("guarded-lock"), "mode": "exclusive"} in locks


def test_the_completion_script_loads_in_bash(tmp_path: Path) -> None:
    """completion bash is valid bash that registers the completion function."""
    script = subprocess.run([*chubbypy_command(), "completion", "bash"], capture_output=True,
                            env=child_environment(), check=True).stdout  # fmt: skip
    (tmp_path / "completion.sh").write_bytes(script)
    done = subprocess.run(
        ["bash", "-c", f". {tmp_path / 'completion.sh'} && complete -p chubbypy"],
        capture_output=True, text=True, check=False, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "_chubbypy" in done.stdout
