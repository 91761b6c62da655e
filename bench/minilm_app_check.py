#!/usr/bin/env python3
"""Checks an embeddings server's HTTP contract, then times it.

    minilm_app_check.py BASE_URL [--count 200] [--no-openai]

BASE_URL is where the routes hang: http://127.0.0.1:8000 for plugins/minilm-py run by hand,
http://127.0.0.1:8080/minilm behind fiddler-crab. It asks GET /health and /v1/models, POSTs
/v1/embeddings (a string, a list, float and base64 answers, the usage counts, a text past the
256-token window) and / (plain text), and each refusal the contract names (400 for bad JSON,
no input, an empty list, a non-string item, an empty string, 257 inputs; 413 past 1 MiB). With
the `openai` package installed it also calls the server the way its client does (base64 by
default). Then it times COUNT requests for one 10-word sentence on one keep-alive connection
and prints the median and p90 in ms. Exits 1 if a check fails.

This file owns the contract's checks, not the vectors' values: bench/minilm_reference.py
compares those with an independent forward pass.
"""
import argparse
import base64
import http.client
import json
import statistics
import struct
import sys
import time
import urllib.parse

SENTENCE = "The crab waits at the door of the market."  # 10 tokens, 12 with [CLS] and [SEP]
LONG = "word " * 400


class Client:
    """One keep-alive connection to BASE_URL."""

    def __init__(self, base):
        parts = urllib.parse.urlsplit(base)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method, path, body=None, headers=None):
        """-> (status, parsed JSON or None)."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request(method, self.prefix + path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            # A server may close after a refusal (413 before the body was read): reconnect once.
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.conn.request(method, self.prefix + path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            data = response.read()
        if response.getheader("connection", "").lower() == "close":
            self.conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, None


failures = []


def expect(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def refused(client, body, status, words, what):
    got, answer = client.call("POST", "/v1/embeddings", body)
    error = (answer or {}).get("error") if isinstance(answer, dict) else None
    message = (error or {}).get("message", "")
    expect(got == status and error is not None and words in message,
           f"{what} -> {status} naming {words!r} (got {got}: {message!r})")


def contract(client, use_openai, base):
    status, health = client.call("GET", "/health")
    expect(status == 200, f"GET /health -> 200 (got {status})")
    status, models = client.call("GET", "/v1/models")
    names = [m.get("id") for m in (models or {}).get("data", [])]
    expect(status == 200 and len(names) == 1, f"GET /v1/models lists one model ({names})")
    name = names[0] if names else None

    status, one = client.call("POST", "/v1/embeddings", {"input": "a crab"})
    expect(status == 200, f"a string input -> 200 (got {status})")
    dims = len(one["data"][0]["embedding"]) if status == 200 else 0
    expect(dims > 0, f"an embedding of {dims} floats")
    expect(status == 200 and one.get("model") == name, f"answers model {one.get('model')!r}")
    expect(status == 200 and one["usage"].get("prompt_tokens") == 4,
           f"usage.prompt_tokens counts [CLS] and [SEP]: 'a crab' -> 4 "
           f"(got {one.get('usage')})")

    body = {"input": ["a crab", "a market", LONG]}
    status, floats = client.call("POST", "/v1/embeddings", body)
    status64, b64 = client.call("POST", "/v1/embeddings", {**body, "encoding_format": "base64"})
    expect(status == 200 and [d["index"] for d in floats["data"]] == [0, 1, 2],
           "a list of three -> three embeddings, indexed 0, 1, 2")
    expect(status == 200 and floats["usage"].get("truncated_inputs") == 1
           and floats["usage"].get("prompt_tokens") == 4 + 4 + 256,
           f"the long text is cut to 256 tokens and counted (usage {floats.get('usage')})")
    if status == 200 and status64 == 200:
        decoded = [list(struct.unpack(f"<{dims}f", base64.b64decode(d["embedding"])))
                   for d in b64["data"]]
        as_f32 = [list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *d["embedding"])))
                  for d in floats["data"]]
        expect(decoded == as_f32, "base64 answers are the float answers' little-endian f32 bytes")
    else:
        expect(False, f"base64 request -> 200 (got {status64})")
    norm = sum(x * x for x in floats["data"][0]["embedding"]) ** 0.5 if status == 200 else 0
    expect(abs(norm - 1) < 1e-4, f"vectors are unit length ({norm:.6f})")

    status, plain = client.call("POST", "/", SENTENCE.encode(), {"Content-Type": "text/plain"})
    expect(status == 200 and len(plain.get("embedding", [])) == dims
           and plain.get("tokens") == 12 and plain.get("truncated") is False,
           f"POST / plain text -> one vector, tokens 12, truncated false "
           f"(got {status}, tokens {(plain or {}).get('tokens')})")

    refused(client, b"{not json", 400, "JSON", "bad JSON")
    refused(client, {"model": name}, 400, "input", "no input")
    refused(client, {"input": []}, 400, "empty", "an empty list")
    refused(client, {"input": ["a", 7]}, 400, "string", "a non-string item")
    refused(client, {"input": ""}, 400, "empty", "an empty string")
    refused(client, {"input": ["a"] * 257}, 400, "256", "257 inputs")
    refused(client, {"input": "a" * (1024 * 1024 + 10)}, 413, "1048576", "a body past 1 MiB")

    if not use_openai:
        return
    try:
        import openai
    except ImportError:
        print("  skip the openai client (pip install openai)")
        return
    api = openai.OpenAI(base_url=base.rstrip("/") + "/v1", api_key="x")
    result = api.embeddings.create(model=name or "all-MiniLM-L6-v2", input=["a crab", "a market"])
    shape = [len(d.embedding) for d in result.data]
    expect(shape == [dims, dims], f"openai client (base64 by default) -> 2 x {dims} ({shape})")
    close = all(abs(a - b) < 1e-6 for a, b in zip(result.data[0].embedding,
                                                  floats["data"][0]["embedding"]))
    expect(close, "the openai client's vector is the float answer's")


def timing(client, count):
    for route, body, headers in (
            ("/v1/embeddings", {"input": SENTENCE}, None),
            ("/", SENTENCE.encode(), {"Content-Type": "text/plain"})):
        for _ in range(10):  # warm up
            client.call("POST", route, body, headers)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            status, _ = client.call("POST", route, body, headers)
            times.append((time.perf_counter() - started) * 1000)
            if status != 200:
                failures.append(f"timing {route}: {status}")
                break
        times.sort()
        print(f"  POST {route:<15} {count} x 12 tokens, one client: median "
              f"{statistics.median(times):.2f} ms, p90 {times[int(len(times) * 0.9)]:.2f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--no-openai", action="store_true")
    args = parser.parse_args()
    client = Client(args.base_url)
    print(f"contract of {args.base_url}")
    contract(client, not args.no_openai, args.base_url)
    print("timing")
    timing(client, args.count)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
