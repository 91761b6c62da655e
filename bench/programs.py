"""Helpers for bench/programs (loopback only; each stops by itself).

Usage:
  programs.py calls HOST:PORT PATH COUNT    COUNT sequential POSTs on fresh connections;
                                            prints the median, p90 and max in ms and the
                                            non-200 count
  programs.py tree-peak PID                 samples the resident memory of PID and all its
                                            descendants every 50 ms until SIGTERM; prints
                                            the peak in KiB
"""
import http.client
import os
import signal
import sys
import time

from proctree import children, rss_kib


def calls(addr, path, count):
    host, port = addr.rsplit(":", 1)
    times, failed = [], 0
    for _ in range(count):
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", path, body=b"the crab waits at the door")
        response = conn.getresponse()
        response.read()
        conn.close()
        times.append((time.perf_counter() - started) * 1000)
        failed += response.status != 200
    times.sort()
    print(f"{times[len(times) // 2]:.2f} {times[int(len(times) * 0.9)]:.2f} "
          f"{times[-1]:.2f} {failed}")


def descendants(pid):
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending += children(current)
    return found


def tree_peak(pid):
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    peak = 0
    while running[0]:
        peak = max(peak, sum(rss_kib(p) for p in descendants(pid)))
        time.sleep(0.05)
    print(peak)


if sys.argv[1] == "calls":
    calls(sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif sys.argv[1] == "tree-peak":
    tree_peak(int(sys.argv[2]))
