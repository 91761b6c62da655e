"""Client for bench/uploads: COUNT clients each POST a SIZE-byte body to http://ADDR/echo at
once, on raw sockets; prints the answers by status, how many were reset, and the seconds to
the last answer. Loopback only; stops by itself.

Usage: uploads.py ADDR COUNT SIZE
"""
import collections
import socket
import sys
import threading
import time

addr, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = addr.rsplit(":", 1)
body = bytes(range(256)) * (size // 256)
results = []
lock = threading.Lock()


def upload():
    outcome = "no answer"
    try:
        with socket.create_connection((host, int(port)), timeout=120) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n" % len(body))
            s.sendall(body)
            head = b""
            while b"\r\n\r\n" not in head:
                piece = s.recv(65536)
                if not piece:
                    break
                head += piece
            status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "none"
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            got = len(head.split(b"\r\n\r\n", 1)[1]) if b"\r\n\r\n" in head else 0
            while got < length:
                piece = s.recv(1 << 20)
                if not piece:
                    break
                got += len(piece)
            outcome = status if got >= length else status + " (cut)"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except OSError as e:
        outcome = f"error {e.errno}"
    with lock:
        results.append((outcome, time.monotonic()))


started = time.monotonic()
threads = [threading.Thread(target=upload) for _ in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join()
counts = collections.Counter(o for o, _ in results)
last = max(t for _, t in results) - started
print(",".join(f"{k}={v}" for k, v in sorted(counts.items())), counts.get("reset", 0), f"{last:.2f}")
