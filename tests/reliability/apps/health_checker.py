"""The ALB's side of the attack tests: health checks on fresh connections, each timed.

``python health_checker.py PORT SECONDS MIN_SAMPLES`` checks ``/health`` and ``/health/live`` in
turn (a new connection each, like an ALB target-group check) for SECONDS and at least
MIN_SAMPLES times, then prints one JSON line: ``{"samples": [[path, status, seconds], ...]}``.
Status 0 is a failed check (refused, reset, closed without an answer).
"""

from __future__ import annotations

import json
import socket
import sys
import time


def check(port: int, path: str, timeout: float = 5.0) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\n"
                      f"Connection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0, time.perf_counter() - started
    took = time.perf_counter() - started
    try:
        return int(data.split(b" ", 2)[1]), took
    except (IndexError, ValueError):
        return 0, took


def main(port: int, seconds: float, min_samples: int) -> list[tuple[str, int, float]]:
    samples: list[tuple[str, int, float]] = []
    until = time.monotonic() + seconds
    hard_stop = until + 60.0
    while (time.monotonic() < until or len(samples) < min_samples) and time.monotonic() < hard_stop:
        path = "/health" if len(samples) % 2 == 0 else "/health/live"
        status, took = check(port, path)
        samples.append((path, status, took))
        time.sleep(0.005)  # an ALB polls; it does not flood
    return samples


if __name__ == "__main__":
    out = main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps({"samples": out}), flush=True)
