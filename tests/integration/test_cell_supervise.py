"""``chubbypy cell`` keeps its replicas running, and refuses to start where it cannot run.

Real processes: a cell whose replica is killed (-9) and restarted, then given up; a cell
file whose port another process holds, or whose data directory cannot be made; and
``chubbypy status`` before, during and after (its exit code and its problems).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.harness import (
    CliResult,
    LiveCell,
    child_environment,
    chubbypy_command,
    poll,
    tail,
)
from tests.integration.test_cell_command import CellCommand, children_of, running

RESTART_SECONDS = 20.0
"""From a replica's kill to its line, its restart and a whole cell: a fresh process's start."""


def supervised_cell(tmp_path: Path, **supervisor: Any) -> LiveCell:
    """A cell file on fresh ports whose ``supervisor:`` section is `supervisor`."""
    cell_file = LiveCell(tmp_path)  # only its cell file and its CLI runner
    cell_file.write_config()
    document = yaml.safe_load(cell_file.config_path.read_text())
    document["supervisor"] = supervisor
    cell_file.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    return cell_file


def replica_pid(run: CellCommand, rid: str) -> tuple[int, str]:
    """The pid and command line of replica `rid` among the cell's children (noted in `run`
    so that a failing test still kills it)."""
    run.replicas = children_of(run.process.pid)
    (found,) = [(pid, line.strip()) for pid, line in run.replicas if f"--replica {rid}" in line]
    return found


def status(cell_file: LiveCell) -> CliResult:
    return cell_file.cli("--json", "--timeout", "2", "status")


def test_a_killed_replica_is_restarted_and_one_that_keeps_dying_is_given_up(
    tmp_path: Path,
) -> None:
    """kill -9 of a replica: one line names it, its signal and its restart in 0.5 s; it is
    back without --bootstrap and the cell is whole again (status exits 0, no lag at all).
    Killed again, quickly (quick_exits_max 2), it is given up with a line saying what the
    cell still survives; status exits 1 naming it unreachable; SIGTERM still stops all."""
    cell_file = supervised_cell(tmp_path, quick_exits_max=2)
    run = CellCommand(cell_file.config_path, tmp_path / "cell.log")
    try:
        run.wait_master()
        healthy = poll(
            lambda: (s := status(cell_file)).code == 0 and s,
            "every replica up",
            RESTART_SECONDS,
            lambda: tail(run.log),
        )
        assert healthy.json()["problems"] == [], healthy

        first, command = replica_pid(run, "r2")
        assert command.endswith("--replica r2 --bootstrap"), command
        os.kill(first, signal.SIGKILL)
        killed = re.compile(r"^-- r2 was killed by signal 9 \(SIGKILL\) after .*$", re.M)
        said = poll(
            lambda: killed.search(run.output()),
            "the cell says r2 was killed",
            RESTART_SECONDS,
            lambda: tail(run.log),
        ).group(0)
        assert said.endswith(
            "(1st quick exit in a row); restarting it in 0.5 s "
            "(2 of 3 replicas run: the cell serves, but one more failure stops it)"
        ), said
        assert cell_file.cli("put", "written", "while r2 was down").code == 0
        poll(lambda: "-- r2 restarted (pid" in run.output(), "r2 restarted", RESTART_SECONDS)
        again, command = replica_pid(run, "r2")
        assert again != first
        assert command.endswith("--replica r2"), "a restart is no new cell: no --bootstrap"
        whole = poll(
            lambda: (s := cell_file.cli("--json", "status", "--lag-max", "0")).code == 0 and s,
            "the cell whole again, r2 caught up",
            RESTART_SECONDS,
            lambda: tail(run.log),
        )
        assert [r["reachable"] for r in whole.json()["replicas"]] == [True] * 3, whole

        os.kill(again, signal.SIGKILL)
        poll(lambda: "not restarting it" in run.output(), "r2 given up", RESTART_SECONDS)
        given_up = [line for line in run.output().splitlines() if "not restarting it" in line]
        assert given_up[0].startswith("-- r2 was killed by signal 9 (SIGKILL) after "), given_up
        assert given_up[0].endswith(
            ", its 2nd quick exit in a row (supervisor.quick_exits_max): not restarting it "
            "(2 of 3 replicas run: the cell serves, but one more failure stops it)"
        ), given_up
        down = status(cell_file)
        assert down.code == 1, down
        problems = [(p["kind"], p["replica_id"]) for p in down.json()["problems"]]
        assert problems == [("unreachable", "r2")], down
        assert down.json()["error"]["code"] == "UNHEALTHY", down
        summary = "chubbypy status: the cell is not healthy, 1 problem: r2 unreachable\n"
        assert down.stderr == summary, down

        survivors = children_of(run.process.pid)
        assert run.stop() == 0, tail(run.log)
        assert running(survivors) == [], tail(run.log)
        assert "Traceback" not in run.output()
    finally:
        run.kill()


def cell_command(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*chubbypy_command(), "cell", "--config", str(config), "--no-web", *options],
        capture_output=True,
        text=True,
        env=child_environment(),
        cwd=config.parent,
        timeout=60,
        check=False,
    )


def fresh_data_dir(cell_file: LiveCell, data_dir: Path) -> None:
    """Point the cell file at `data_dir` (which the test makes sure does not exist)."""
    document = yaml.safe_load(cell_file.config_path.read_text())
    document["data_dir"] = str(data_dir)
    cell_file.config_path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_a_taken_port_refuses_the_start_in_one_line_naming_its_holder(tmp_path: Path) -> None:
    """Another process listening on r2's client port: exit 1, one line on stderr naming the
    port, what it is for and the process that holds it (this test's), no data directory."""
    cell_file = LiveCell(tmp_path)
    cell_file.write_config()
    data = tmp_path / "never-made"
    fresh_data_dir(cell_file, data)
    port = cell_file.ports["r2"].client
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        done = cell_command(cell_file.config_path)
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"chubbypy cell: port {port} (r2's client port) is in use by pid {os.getpid()} ("
    ), lines
    assert lines[0].endswith("stop it, or give the cell file other ports"), lines
    assert done.stdout == "", done.stdout
    assert not data.exists()


def test_a_data_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    """A data_dir below a file: exit 1, one line naming the directory and why, no traceback."""
    cell_file = LiveCell(tmp_path)
    cell_file.write_config()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    fresh_data_dir(cell_file, blocker / "data")
    done = cell_command(cell_file.config_path)
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        f"chubbypy cell: cannot prepare {blocker / 'data'}: Not a directory: "
        f"'{blocker / 'data' / '_secrets'}'"
    ], done.stderr


def test_a_bad_cell_file_is_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    """A cell file with a mistake in the supervisor: section: exit 2, the key named."""
    cell_file = supervised_cell(tmp_path, quick_exits_max=0)
    done = cell_command(cell_file.config_path)
    assert done.returncode == 2, done
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "supervisor.quick_exits_max: 0 is too small: expected at least 1" in done.stderr
    assert "Traceback" not in done.stderr
