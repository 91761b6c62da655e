"""Recovery figures: from a plugin's segfault (502) to the next answer from the same plugin (a
fresh executor), and failed requests across planned worker restarts under steady load.
Loopback only; bounded.

Usage: restart.py HOST:PORT SUPERVISOR_PID LOG_FILE [CRASHES] [RESTARTS]
"""
import http.client
import os
import signal
import statistics
import sys
import threading
import time

addr, pid, log_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
crashes = int(sys.argv[4]) if len(sys.argv) > 4 else 20
restarts = int(sys.argv[5]) if len(sys.argv) > 5 else 20
host, port = addr.rsplit(":", 1)
port = int(port)


def post_echo(body=b"ping", timeout=15):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/echo", body=body)
        response = conn.getresponse()
        return response.status == 200 and response.read() == body
    finally:
        conn.close()


def get(path, timeout=15):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def log_count(needle):
    with open(log_file) as f:
        return sum(needle in line for line in f)


# Recovery after a segfault: from the crashing request's 502 to the next answer from the same
# plugin (one attempt: it waits in the queue while a fresh executor starts).
recoveries = []
for i in range(crashes):
    status, _ = get("/crash/segfault")
    if status != 502:
        sys.exit(f"crash {i + 1} answered {status}, not 502")
    started = time.time()
    status, body = get("/crash/fine")
    if status != 200 or body != b"alive\n":
        sys.exit(f"no answer after crash {i + 1}: {status}")
    recoveries.append((time.time() - started) * 1000)
print(f"segfault to the same plugin's next answer ({crashes} crashes, trivial init): "
      f"median {statistics.median(recoveries):.1f} ms, max {max(recoveries):.1f} ms, "
      f"min {min(recoveries):.1f} ms")

# Planned restarts under steady load.
stop = threading.Event()
counts = {"ok": 0, "failed": 0}
lock = threading.Lock()


def load(worker):
    conn = http.client.HTTPConnection(host, port, timeout=15)
    n = 0
    while not stop.is_set():
        n += 1
        body = f"w{worker}-{n}".encode()
        try:
            conn.request("POST", "/echo", body=body)
            response = conn.getresponse()
            ok = response.status == 200 and response.read() == body
        except Exception:
            ok = False
            conn.close()
        with lock:
            counts["ok" if ok else "failed"] += 1


threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
before = log_count("takes over")
started = time.time()
for i in range(restarts):
    os.kill(pid, signal.SIGHUP)
    deadline = time.time() + 30
    while log_count("takes over") < before + i + 1:
        if time.time() > deadline:
            stop.set()
            sys.exit(f"planned restart {i + 1} did not happen within 30 s")
        time.sleep(0.02)
    time.sleep(0.3)
stop.set()
for t in threads:
    t.join()
print(f"planned restarts under load: {restarts} in {time.time() - started:.1f} s, "
      f"{counts['ok']} requests answered, {counts['failed']} failed")
