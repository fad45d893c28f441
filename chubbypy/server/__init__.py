"""The Twisted shell of one replica process (`serve_main`): the driver of its
`chubbypy.node.ReplicaNode`.

Shell side (STYLE §1, §6): turns sockets, a monotonic clock and a SQL store into inputs
for the pure node, and its outputs back into writes and sends.
"""

from chubbypy.server._serve import serve_main

__all__ = ["serve_main"]
