"""Clients that wait for their answer, and what became of each: answered, closed without an
answer (dropped after waiting, or shed), or still waiting at their patience's end.

Usage: expire.py HOST:PORT PATH CLIENTS SECONDS PATIENCE CALL_SECONDS
Each of CLIENTS threads sends GET PATH on a fresh connection, waits up to PATIENCE seconds for
the answer, and repeats until SECONDS have passed since the start (SECONDS 0: one request
each, all at once: a burst). A 503 is honoured: the client waits Retry-After, then asks again. Prints one line of figures. Loopback only; bounded.
"""
import socket
import sys
import threading
import time

addr, path, clients, seconds, patience, call = sys.argv[1:7]
host, port = addr.rsplit(":", 1)
port, clients, seconds, patience, call = int(port), int(clients), float(seconds), float(patience), float(call)
lock = threading.Lock()
stats = {"answered": 0, "unanswered": 0, "waiting": 0, "wasted": 0.0, "refused": 0,
         "last_answer": 0.0}
start = time.time()
go = threading.Event()


def one():
    began = time.time()
    try:
        s = socket.create_connection((host, port), timeout=patience)
        s.settimeout(max(0.1, patience - (time.time() - began)))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(256)
        s.close()
        if head.startswith(b"HTTP/1.1 200"):
            return "answered", 0.0
        if head.startswith(b"HTTP/1.1 503"):
            # A polite client: back off for Retry-After before asking again.
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"retry-after:"):
                    time.sleep(min(float(line.split(b":")[1]), patience))
            return "refused", 0.0
        return "unanswered", time.time() - began
    except socket.timeout:
        return "waiting", time.time() - began
    except OSError:
        return "unanswered", time.time() - began


def client():
    go.wait()
    while True:
        outcome, wasted = one()
        with lock:
            stats[outcome] += 1
            stats["wasted"] += wasted
            if outcome == "answered":
                stats["last_answer"] = time.time()
        if seconds == 0 or time.time() - start >= seconds:
            return


threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
start = time.time()
go.set()
for t in threads:
    t.join()
elapsed = time.time() - start
# The serial capacity of the time the server had work: from the start to the last answer.
busy = max(stats["last_answer"] - start, call)
capacity = busy / call
print(f"{stats['answered']} answered, {stats['unanswered']} closed without an answer, "
      f"{stats['refused']} answered 503, {stats['waiting']} still waiting after {patience:.0f} s; "
      f"{elapsed:.1f} s; goodput {100 * stats['answered'] / capacity:.1f}% of the serial "
      f"capacity until the last answer ({busy:.1f} s, {capacity:.0f} calls); "
      f"{stats['wasted']:.0f} client-seconds spent on requests that got no answer")
