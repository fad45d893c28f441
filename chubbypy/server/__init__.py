"""The Twisted shell: one replica's process (`serve_main`) and a local cell of them (`cell_main`).

Shell side (STYLE §1, §6): turns sockets, a monotonic clock and a SQL store into inputs
for the pure core, and its outputs back into writes and sends.
"""

from chubbypy.server._cell import cell_main
from chubbypy.server._serve import serve_main

__all__ = ["cell_main", "serve_main"]
