"""Replaces a plugin N times under steady load and reports what clients saw.

Usage: hotswap.py HOST:PORT PLUGINS_DIR LIB_A LIB_B SUPERVISOR_PID [SWAPS]

LIB_A is the echo plugin (answers the body), LIB_B the hello plugin (answers "Hello, ...").
Both are dropped in turn as PLUGINS_DIR/libswap.so (copy to a hidden file, then rename), while
load threads POST /swap on keep-alive connections. Every response must be a whole answer of one
version: exactly the body sent, or a greeting. Loopback only; bounded by SWAPS.
"""
import http.client
import os
import shutil
import statistics
import sys
import threading
import time

from proctree import usage

addr, plugins, lib_a, lib_b, pid = sys.argv[1:6]
pid = int(pid)
swaps = int(sys.argv[6]) if len(sys.argv) > 6 else 50
host, port = addr.rsplit(":", 1)
target = os.path.join(plugins, "libswap.so")


def rss_kib():
    """The worker's RSS plus its executors' (what a swap could leak)."""
    _, worker, executors, _, _, _ = usage(pid)
    return worker + executors


def version_of(status, body, sent):
    if status == 200 and body == sent:
        return "a"
    if status == 200 and body.startswith(b"Hello, "):
        return "b"
    return None


def drop(lib):
    temporary = os.path.join(plugins, ".libswap.so.partial")
    shutil.copyfile(lib, temporary)
    os.rename(temporary, target)


stop = threading.Event()
counts = {"ok": 0, "bad": 0, "errors": 0}
lock = threading.Lock()


def load(worker):
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    n = 0
    while not stop.is_set():
        n += 1
        sent = f"w{worker}-{n}".encode()
        try:
            conn.request("POST", "/swap", body=sent)
            response = conn.getresponse()
            body = response.read()
            ok = version_of(response.status, body, sent) is not None
            with lock:
                counts["ok" if ok else "bad"] += 1
        except Exception:
            with lock:
                counts["errors"] += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)


def probe_version():
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/swap", body=b"probe")
        response = conn.getresponse()
        return version_of(response.status, response.read(), b"probe")
    except Exception:
        return None
    finally:
        conn.close()


drop(lib_a)
deadline = time.time() + 10
while probe_version() != "a":
    if time.time() > deadline:
        sys.exit("the first version never served")
    time.sleep(0.01)

rss_before = rss_kib()
threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
latencies = []
for i in range(swaps):
    lib, want = (lib_b, "b") if i % 2 == 0 else (lib_a, "a")
    started = time.time()
    drop(lib)
    while probe_version() != want:
        if time.time() - started > 10:
            stop.set()
            sys.exit(f"swap {i + 1} did not serve within 10 s")
        time.sleep(0.005)
    latencies.append((time.time() - started) * 1000)
stop.set()
for t in threads:
    t.join()
# The last swap's old executor exits once its calls are done; give it a moment.
deadline = time.time() + 5
while usage(pid)[3] > 1 and time.time() < deadline:
    time.sleep(0.05)
rss_after = rss_kib()
print(f"swaps: {swaps}; swap-to-live ms: median {statistics.median(latencies):.0f}, "
      f"max {max(latencies):.0f}, min {min(latencies):.0f}")
print(f"requests under load: {counts['ok']} whole answers, {counts['bad']} malformed or "
      f"wrong, {counts['errors']} failed")
print(f"worker + executors RSS: {rss_before} KiB before, {rss_after} KiB after "
      f"({rss_after - rss_before:+d} KiB; {usage(pid)[3]} executor(s) alive)")
