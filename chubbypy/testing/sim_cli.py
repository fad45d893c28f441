"""`chubbypy-sim`: run the cell simulator over many seeds, or replay one with narration.

    chubbypy-sim --seeds 2000 [--start S] [--replicas 3|5] [--jobs J] [--bug NAME]
    chubbypy-sim --seed 1234 [--replicas 5] --narrate

Prints one line per failing seed with the command that replays it, and ends with
``N seeds, V violations``. Exit status: 0 if no seed failed, 1 if any did, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from attrs import evolve

from chubbypy.client.core import ClientBug
from chubbypy.node import NodeBug
from chubbypy.paxos import Bug
from chubbypy.testing._cell import KNOWN_BUGS, SimResult, SimSettings
from chubbypy.testing._lock_client import LockBug
from chubbypy.testing._scenarios import SCENARIOS

WORKLOADS = {
    "cell": "register clients and lock clients in one cell: every checker",
    "registers": "register clients only (writes, reads and increments of files)",
    "locks": "lock clients only (sessions, locks, fenced writes, cached reads)",
}


BUGS: dict[str, Bug | NodeBug | ClientBug | LockBug] = {
    bug.value: bug for kind in (Bug, NodeBug, ClientBug, LockBug) for bug in kind
}
"""Every deliberate bug by name: the Paxos core's, the node's, the client core's and the
lock program's."""


def _settings(
    replicas: int, bugs: Sequence[str], drift_factor: float, workload: str = "cell"
) -> SimSettings:
    assert workload in WORKLOADS, workload
    chosen = [BUGS[name] for name in bugs]
    return evolve(
        SimSettings(),
        replicas=replicas,
        bugs=frozenset(bug for bug in chosen if isinstance(bug, Bug)),
        node_bugs=frozenset(bug for bug in chosen if isinstance(bug, NodeBug)),
        client_bugs=frozenset(bug for bug in chosen if isinstance(bug, ClientBug)),
        lock_bugs=frozenset(bug for bug in chosen if isinstance(bug, LockBug)),
        drift_factor=drift_factor,
        locks=workload in ("cell", "locks"),
        registers=workload != "locks",
    )


def run_seed(seed: int, settings: SimSettings, scenario: str = "random") -> SimResult:
    """One whole run of `scenario` (faults, heal, liveness, final checks) for `seed`."""
    return SCENARIOS[scenario](seed, settings)


def _run_many(seeds: range, settings: SimSettings, scenario: str, jobs: int) -> Iterator[SimResult]:
    if jobs <= 1:
        for seed in seeds:
            yield run_seed(seed, settings, scenario)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        count = len(seeds)
        yield from pool.map(run_seed, seeds, [settings] * count, [scenario] * count, chunksize=4)


def replay_command(result: SimResult, args: argparse.Namespace) -> str:
    parts = ["chubbypy-sim", "--seed", str(result.seed), "--replicas", str(result.replicas)]
    if args.scenario != "random":
        parts += ["--scenario", args.scenario]
    for bug in args.bug:
        parts += ["--bug", bug]
    if args.drift_factor != 1.0:
        parts += ["--drift-factor", str(args.drift_factor)]
    if args.workload != "cell":
        parts += ["--workload", args.workload]
    return " ".join([*parts, "--narrate"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chubbypy-sim",
        description="Run a simulated chubbypy cell under random faults, one seed per run, "
        "and check agreement, lease safety, durability, consistency and liveness.",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    target.add_argument("--seed", type=int, help="replay exactly this seed")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--replicas", type=int, choices=(3, 5), default=3)
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="random",
        help="random faults (default), or a fault pattern aimed at one class of failure",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes to use")
    parser.add_argument(
        "--bug",
        action="append",
        default=[],
        choices=sorted(BUGS),
        help="switch on a deliberate bug (to see the checkers catch it): the Paxos core's, "
        "the replica node's, the client core's or the lock program's",
    )
    parser.add_argument(
        "--drift-factor",
        type=float,
        default=1.0,
        help="scale clock drift relative to the configured bound (above 1 is unsafe)",
    )
    parser.add_argument(
        "--workload",
        choices=list(WORKLOADS),
        default="cell",
        help="; ".join(f"{name}: {text}" for name, text in WORKLOADS.items()),
    )
    parser.add_argument(
        "--locks",
        dest="workload",
        action="store_const",
        const="locks",
        help="the same as --workload locks",
    )
    parser.add_argument("--narrate", action="store_true", help="tell what happens, as it happens")
    parser.add_argument("--json", action="store_true", help="one JSON object per seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        print("chubbypy-sim: --seeds must be at least 1", file=sys.stderr)
        return 2
    settings = _settings(args.replicas, args.bug, args.drift_factor, args.workload)
    if args.seed is not None:
        return _replay(args, settings)
    seeds = range(args.start, args.start + args.seeds)
    started = time.monotonic()
    violations = 0
    known: list[int] = []
    simulated = 0.0
    for result in _run_many(seeds, settings, args.scenario, args.jobs):
        simulated += result.simulated_seconds
        if args.json:
            print(json.dumps(_as_json(result)), flush=True)
        if result.known:
            known.append(result.seed)
        if not result.ok:
            violations += 1
            first = result.violations[0]
            print(f"seed {result.seed}: {first}  --  replay: {replay_command(result, args)}")
    elapsed = time.monotonic() - started
    print(
        f"({simulated:.0f} simulated seconds in {elapsed:.1f}s, "
        f"{simulated / max(elapsed, 1e-9):.0f}x real time)",
        file=sys.stderr,
    )
    print(f"{len(seeds)} seeds, {violations} violations{_known_line(known, settings)}")
    return 1 if violations else 0


def _known_line(seeds: list[int], settings: SimSettings) -> str:
    """What the run says of the known bugs it saw (not counted as violations)."""
    if not seeds:
        return ""
    known = "; ".join(f"{name}: {KNOWN_BUGS[name]}" for name in sorted(settings.known_bugs))
    shown = ", ".join(map(str, seeds[:5])) + (", ..." if len(seeds) > 5 else "")
    return (
        f"\n(not counted: {len(seeds)} seeds show a known bug not fixed yet, {known}; "
        f"seeds {shown}; replay one with --seed N --narrate)"
    )


def _replay(args: argparse.Namespace, settings: SimSettings) -> int:
    narrate = print if args.narrate else None
    result = SCENARIOS[args.scenario](args.seed, settings, narrate)
    if args.json:
        print(json.dumps(_as_json(result)))
    for violation in result.violations:
        print(f"VIOLATION {violation}")
    for violation in result.known:
        print(f"KNOWN BUG (not counted as a violation) {violation}")
    print(
        f"seed {result.seed}: {result.operations} operations ({result.acknowledged} acknowledged), "
        f"{result.committed_index} entries committed, {result.elections} elections, "
        f"{result.events} events, trace {result.trace_hash}"
    )
    known = [result.seed] if result.known else []
    print(f"1 seeds, {0 if result.ok else 1} violations{_known_line(known, settings)}")
    return 0 if result.ok else 1


def _as_json(result: SimResult) -> dict[str, object]:
    return {
        "seed": result.seed,
        "replicas": result.replicas,
        "ok": result.ok,
        "violations": [str(v) for v in result.violations],
        "known_bugs": [str(v) for v in result.known],
        "operations": result.operations,
        "acknowledged": result.acknowledged,
        "committed_index": result.committed_index,
        "elections": result.elections,
        "trace": result.trace_hash,
    }


if __name__ == "__main__":
    sys.exit(main())
