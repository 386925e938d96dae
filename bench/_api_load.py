"""API load from a second process (bench 4): GET requests in a loop from a few threads.

    python -m bench._api_load --base http://127.0.0.1:PORT --duration 60 [--threads 4]

Prints one JSON object: requests, errors, requests/s and latency percentiles.
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time
from urllib.parse import urlsplit

from bench.common import emit, stats_ms

PATHS = ("/api/v1/status", "/api/v1/health", "/metrics", "/api/v1/measurements", "/api/v1/events")


def _hammer(host: str, port: int, until: float, lat: list[float], errors: list[int], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    i = 0
    mine: list[float] = []
    errs = 0
    while time.monotonic() < until:
        path = PATHS[i % len(PATHS)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status >= 500:
                errs += 1
            mine.append(time.perf_counter() - t0)
        except (OSError, http.client.HTTPException):
            errs += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.close()
    with lock:
        lat.extend(mine)
        errors.append(errs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=4)
    a = p.parse_args()
    u = urlsplit(a.base)
    until = time.monotonic() + a.duration
    lat: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_hammer, args=(u.hostname, u.port, until, lat, errors, lock), daemon=True) for _ in range(a.threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.duration + 30)
    wall = time.monotonic() - t0
    emit(
        {
            "requests": len(lat),
            "errors": sum(errors),
            "requests_per_s": round(len(lat) / wall, 1),
            "latency": stats_ms(lat),
            "threads": a.threads,
            "paths": list(PATHS),
        }
    )


if __name__ == "__main__":
    main()
