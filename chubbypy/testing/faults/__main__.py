"""``python -m chubbypy.testing.faults``: a fault run (`make faults`), and its parts.

* ``run`` (the default): one fault run; see `chubbypy.testing.faults._suite`.
* ``check DIR``: judge the history a kept run left in DIR again.
* ``worker ...`` and ``proxy PORT CONTROL MARK``: the client processes and the delaying
  proxies a run starts on its hosts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from chubbypy.testing.faults._linearizability import STEPS_MAX_DEFAULT
from chubbypy.testing.faults._nemesis import KINDS


def _say(line: str) -> None:
    print(f"faults: {line}", flush=True)


def _stopped(signal_number: int, frame: object) -> None:
    """SIGTERM ends a run as Ctrl-C does: through its clean-up (processes, namespaces)."""
    raise KeyboardInterrupt(f"signal {signal_number}")


def _run(args: argparse.Namespace) -> int:
    from chubbypy.testing.faults._suite import Settings, run

    signal.signal(signal.SIGTERM, _stopped)
    seed = args.seed if args.seed is not None else int(time.time())
    directory = args.dir or Path("var") / "faults" / time.strftime(f"%Y%m%d-%H%M%S-seed{seed}")
    settings = Settings(
        seconds=args.seconds,
        seed=seed,
        directory=directory.resolve(),
        replicas=args.replicas,
        loopback=args.loopback,
        keep=args.keep,
        steps_max=args.steps_max,
        kinds=tuple(args.kinds.split(",")) if args.kinds else KINDS,
    )
    try:
        return run(settings, _say)
    except KeyboardInterrupt:
        _say(f"interrupted: every process and namespace it made is gone; kept {settings.directory}")
        return 130


def _check(args: argparse.Namespace) -> int:
    from chubbypy.testing.faults._check import check_history
    from chubbypy.testing.faults._history import read_history

    report = check_history(read_history(args.directory), args.steps_max)
    for line in report.summary():
        _say(line)
    if not report.passed:
        print(report.explain(), flush=True)
    return 0 if report.passed else 1


def _worker(args: argparse.Namespace) -> int:
    from chubbypy.testing.faults._workload import keys_of, run_worker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return run_worker(
        name=args.name,
        workload=args.workload,
        threads=args.threads,
        cell_file=args.cell_file,
        cell=args.cell,
        keys=keys_of(args.workload, args.registers, args.locks),
        history=args.history,
        stop=stop,
        seed=args.seed,
        log=lambda line: print(line, flush=True),
    )


def _proxy(args: argparse.Namespace) -> int:
    from chubbypy.testing.faults._proxy import main

    return main(args.port, args.control, int(args.mark, 0))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m chubbypy.testing.faults")
    commands = top.add_subparsers(dest="command")
    run = commands.add_parser("run", help="one fault run (the default)")
    _run_options(run)
    _run_options(top)
    check = commands.add_parser("check", help="judge a kept run's history again")
    check.add_argument("directory", type=Path)
    check.add_argument("--steps-max", type=int, default=STEPS_MAX_DEFAULT)
    worker = commands.add_parser("worker", help="a client process (a run starts these)")
    worker.add_argument("--name", required=True)
    worker.add_argument("--workload", required=True, choices=("register", "cached", "lock"))
    worker.add_argument("--threads", type=int, default=1)
    worker.add_argument("--cell-file", type=Path, required=True)
    worker.add_argument("--cell", required=True)
    worker.add_argument("--registers", type=int, default=4)
    worker.add_argument("--locks", type=int, default=2)
    worker.add_argument("--history", type=Path, required=True)
    worker.add_argument("--seed", type=int, default=0)
    proxy = commands.add_parser("proxy", help="a delaying proxy (a run starts these)")
    proxy.add_argument("port", type=int)
    proxy.add_argument("control", type=Path)
    proxy.add_argument("mark")
    return top


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="how long faults go on")
    parser.add_argument("--seed", type=int, help="the fault schedule's seed (default: the time)")
    parser.add_argument("--replicas", type=int, choices=(3, 5), default=3)
    parser.add_argument("--dir", type=Path, help="the run's directory (default var/faults/...)")
    parser.add_argument("--keep", action="store_true", help="keep the directory after a pass")
    parser.add_argument("--loopback", action="store_true", help="the loopback variant even as root")
    parser.add_argument("--steps-max", type=int, default=STEPS_MAX_DEFAULT)
    parser.add_argument(
        "--kinds", help=f"the kinds of fault, comma-separated (default all: {','.join(KINDS)})"
    )


def main() -> int:
    args = parser().parse_args()
    match args.command:
        case "check":
            return _check(args)
        case "worker":
            return _worker(args)
        case "proxy":
            return _proxy(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
