"""`python -m chubbypy.web --config FILE [--listen ENDPOINT]`: what `chubbypy cell` spawns."""

from __future__ import annotations

import argparse
import sys

from chubbypy.web._server import web_main, web_parser


def main() -> int:
    parser = web_parser(argparse.ArgumentParser(prog="python -m chubbypy.web"))
    return web_main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
