"""A loopback TCP proxy that adds network latency: `python -m benchmarks.latency_proxy
LISTEN_PORT TARGET_PORT RTT_MS`.

On loopback an S3 request costs what the server's CPU costs; against a real S3 endpoint every
request also waits a network round trip, which is what parallel uploads hide and a one-by-one
uploader pays in full. This proxy delays every chunk by half the round trip in each direction
without limiting bandwidth (chunks are scheduled by arrival time, not sent one delay after the
other), so each request/response exchange costs one extra RTT, as over a kept-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

CHUNK = 256 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, b""))

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.gather(receive(), send())


async def _handle(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: int, delay: float
) -> None:
    try:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, upstream_w, delay), _pipe(upstream_r, client_w, delay))
    for writer in (client_w, upstream_w):
        writer.close()


async def serve(listen: int, target: int, rtt_ms: float) -> None:
    delay = rtt_ms / 2000

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _handle(r, w, target, delay)

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=256)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
