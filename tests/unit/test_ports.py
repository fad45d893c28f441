"""`chubbypy._ports`: the cell's ports, and who holds a taken one, read from a fake /proc."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from attrs import evolve

from chubbypy._ports import (
    Listener,
    cell_listeners,
    holder_of,
    listening_inodes,
    socket_inode,
    taken_line,
)
from chubbypy.config import load_config

ETC = Path(__file__).resolve().parents[2] / "etc"

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1BBD 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0
   1: 0100007F:1BBD 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 5555 1 0 20 4 30 10 -1
   2: 00000000:1BBE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1 0 100 0 0 10 0
   3: garbage
"""  # noqa: E501
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1BBD 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0 100 0 0 10 0
"""  # noqa: E501


def test_listening_sockets_are_found_by_port_in_either_table() -> None:
    """Only sockets in state LISTEN (0A) on the port count; connections and other ports not,
    and a line that is not a socket is passed over."""
    assert listening_inodes(TCP, 7101) == {4242}
    assert listening_inodes(TCP, 7102) == {7777}
    assert listening_inodes(TCP6, 7101) == {9999}
    assert listening_inodes(TCP, 80) == set()
    assert listening_inodes("", 7101) == set()


def test_a_descriptor_link_names_a_socket_inode_or_nothing() -> None:
    """`socket:[N]` gives N; a file, a pipe or a malformed link gives None."""
    assert socket_inode("socket:[4242]") == 4242
    assert socket_inode("pipe:[4242]") is None
    assert socket_inode("/var/log/syslog") is None
    assert socket_inode("socket:[42x]") is None


def fake_proc(root: Path, processes: dict[int, tuple[bytes, list[str]]]) -> Path:
    """A /proc with the tables above and `processes`: pid -> (cmdline, descriptor links)."""
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(TCP)
    (root / "net" / "tcp6").write_text(TCP6)
    (root / "self").mkdir()  # not a pid: passed over
    for pid, (command, links) in processes.items():
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(command)
        for number, link in enumerate(links):
            os.symlink(link, root / str(pid) / "fd" / str(number))
    return root


def test_the_holder_is_the_process_with_a_descriptor_on_the_listening_socket(
    tmp_path: Path,
) -> None:
    """The port's listening inode leads to the process holding it, named by pid and command
    line; an unheld or unlisted port to no one."""
    proc = fake_proc(
        tmp_path,
        {
            10: (b"bash\0", ["/dev/null", "socket:[5555]"]),
            20: (
                b"python3\0-m\0chubbypy.server\0serve\0--replica\0r1\0",
                ["pipe:[1]", "socket:[4242]"],
            ),
        },
    )
    assert holder_of(7101, proc) == "pid 20 (python3 -m chubbypy.server serve --replica r1)"
    assert holder_of(7102, proc) is None  # listening, but by no process this user sees
    assert holder_of(80, proc) is None


def test_a_long_or_hostile_command_line_is_cut_and_escaped(tmp_path: Path) -> None:
    """The holder's command line is shown escaped (no terminal control) and cut short."""
    proc = fake_proc(tmp_path, {30: (b"evil\x1b[2J\0" + b"x" * 500, ["socket:[4242]"])})
    holder = holder_of(7101, proc)
    assert holder is not None
    assert "\x1b" not in holder
    assert holder.startswith("pid 30 (evil\\x1b[2J x")
    assert holder.endswith("...)")
    assert len(holder) < 200


def test_no_proc_means_no_holder(tmp_path: Path) -> None:
    """Without /proc tables (not Linux) the holder is simply unknown."""
    assert holder_of(7101, tmp_path / "missing") is None


def test_every_port_of_the_cell_file_is_listed_with_its_purpose() -> None:
    """etc/cell.yaml: each replica's peer, client and admin port, then the page's (if
    started); unix endpoints have no port to check."""
    config = load_config(ETC / "cell.yaml")
    listeners = cell_listeners(config, with_web=True)
    assert listeners[:3] == [
        Listener("127.0.0.1", 7101, "r1's peer port"),
        Listener("127.0.0.1", 7201, "r1's client port"),
        Listener("127.0.0.1", 7301, "r1's admin port"),
    ]
    assert listeners[-1] == Listener("127.0.0.1", 7400, "the web page's port")
    assert len(listeners) == 10
    assert len(cell_listeners(config, with_web=False)) == 9
    first = evolve(config.replicas[0], client="unix:/tmp/r1.sock")
    unix = evolve(config, replicas=(first, *config.replicas[1:]))
    assert Listener("127.0.0.1", 7201, "r1's client port") not in cell_listeners(unix, False)


PEER = Listener("127.0.0.1", 7101, "r1's peer port")
IN_USE = OSError(errno.EADDRINUSE, "Address already in use")


def test_the_line_names_the_port_its_purpose_and_its_holder() -> None:
    """One line: the port, what for, who holds it, how many more are taken, what to do; a
    chubbypy holder suggests the cell runs already."""
    line = taken_line(PEER, IN_USE, "pid 20 (python3 -m chubbypy.server serve)", 9)
    assert line == (
        "port 7101 (r1's peer port) is in use by pid 20 (python3 -m chubbypy.server serve); "
        "9 more of its ports are taken too: is this cell running already? Stop it first "
        "(Ctrl-C), or give the cell file other ports"
    )
    assert taken_line(PEER, IN_USE, "pid 7 (nginx)", 0) == (
        "port 7101 (r1's peer port) is in use by pid 7 (nginx): stop it, or give the cell "
        "file other ports"
    )
    assert "is in use by another process (one this user cannot see)" in taken_line(
        PEER, IN_USE, None, 0
    )
    refused = OSError(errno.EACCES, "Permission denied")
    assert taken_line(PEER, refused, None, 0) == (
        "port 7101 (r1's peer port) cannot be listened on: Permission denied"
    )
    assert "\n" not in line
