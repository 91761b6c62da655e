"""Soak: steady mixed load for SECONDS while plugins are replaced, panics, timeouts and
segfaults are triggered, and slowloris connections are held. Prints a line a minute (RSS and
descriptors of the worker, RSS of its executors, requests so far) and a summary that accounts
for every executor death. Loopback only; stops by itself.

The timeouts go to a copy of the sleep fixture (`slow`), so the executor killed at each
deadline is not the one serving the load's own /sleep requests.

Usage: soak.py HOST:PORT SUPERVISOR_PID PLUGINS_DIR LIB_A LIB_B LOG_FILE SECONDS
"""
import http.client
import os
import random
import shutil
import socket
import sys
import threading
import time

from proctree import usage as tree_usage

addr, sup_pid, plugins, lib_a, lib_b, log_file, seconds = sys.argv[1:8]
sup_pid, seconds = int(sup_pid), float(seconds)
host, port = addr.rsplit(":", 1)
port = int(port)
stop = threading.Event()
lock = threading.Lock()
stats = {"ok": 0, "wrong": 0, "lost": 0, "lost_near_crash": 0, "swaps": 0,
         "panics": 0, "timeouts": 0, "segfaults": 0}
wrong_examples = []
last_crash = [0.0]


def count(key, n=1):
    with lock:
        stats[key] += n


def request(conn, method, path, body):
    conn.request(method, path, body=body)
    response = conn.getresponse()
    return response.status, response.read()


def load(worker):
    rng = random.Random(worker)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    n = 0
    while not stop.is_set():
        n += 1
        pick = rng.random()
        body = f"w{worker}-{n}".encode()
        if pick < 0.6:
            method, path, check = "POST", "/echo", lambda s, b: s == 200 and b == body
        elif pick < 0.8:
            method, path, check = "POST", "/burn?ms=2", lambda s, b: s == 200
        elif pick < 0.95:
            method, path, check = "GET", "/sleep?ms=5", lambda s, b: s == 200
        else:
            method, path, check = "POST", "/swap", lambda s, b: s == 200
        try:
            status, data = request(conn, method, path, body)
            if check(status, data):
                count("ok")
            else:
                count("wrong")
                with lock:
                    if len(wrong_examples) < 5:
                        wrong_examples.append((path, status, data[:80]))
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            near = time.time() - last_crash[0] < 3
            count("lost_near_crash" if near else "lost")


def expect(path, wanted, key):
    """GET path on a new connection; counts `key` if it answers `wanted`, else a loss."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        status, _ = request(conn, "GET", path, None)
        count(key if status == wanted else "lost")
    except Exception:
        count("lost")
    finally:
        conn.close()


def chaos():
    rng = random.Random(99)
    turn = 0
    next_segfault = time.time() + 30
    while not stop.is_set():
        time.sleep(2)
        turn += 1
        lib = lib_a if turn % 2 else lib_b
        temporary = os.path.join(plugins, ".libswap.so.tmp")
        shutil.copyfile(lib, temporary)
        os.rename(temporary, os.path.join(plugins, "libswap.so"))
        count("swaps")
        if rng.random() < 0.5:
            expect("/panic", 500, "panics")
        else:
            expect("/slow?ms=1500", 504, "timeouts")
        if time.time() >= next_segfault:
            next_segfault = time.time() + 30
            last_crash[0] = time.time()
            expect("/crash/segfault", 502, "segfaults")


def slowloris():
    held = []
    while not stop.is_set():
        while len(held) < 50:
            try:
                s = socket.create_connection((host, port), timeout=5)
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: s\r\n")
                held.append(s)
            except OSError:
                break
        for s in list(held):
            try:
                s.sendall(b"X-a: b\r\n")
            except OSError:
                held.remove(s)
                s.close()
        time.sleep(1)
    for s in held:
        s.close()


threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
threads += [threading.Thread(target=chaos), threading.Thread(target=slowloris)]
for t in threads:
    t.start()
started = time.time()
samples = []
while time.time() - started < seconds:
    time.sleep(min(60, seconds))
    pid, rss, executors_rss, executors, fds, threads_now = tree_usage(sup_pid)
    samples.append((rss, fds, executors_rss))
    with lock:
        print(f"t={time.time() - started:.0f}s worker {pid}: RSS {rss} KiB, fds {fds}, "
              f"threads {threads_now}; {executors} executors, {executors_rss} KiB; "
              f"answered {stats['ok']}, wrong {stats['wrong']}, lost {stats['lost']} "
              f"(+{stats['lost_near_crash']} near a "
              f"segfault); swaps {stats['swaps']}, segfaults {stats['segfaults']}", flush=True)
stop.set()
for t in threads:
    t.join()
with open(log_file) as f:
    workers = sum("started worker" in line for line in f)
conn = http.client.HTTPConnection(host, port, timeout=30)
_, metrics = request(conn, "GET", "/-/metrics", None)
deaths = {line.split('"')[1]: int(line.split()[-1]) for line in metrics.decode().splitlines()
          if line.startswith("fiddler_executor_deaths_total{")}
starts = next(int(line.split()[-1]) for line in metrics.decode().splitlines()
              if line.startswith("fiddler_executor_starts_total "))
restarts = workers - 1
print(f"executors: {starts} started; ended by cause {deaths}; expected: signal = segfaults "
      f"({stats['segfaults']}), deadline = timeouts ({stats['timeouts']}), retired = swaps "
      f"({stats['swaps']}) or fewer (a swap to the same bytes is no new version)")
print(f"summary: {stats['ok']} answered as expected; {stats['wrong']} answered wrongly "
      f"{wrong_examples}; {stats['lost']} admitted requests lost outside a crash; "
      f"{stats['lost_near_crash']} lost within 3 s of a segfault; {stats['swaps']} swaps, "
      f"{stats['panics']} panics, {stats['timeouts']} timeouts, {stats['segfaults']} segfaults; "
      f"worker restarts {restarts}; worker RSS KiB per minute {[s[0] for s in samples]}; "
      f"fds per minute {[s[1] for s in samples]}; executors' RSS KiB per minute "
      f"{[s[2] for s in samples]}")
