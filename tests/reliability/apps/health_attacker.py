"""A hostile client of the health server, run as its own process by tests/reliability/test_health_attacks.py.

``python health_attacker.py MODE PORT SECONDS [CONNECTIONS [SOURCES]]`` attacks ``127.0.0.1:PORT`` for
SECONDS (from SOURCES loopback addresses, 127.0.0.2 and up, when more than 1) and prints one JSON
line of what it did. Its own process, so its work never steals the GIL from
the client that measures ``/health`` latency. Every loop is bounded in time and in connections.

Modes (the attacks of the red-team report, issue 11):

- ``hold``: open CONNECTIONS idle connections, send nothing, re-dial any the server closes a second
  later (the red team re-dialled every 10 s);
- ``slowloris``: CONNECTIONS connections each sending one byte of a request head per second,
  re-dialled a second after the server closes one;
- ``pipeline-noread``: CONNECTIONS connections each writing thousands of pipelined ``GET /metrics``
  and never reading an answer;
- ``pipeline-read``: the same, reading every answer as fast as it comes;
- ``malformed``: bad requests on fresh connections as fast as they are answered (a non-ASCII digit
  in Content-Length, a 1 MB body, 20 KB of headers, garbage, no Host, HTTP/2.0 ...);
- ``heartbeats``: ``POST /rfid/heartbeat`` batches of ~60 KB over a fleet of 12,000 reader ids (more
  than the 10,000 remembered, so every batch evicts), on CONNECTIONS keep-alive connections.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

PIPELINE_BATCH = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 500
BAD = [
    "POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\nab".encode(),
    "POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: \uff19\r\n\r\nab".encode(),
    b"POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 65536,
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",
    b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello on the plain port
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.responses = 0
        self.closed_by_server = 0
        self.errors = 0


#: Distinct loopback source addresses to dial from (127.0.0.2 ...): 1 is 127.0.0.1 only.
SOURCES = 1
_dialled = 0


async def _open(port: int, stats: Stats) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    global _dialled
    _dialled += 1
    local = None if SOURCES <= 1 else (f"127.0.0.{2 + _dialled % SOURCES}", 0)
    try:
        pair = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20, local_addr=local), 5)
    except (OSError, TimeoutError):
        stats.errors += 1
        await asyncio.sleep(0.1)
        return None
    stats.connections += 1
    return pair


async def hold(port: int, until: float, stats: Stats) -> None:
    while time.monotonic() < until:
        pair = await _open(port, stats)
        if pair is None:
            continue
        reader, writer = pair
        try:
            await asyncio.wait_for(reader.read(1), max(0.01, until - time.monotonic()))
            stats.closed_by_server += 1  # EOF or an answer: the server let go of it; dial again soon
        except (TimeoutError, OSError):
            pass
        writer.close()
        await asyncio.sleep(min(1.0, max(0.0, until - time.monotonic())))


async def slowloris(port: int, until: float, stats: Stats) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    while time.monotonic() < until:
        pair = await _open(port, stats)
        if pair is None:
            continue
        reader, writer = pair
        try:
            for i in range(len(head)):
                if time.monotonic() >= until or reader.at_eof():
                    break
                writer.write(head[i:i + 1])
                await writer.drain()
                await asyncio.sleep(1.0)
        except OSError:
            pass
        stats.closed_by_server += 1
        writer.close()
        await asyncio.sleep(min(1.0, max(0.0, until - time.monotonic())))  # then dial again


async def _read_answers(reader: asyncio.StreamReader, stats: Stats) -> None:
    while not reader.at_eof():
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        stats.responses += chunk.count(b"HTTP/1.1 200")


async def pipeline(port: int, until: float, stats: Stats, read: bool) -> None:
    while time.monotonic() < until:
        pair = await _open(port, stats)
        if pair is None:
            continue
        reader, writer = pair

        drainer = asyncio.ensure_future(_read_answers(reader, stats)) if read else None
        try:
            while time.monotonic() < until:
                writer.write(PIPELINE_BATCH)
                stats.requests += 500
                # Without reading, the socket buffers fill and drain() waits: bounded by the deadline.
                await asyncio.wait_for(writer.drain(), max(0.01, until - time.monotonic()))
        except (OSError, TimeoutError):
            pass
        if drainer is not None:
            drainer.cancel()
        writer.transport.abort()


async def malformed(port: int, until: float, stats: Stats, worker: int) -> None:
    i = worker
    while time.monotonic() < until:
        pair = await _open(port, stats)
        if pair is None:
            continue
        reader, writer = pair
        try:
            writer.write(BAD[i % len(BAD)])
            stats.requests += 1
            i += 1
            answer = await asyncio.wait_for(reader.read(4096), 5)
            if answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"):
                stats.responses += 1
        except (OSError, TimeoutError):
            stats.errors += 1
        writer.transport.abort()


def _heartbeat_batch(start: int, size: int = 1500) -> bytes:
    fleet = 12_000
    items = [{"reader_id": f"school-{(start + k) % fleet // 100:03d}/reader-{(start + k) % fleet:05d}"}
             for k in range(size)]
    return json.dumps(items, separators=(",", ":")).encode()


async def heartbeats(port: int, until: float, stats: Stats, worker: int) -> None:
    offset = worker * 3000
    while time.monotonic() < until:
        pair = await _open(port, stats)
        if pair is None:
            continue
        reader, writer = pair
        try:
            while time.monotonic() < until:
                body = _heartbeat_batch(offset)
                offset += 1500
                writer.write(b"POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                stats.requests += 1
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    stats.responses += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError, ValueError):
            stats.errors += 1
        writer.transport.abort()


async def main(mode: str, port: int, seconds: float, connections: int) -> Stats:
    stats = Stats()
    until = time.monotonic() + seconds
    if mode == "hold":
        tasks = [hold(port, until, stats) for _ in range(connections)]
    elif mode == "slowloris":
        tasks = [slowloris(port, until, stats) for _ in range(connections)]
    elif mode in ("pipeline-noread", "pipeline-read"):
        tasks = [pipeline(port, until, stats, read=mode == "pipeline-read") for _ in range(connections)]
    elif mode == "malformed":
        tasks = [malformed(port, until, stats, i) for i in range(connections)]
    elif mode == "heartbeats":
        tasks = [heartbeats(port, until, stats, i) for i in range(connections)]
    else:
        raise SystemExit(f"unknown mode {mode}")
    await asyncio.gather(*tasks)
    return stats


if __name__ == "__main__":
    mode, port_text, seconds_text = sys.argv[1:4]
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    SOURCES = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    result = asyncio.run(main(mode, int(port_text), float(seconds_text), conns))
    print(json.dumps(vars(result)), flush=True)
