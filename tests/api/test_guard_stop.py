"""What the HTTP guard checks before it cuts a TLS connection when the server stops (``api/guard.py``): that
the client has every byte written to it, acknowledged by its kernel, not only handed to the socket."""

from __future__ import annotations

import asyncio
import socket

from zeroscale.api.guard import _unacknowledged

SIZE = 32 << 20  # far more than the kernel's buffers on both sides hold


def test_bytes_a_client_has_not_read_yet_count_until_it_reads_them() -> None:
    async def run() -> tuple[int, int]:
        accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer)
            await reader.read()  # until the client goes

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        writer = await accepted
        writer.write(b"x" * SIZE)  # the client does not read
        await asyncio.sleep(0.2)
        stalled = _unacknowledged(writer.transport)

        def read_all() -> None:
            got = 0
            while got < SIZE:
                got += len(client.recv(1 << 20))

        await asyncio.to_thread(read_all)
        await asyncio.sleep(0.2)
        done = _unacknowledged(writer.transport)
        client.close()
        server.close()
        return stalled, done

    stalled, done = asyncio.run(run())
    assert stalled > 0 and done == 0
