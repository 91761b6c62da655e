"""Client for bench/llama (loopback only; stops by itself).

Usage:
  llama.py complete HOST:PORT    one POST /llama/completion; prints status and content length
  llama.py stream HOST:PORT N    a streamed completion of N tokens; prints the status, the
                                 events received, ms to the first event, ms to the last,
                                 and how many separate reads the events arrived in
"""
import http.client
import json
import sys
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def complete(addr):
    conn = connect(addr)
    body = json.dumps({"prompt": "the crab", "n_predict": 16})
    conn.request("POST", "/llama/completion", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    content = json.loads(data).get("content", "") if response.status == 200 else ""
    print(response.status, len(content))


def stream(addr, tokens):
    conn = connect(addr)
    body = json.dumps({"prompt": "hello world", "n_predict": tokens, "stream": True})
    started = time.perf_counter()
    conn.request("POST", "/llama/completion", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    events, reads, first, last = 0, 0, None, None
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        reads += 1
        now = (time.perf_counter() - started) * 1000
        count = piece.count(b"data: ")
        if count and first is None:
            first = now
        if count:
            last = now
        events += count
    print(response.status, events, f"{first or 0:.1f}", f"{last or 0:.1f}", reads)


if sys.argv[1] == "complete":
    complete(sys.argv[2])
elif sys.argv[1] == "stream":
    stream(sys.argv[2], int(sys.argv[3]))
