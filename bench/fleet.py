"""Helpers for bench/fleet: a steady load client with per-request accounting, and pollers that
log when an instance's /-/ready or the balancer's view of a server changes. Timestamps are
wall-clock seconds, so the shell script can line them up with what it did and when.

Usage:
  fleet.py load HOST:PORT RATE SECONDS OUT   POST /work at RATE requests/s (keep-alive, at most
                                             32 at once; SIGTERM stops it early); one
                                             line per request in OUT: "sent done status
                                             why" (status 0: no answer, why names the error)
  fleet.py summary OUT [FROM [TO]]           "sent failed p50_ms p99_ms max_ms statuses" of
                                             requests sent in [FROM, TO) (statuses of the
                                             failed: "1x502,2xIncompleteReadError", or "-")
  fleet.py failures OUT                      "first last" send times of failed requests, or "- -"
  fleet.py poll-ready HOST:PORT OUT          GET /-/ready every 20 ms; "time status" on change
  fleet.py poll-lb HOST:PORT OUT             HAProxy's stats CSV every 50 ms; "time server
                                             status weight" on change
  fleet.py served HOST:PORT                  "server 2xx-count" per server (HAProxy's stats)
All of it stays on the addresses given (the bench's own namespaces); each mode that runs until
told stops on SIGTERM, or after its SECONDS.
"""
import asyncio
import signal
import socket
import statistics
import sys
import time

BODY = b"x"
REQUEST = (
    b"POST /work HTTP/1.1\r\nHost: fleet\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n"
    + BODY
)
CONNECTIONS = 32
TIMEOUT = 20.0


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


async def read_response(reader):
    """Reads one response; returns (status, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


async def load(addr, rate, seconds, out):
    host, port = split(addr)
    start = time.time()
    until = [start + seconds]
    records = []
    interval = CONNECTIONS / rate
    # SIGTERM: no new requests; those in flight finish, then the records are written.
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: until.__setitem__(0, time.time())
    )

    async def worker(i):
        reader = writer = None
        next_at = start + i * interval / CONNECTIONS
        while True:
            now = time.time()
            if next_at >= until[0]:
                break
            if next_at > now:
                await asyncio.sleep(min(next_at - now, 0.1))
                continue
            next_at = max(next_at + interval, now - 1.0)
            sent = time.time()
            status, why = 0, "-"
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), TIMEOUT
                    )
                writer.write(REQUEST)
                status, keep = await asyncio.wait_for(read_response(reader), TIMEOUT)
                if not keep:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                    IndexError, asyncio.LimitOverrunError) as e:
                why = type(e).__name__
                if writer is not None:
                    writer.close()
                writer = None
            records.append((sent, time.time(), status, why))
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(CONNECTIONS)))
    with open(out, "w") as f:
        for sent, done, status, why in sorted(records):
            f.write(f"{sent:.4f} {done:.4f} {status} {why}\n")


def records(path):
    with open(path) as f:
        for line in f:
            sent, done, status, why = line.split()
            yield float(sent), float(done), int(status), why


def summary(path, since=0.0, until=float("inf")):
    rows = [r for r in records(path) if since <= r[0] < until]
    if not rows:
        print("0 0 0 0 0 -")
        return
    latencies = sorted((done - sent) * 1000 for sent, done, status, _ in rows if status == 200)
    failed = sum(1 for r in rows if r[2] != 200)
    kinds = {}
    for r in rows:
        if r[2] != 200:
            kind = str(r[2]) if r[2] else r[3]
            kinds[kind] = kinds.get(kind, 0) + 1
    what = ",".join(f"{n}x{kind}" for kind, n in sorted(kinds.items())) or "-"
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        top = latencies[-1]
    else:
        p50 = p99 = top = 0
    print(f"{len(rows)} {failed} {p50:.0f} {p99:.0f} {top:.0f} {what}")


def failures(path):
    bad = [r[0] for r in records(path) if r[2] != 200]
    print(f"{bad[0]:.4f} {bad[-1]:.4f}" if bad else "- -")


def get(addr, path):
    """Status and body of GET path, or (0, b"") when there is no answer."""
    host, port = split(addr)
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
    except (IndexError, ValueError):
        return 0, b""
    return status, body


def dechunk(data):
    """The body of a whole chunked message."""
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2:]


def stats_rows(addr):
    """HAProxy's stats CSV as dicts, one per server."""
    status, body = get(addr, "/stats;csv")
    if status != 200:
        return []
    lines = body.decode("latin-1").splitlines()
    if not lines:
        return []
    names = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(names, line.split(","))) for line in lines[1:] if line]
    return [r for r in rows if r.get("svname") not in ("FRONTEND", "BACKEND", None)]


running = True


def stop(*_):
    global running
    running = False


def poll(out, every, sample):
    signal.signal(signal.SIGTERM, stop)
    last = {}
    with open(out, "w", buffering=1) as f:
        while running:
            now = time.time()
            for key, value in sample():
                if last.get(key) != value:
                    last[key] = value
                    f.write(f"{now:.4f} {key} {value}\n")
            time.sleep(every)


def main():
    mode = sys.argv[1]
    if mode == "load":
        asyncio.run(load(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]))
    elif mode == "summary":
        since = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
        until = float(sys.argv[4]) if len(sys.argv) > 4 else float("inf")
        summary(sys.argv[2], since, until)
    elif mode == "failures":
        failures(sys.argv[2])
    elif mode == "poll-ready":
        addr = sys.argv[2]
        poll(sys.argv[3], 0.02, lambda: [("ready", get(addr, "/-/ready")[0])])
    elif mode == "poll-lb":
        addr = sys.argv[2]
        poll(sys.argv[3], 0.05, lambda: [
            (r["svname"], f"{r.get('status', '?').split(' ')[0]} {r.get('weight', '?')}")
            for r in stats_rows(addr)
        ])
    elif mode == "served":
        for r in stats_rows(sys.argv[2]):
            print(r["svname"], r.get("hrsp_2xx", "0") or "0")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
