#!/usr/bin/env python3
"""N sequential short HTTP requests, each on a fresh connection.

Usage: reqs.py HOST N [ADDR]

Each request: connect to ADDR:80 (default: HOST resolved once, before the
clock starts), `GET /small` with `Host: HOST` and `Connection: close`,
read to end of stream, check the status line, close. Prints one line:
`reqs_per_s RATE p50_ms P50 p99_ms P99 errors E`. Every connect and read
has a 5 s timeout, so a stuck request cannot hang the run.
"""
import socket
import sys
import time


def one(addr, req):
    s = socket.create_connection((addr, 80), timeout=5)
    try:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n")


def main():
    host, n = sys.argv[1], int(sys.argv[2])
    addr = sys.argv[3] if len(sys.argv) > 3 else socket.gethostbyname(host)
    req = f"GET /small HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    for _ in range(20):  # warm-up: caches, the guard's first connections
        one(addr, req)
    lat = []
    errors = 0
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        try:
            ok = one(addr, req)
        except OSError:
            ok = False
        errors += not ok
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    print(f"reqs_per_s {n / elapsed:.1f} p50_ms {p(0.5):.3f} p99_ms {p(0.99):.3f} errors {errors}")


if __name__ == "__main__":
    main()
