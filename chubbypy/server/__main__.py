"""`python -m chubbypy.server serve ...` (what `chubbypy cell` spawns) / `... cell ...`."""

from __future__ import annotations

import argparse
import sys

from chubbypy._cli_cell import cell_parser
from chubbypy.server._serve import serve_parser


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chubbypy.server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser(commands.add_parser("serve", help="run one replica"))
    cell_parser(commands.add_parser("cell", help="run a local cell of replicas"))
    args = parser.parse_args()
    if args.command == "serve":
        from chubbypy.server import serve_main

        return serve_main(args)
    from chubbypy._cli_cell import cell_main

    return cell_main(args)


if __name__ == "__main__":
    sys.exit(main())
