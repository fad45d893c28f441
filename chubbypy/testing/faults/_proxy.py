"""The fault suite's delaying proxy: one per network namespace, in the path of every connection.

Test support. This kernel has no ``tc netem``, so delay is made here. The namespace's
nftables rule (`chubbypy.testing.faults._network.nft_tables`) redirects each outgoing
connection to a peer or client port to this proxy, on the namespace's own loopback; the
proxy finds where the connection was going (``SO_ORIGINAL_DST``), opens its own connection
there (marked, so the rule lets it pass, and from the namespace's address, so the other end
and every firewall rule see the real sender), and copies bytes both ways. Each chunk read
is written out `delay` milliseconds after it arrived, in order, where `delay` is the
current delay of that direction of that link, read from the control file the nemesis
rewrites (`write_delays`): a JSON object mapping the other end's address to [out, back]
milliseconds. A connection the other end does not answer within `CONNECT_SECONDS` (a cut
link) is closed, as the kernel would give up on it eventually; one that either end resets is
reset at the other end too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["CONNECT_SECONDS", "Delays", "main", "serve"]

SO_ORIGINAL_DST: Final = 80
"""From <linux/netfilter_ipv4.h>: the destination a redirected connection was meant for."""
CONNECT_SECONDS: Final = 3.0
CHUNK_BYTES: Final = 65536
LOOK_SECONDS: Final = 0.05


class Delays:
    """The control file's delays, looked at again every `LOOK_SECONDS`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._looked = 0.0
        self._stamp: float | None = None
        self._delays: dict[str, tuple[float, float]] = {}

    def of(self, address: str) -> tuple[float, float]:
        """Seconds of delay to `address` and back from it."""
        now = time.monotonic()
        if now - self._looked >= LOOK_SECONDS:
            self._looked = now
            self._look()
        return self._delays.get(address, (0.0, 0.0))

    def _look(self) -> None:
        try:
            stamp = self._path.stat().st_mtime_ns
            if stamp == self._stamp:
                return
            document = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return  # absent (no delays yet) or being replaced: keep what we have
        self._stamp = stamp
        self._delays = {
            address: (out / 1000.0, back / 1000.0) for address, (out, back) in document.items()
        }


def _original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(address), port


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: Callable[[], float],
    broken: Callable[[], None],
) -> None:
    """Copy `reader` to `writer`, each chunk `delay()` seconds after it was read. An end of
    stream is passed on (a half-close); an error on either side calls `broken`, which tears
    the whole connection down: a proxy that let one side live on after the other was reset
    would black-hole what that side sends (as a lost firewall state can), which no real
    link does for long."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if writer.transport.is_closing():
                    raise ConnectionResetError("the other side is gone")
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            broken()

    delivering = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(CHUNK_BYTES)
            queue.put_nowait((time.monotonic() + delay(), data))
            if not data:
                break
        await delivering
    except (ConnectionError, OSError):
        broken()
    finally:
        delivering.cancel()


async def _proxied(
    delays: Delays, mark: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    sock = writer.get_extra_info("socket")
    address, port = _original_destination(sock)
    outgoing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    outgoing.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    outgoing.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(outgoing, (address, port)), CONNECT_SECONDS)
        far_reader, far_writer = await asyncio.open_connection(sock=outgoing)
    except (TimeoutError, OSError):
        outgoing.close()
        writer.transport.abort()
        return

    def broken() -> None:
        far_writer.transport.abort()
        writer.transport.abort()

    try:
        await asyncio.gather(
            _pump(reader, far_writer, lambda: delays.of(address)[0], broken),
            _pump(far_reader, writer, lambda: delays.of(address)[1], broken),
        )
    finally:
        broken()


async def serve(port: int, control: Path, mark: int) -> None:
    """Proxy every connection redirected to `port` until cancelled."""
    delays = Delays(control)
    server = await asyncio.start_server(
        lambda reader, writer: _proxied(delays, mark, reader, writer), "127.0.0.1", port
    )
    print(f"delaying proxy on 127.0.0.1:{port}, delays from {control}", flush=True)
    async with server:
        await server.serve_forever()


def main(port: int, control: Path, mark: int) -> int:
    """Run the proxy until interrupted; the exit status."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, control, mark))
    return 0
