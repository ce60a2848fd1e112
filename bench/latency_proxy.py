"""A TCP proxy on loopback that delivers what the server sends `delay` seconds late, as a store far away would (the
first byte of every response waits; bytes keep their order and nothing else is slowed). For bench/object_store.py.
"""

import asyncio
import threading
import time


class LatencyProxy:
    """Listens on 127.0.0.1:`port` (0: any free port, then `.port`) and forwards to 127.0.0.1:`target`."""

    def __init__(self, target: int, delay: float):
        self.target, self.delay, self.port = target, delay, 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="latency-proxy")

    def __enter__(self) -> "LatencyProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pipe(reader, upstream_writer, 0.0), self._pipe(upstream_reader, writer, self.delay),
                             return_exceptions=True)

    async def _pipe(self, reader, writer, delay: float) -> None:
        queue = asyncio.Queue()

        async def deliver():
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                queue.put_nowait((time.monotonic() + delay, chunk))
        finally:
            queue.put_nowait((0.0, None))
            await sender
