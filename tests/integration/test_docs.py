"""The user guide's examples (docs/guide.md), each run as written, as a program of its own,
against a live three-replica cell named ``local`` found through ``etc/cell.yaml``: what a
reader does after ``make run``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import LiveCell

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide.md"
EXAMPLE_SECONDS = 90


def examples(document: Path) -> list[tuple[str, str, str]]:
    """(id, language, code) of every ``python`` and ``sh`` block, named by its section."""
    found: list[tuple[str, str, str]] = []
    section = "top"
    counts: dict[str, int] = {}
    lines = iter(document.read_text().splitlines())
    for line in lines:
        heading = re.match(r"#+ (.*)", line)
        if heading:
            section = re.sub(r"[^a-z0-9]+", "-", heading.group(1).lower()).strip("-")
        fence = re.match(r"```(python|sh)\s*$", line)
        if fence:
            code = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                code.append(inner)
            counts[section] = counts.get(section, 0) + 1
            found.append((f"{section}-{counts[section]}", fence.group(1), "\n".join(code)))
    return found


EXAMPLES = examples(GUIDE)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory whose etc/cell.yaml names a fresh live cell called ``local``."""
    base = tmp_path_factory.mktemp("guide")
    # A development cell whose every client is an operator: the guide lists sessions.
    cell = LiveCell(base / "cell", name="local", auth={"admins": ["anonymous"]})
    cell.start()
    try:
        cell.wait_ready()
        (base / "etc").mkdir()
        shutil.copy(cell.config_path, base / "etc" / "cell.yaml")
        yield base
    finally:
        cell.close()


def test_the_guide_has_an_example_of_each_kind_for_each_front_end() -> None:
    """Lock, fencing, election, watch and CAS each come for blocking, asyncio and Twisted."""
    python = [(name, code) for name, language, code in EXAMPLES if language == "python"]
    for topic in ("locks", "fencing", "leader-election", "watching", "compare-and-swap"):
        codes = [code for name, code in python if name.startswith(topic)]
        assert any("from chubbypy.client import" in c and "connect(" in c for c in codes), topic
        assert any("aio.connect(" in c for c in codes), topic
        assert any("react(" in c for c in codes), topic


@pytest.mark.parametrize(("name", "language", "code"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_a_guide_example_runs_as_written(
    workdir: Path, name: str, language: str, code: str
) -> None:
    """The example exits 0 against the cell, within its time."""
    script = workdir / (f"{name}.py" if language == "python" else f"{name}.sh")
    script.write_text(code + "\n")
    bin_dir = str(Path(sys.executable).parent)
    environ = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    environ.pop("CHUBBY_CELL", None)
    command = [sys.executable, str(script)] if language == "python" else ["bash", "-e", str(script)]
    done = subprocess.run(
        command, cwd=workdir, env=environ, capture_output=True, timeout=EXAMPLE_SECONDS,
        check=False,
    )  # fmt: skip
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{output}"
