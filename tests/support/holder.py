"""Holds many idle or slow (slowloris) HTTP connections open to a server, from a process of its own, as an
attacker would: `python -m tests.support.holder HOST PORT IDLE SLOW SECONDS`.

Idle connections send nothing; slow ones send a request line and then one header line every half second,
never finishing the head. A connection the server closes is opened again at once, so the number held
stays up. Prints one JSON line when the first round is connected ({"ready": ..., "held": N}) and one at
the end with what happened.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time


class _Counts:
    def __init__(self) -> None:
        self.held = 0
        self.most = 0
        self.closed_by_server = 0
        self.refused = 0
        self.failed = 0
        self.answers: dict[str, int] = {}


async def _hold(host: str, port: int, slow: bool, until: float, counts: _Counts) -> None:
    while time.monotonic() < until:
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            counts.failed += 1
            await asyncio.sleep(0.2)
            continue
        counts.held += 1
        counts.most = max(counts.most, counts.held)
        try:
            if slow:
                writer.write(b"POST /hooks/okta HTTP/1.1\r\nHost: responder\r\n")
            n = 0
            while time.monotonic() < until:
                try:
                    async with asyncio.timeout(0.5):
                        data = await reader.read(4096)
                except TimeoutError:
                    if slow:
                        n += 1
                        writer.write(f"X-Trickle-{n}: {n}\r\n".encode())
                    continue
                if data:
                    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "?"
                    counts.answers[status] = counts.answers.get(status, 0) + 1
                    continue
                counts.closed_by_server += 1
                break
        except OSError:
            counts.closed_by_server += 1
        finally:
            counts.held -= 1
            writer.close()


async def main(host: str, port: int, idle: int, slow: int, seconds: float) -> None:
    until = time.monotonic() + seconds
    counts = _Counts()
    tasks = []
    for i in range(idle + slow):
        tasks.append(asyncio.create_task(_hold(host, port, i >= idle, until, counts)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 15
    while counts.held < idle + slow and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    print(json.dumps({"ready": True, "held": counts.held}), flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps({"done": True, "most": counts.most, "closed_by_server": counts.closed_by_server,
                      "failed": counts.failed, "answers": counts.answers}), flush=True)  # fmt: skip


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    h, p, i, s, secs = sys.argv[1:6]
    asyncio.run(main(h, int(p), int(i), int(s), float(secs)))
