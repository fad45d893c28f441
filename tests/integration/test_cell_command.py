"""The main job, ``python -m chubbypy.server cell``: starts, serves, stops cleanly, restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.harness import (
    REPLICA_IDS,
    LiveCell,
    Measure,
    child_environment,
    chubbypy_command,
    poll,
    tail,
)

START_SECONDS = 20.0
STOP_SECONDS = 8.0
"""SIGTERM to exit: the cell allows its replicas 10 s before it kills them, but a graceful
stop of three replicas takes well under a second."""


class CellCommand:
    """One run of ``python -m chubbypy.server cell --config FILE``, output to a log file."""

    def __init__(self, config: Path, log: Path, *, web: bool = False) -> None:
        self.log = log
        command = [sys.executable, "-m", "chubbypy.server", "cell", "--config", str(config)]
        if not web:
            command.append("--no-web")  # the replicas alone (the web page: test_web_*)
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=config.parent,
                env=child_environment(),
                start_new_session=True,
            )
        self.replicas: list[tuple[int, str]] = []
        """The replica processes this run started: pid and command line."""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_master(self) -> str:
        """The ``-- master:`` line, once the cell prints it; notes the replica processes."""

        def announced() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the cell exited ({self.process.returncode})\n{tail(self.log)}"
                )
            lines = self.output().splitlines()
            return next((line for line in lines if line.startswith("-- master:")), None)

        line = poll(announced, "the cell prints its master", START_SECONDS, lambda: tail(self.log))
        self.replicas = children_of(self.process.pid)
        return line

    def stop(self) -> int | None:
        """SIGTERM, and the exit status (None if it did not exit in `STOP_SECONDS`)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill whatever is left of this run: its replicas, then the cell process."""
        for pid in running(self.replicas):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def children_of(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is `pid`, with their command lines (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append((int(stat.parent.name), command))
    return children


def running(processes: list[tuple[int, str]]) -> list[int]:
    """Those of `processes` that still run (not gone, not zombies, not another process that
    took the pid since)."""
    alive = []
    for pid, command in processes:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            now = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state != "Z" and now == command:
            alive.append(pid)
    return alive


def test_cell_command_runs_stops_cleanly_and_keeps_its_data(
    tmp_path: Path, measure: Measure
) -> None:
    """The cell serves, exits 0 on SIGTERM with no replica left, and restarts with its data."""
    cell_file = LiveCell(tmp_path)  # only its cell file and its CLI runner
    cell_file.write_config()
    first = CellCommand(cell_file.config_path, cell_file.directory / "cell-1.log")
    try:
        started_at = time.monotonic()
        first.wait_master()
        measure("chubbypy cell: start to '-- master:'", time.monotonic() - started_at)
        assert "a new cell: every replica starts empty" in first.output()
        assert len(first.replicas) == len(REPLICA_IDS), first.output()
        assert all("chubbypy.server serve" in command for _, command in first.replicas)
        status = cell_file.cli("--json", "status")
        assert status.code == 0, status
        assert status.json()["master"] in REPLICA_IDS, status
        assert all(r["reachable"] for r in status.json()["replicas"]), status
        assert cell_file.cli("put", "kept", "across restarts").code == 0

        stopped_at = time.monotonic()
        exit_status = first.stop()
        measure("chubbypy cell: SIGTERM to exit", time.monotonic() - stopped_at)
        assert exit_status == 0, f"exit status {exit_status}\n{tail(first.log)}"
        assert running(first.replicas) == [], tail(first.log)
        assert "stopping the cell" in first.output()
    finally:
        first.kill()

    second = CellCommand(cell_file.config_path, cell_file.directory / "cell-2.log")
    try:
        second.wait_master()
        assert "a new cell" not in second.output()
        kept = cell_file.cli("cat", "kept")
        assert (kept.code, kept.output) == (0, b"across restarts"), kept
        assert second.stop() == 0, tail(second.log)
        assert running(second.replicas) == [], tail(second.log)
    finally:
        second.kill()


def test_auto_tls_on_a_cell_file_without_tls_is_refused_in_one_line(tmp_path: Path) -> None:
    """`chubbypy cell --auto-tls` on a cell file with no tls: section exits 2 with one line
    saying so (it used to make no certificate and say nothing), and makes no directory."""
    shipped = Path(__file__).resolve().parents[2] / "etc" / "cell.yaml"
    data = tmp_path / "var"
    options = ["--config", str(shipped), "--data-dir", str(data), "--auto-tls", "--init"]
    done = subprocess.run(
        [*chubbypy_command(), "cell", *options],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--auto-tls makes the certificates a tls: section names" in done.stderr
    assert not data.exists()
