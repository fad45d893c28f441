"""`chubbypy cell` starts the web page beside the replicas, prints its URL, and stops it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import yaml

from tests.integration.harness import LiveCell, poll, tail
from tests.integration.test_cell_command import CellCommand, running
from tests.integration.web_harness import WebClient

PORT_BASE: Final = 7484
"""A fixed port (the banner prints the file's web.listen), one per xdist worker."""


def fixed_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return PORT_BASE + 20 * int(worker or 0)


def test_the_cell_command_serves_the_page_and_prints_its_url(tmp_path: Path) -> None:
    """The banner gives the page's URL; the page shows this cell and its master; SIGTERM
    stops the page with the replicas, and the cell exits 0."""
    cell_file = LiveCell(tmp_path)  # only its cell file
    cell_file.write_config()
    document: dict[str, Any] = yaml.safe_load(cell_file.config_path.read_text())
    port = fixed_port()
    document["web"] = {"listen": f"tcp:{port}:interface=127.0.0.1"}
    cell_file.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    run = CellCommand(cell_file.config_path, tmp_path / "cell.log", web=True)
    try:
        master = run.wait_master().split()[2]
        url = f"http://127.0.0.1:{port}/"
        assert f"web page: {url}" in run.output()
        said = f"web | chubbypy web: the page of cell {cell_file.name!r} is at {url}"
        poll(lambda: said in run.output(), "the page says it listens", 20, lambda: tail(run.log))
        page = WebClient(url.rstrip("/"))
        figures = poll(
            lambda: (f := page.get("/api/cell").json())["master"] and f,
            "the page sees the master",
            20,
        )
        assert (figures["cell"], figures["master"]) == (cell_file.name, master)
        assert cell_file.name in page.get("/tree").text
        processes = run.replicas
        assert any("chubbypy.web" in command for _, command in processes), processes
        assert run.stop() == 0, tail(run.log)
        assert running(processes) == [], "the page and the replicas stopped with the cell"
    finally:
        run.kill()
