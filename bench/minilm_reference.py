#!/usr/bin/env python3
"""A reference for the MiniLM embeddings, in plain numpy, and a check of servers against it.

    minilm_reference.py MODEL_DIR [--url URL]... [--info-url URL]... [--min-cosine 0.999]
                        [--texts-file F] [--print-json]

MODEL_DIR holds config.json, model.safetensors and tokenizer.json (all-MiniLM-L6-v2 or any BERT
of the same layout: every size is read from config.json). Each text is embedded here, then
POSTed to each URL (an OpenAI-style /v1/embeddings) once as one list of all texts and once per
text; a table gives the cosine of each answer with the reference. It exits 1 if an answer from
a --url is below --min-cosine, has another token count, or fails; --info-url answers are shown
and not judged (an int8 model is close, not equal). --print-json prints the reference vectors.

This file owns the forward pass it compares against and so shares no code with what it checks:
no onnx, no onnxruntime, no torch. The safetensors file is read here (an 8-byte little-endian
header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw
little-endian data); the BERT is HF `BertModel`'s: word + position + token type embeddings,
LayerNorm after each residual (post-LN), the activation config.json names (erf GELU for
MiniLM), then mean pooling over the tokens and L2 normalisation, as sentence-transformers does.
It computes in float64, one text at a time (no padding to get wrong). Only the tokenizer is
shared with what it checks (the `tokenizers` package), set as sentence-transformers sets it:
truncation to 256 tokens, no padding.
"""
import argparse
import base64
import json
import math
import struct
import sys
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

MAX_TOKENS = 256

# English, accents, umlauts, Chinese, Japanese, Korean, Cyrillic, emoji, one letter, and one
# text longer than the window so truncation is exercised.
TEXTS = [
    "The crab waits at the door of the market.",
    "a",
    "A man is eating food.",
    "Le café est déjà prêt, dit la sœur à l'élève.",
    "Über den Bäumen fliegen fünf Vögel; die Straße ist naß.",
    "今天天气很好，我们去公园散步吧。",
    "東京の天気は晴れです。明日は雨が降るでしょう。",
    "서울은 한국의 수도입니다.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "I love crabs 🦀🦀 and the sea 🌊!",
    "HTTP/1.1 200 OK; Content-Length: 42 -- 3.14159 ≈ π",
    " ".join(f"sentence {i} of a long text that runs past the window of two hundred fifty six "
             f"tokens, so the model sees only its start." for i in range(30)),
]


# --- safetensors ------------------------------------------------------------------------------

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def read_safetensors(path):
    """name -> numpy array (float tensors as float64). BF16 is widened by hand (numpy has none)."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start:base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif info["dtype"] in DTYPES:
            array = np.frombuffer(raw, dtype=DTYPES[info["dtype"]])
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}, not read here")
        array = array.reshape(info["shape"])
        tensors[name] = array.astype(np.float64) if array.dtype.kind == "f" else array
    return tensors


def strip_prefix(tensors):
    """Names as `BertModel` has them: a file may prefix them (`bert.`, `0.auto_model.`)."""
    anchor = "embeddings.word_embeddings.weight"
    found = [n for n in tensors if n.endswith(anchor)]
    if not found:
        raise SystemExit(f"no tensor named *{anchor}; names start {sorted(tensors)[:5]}")
    prefix = found[0][:-len(anchor)]
    return {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}


# --- the model --------------------------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)

ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64)),
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi)
                                                   * (x + 0.044715 * x ** 3))),
    "relu": lambda x: np.maximum(x, 0.0),
}
ACTIVATIONS["gelu_pytorch_tanh"] = ACTIVATIONS["gelu_new"]


class Bert:
    """HF `BertModel` (absolute positions, post-LN), float64, one sequence at a time."""

    def __init__(self, model_dir):
        model_dir = Path(model_dir)
        self.config = json.loads((model_dir / "config.json").read_text())
        c = self.config
        if c.get("position_embedding_type", "absolute") != "absolute":
            raise SystemExit(f"position_embedding_type {c['position_embedding_type']!r}: "
                             "only absolute positions are done here")
        if c.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise SystemExit(f"hidden_act {c['hidden_act']!r} is not done here")
        self.w = strip_prefix(read_safetensors(model_dir / "model.safetensors"))
        self.heads = c["num_attention_heads"]
        self.layers = c["num_hidden_layers"]
        self.eps = c.get("layer_norm_eps", 1e-12)
        self.act = ACTIVATIONS[c.get("hidden_act", "gelu")]
        self.window = min(MAX_TOKENS, c.get("max_position_embeddings", MAX_TOKENS))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.window)

    def layer_norm(self, x, name):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        scale, shift = self.w[name + ".weight"], self.w[name + ".bias"]
        return (x - mean) / np.sqrt(var + self.eps) * scale + shift

    def linear(self, x, name):
        # torch's Linear keeps its weight as [out, in].
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def hidden_states(self, ids, type_ids):
        """Token ids -> the last layer's hidden states [tokens, hidden]."""
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(len(ids))]
             + w["embeddings.token_type_embeddings.weight"][type_ids])
        x = self.layer_norm(x, "embeddings.LayerNorm")
        tokens, hidden = x.shape
        size = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def heads(name):
                return self.linear(x, p + name).reshape(tokens, self.heads, size).transpose(1, 0, 2)

            q, k, v = heads("attention.self.query"), heads("attention.self.key"), heads(
                "attention.self.value")
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = scores / scores.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(1, 0, 2).reshape(tokens, hidden)
            x = self.layer_norm(x + self.linear(context, p + "attention.output.dense"),
                                p + "attention.output.LayerNorm")
            inner = self.act(self.linear(x, p + "intermediate.dense"))
            x = self.layer_norm(x + self.linear(inner, p + "output.dense"), p + "output.LayerNorm")
        return x

    def embed(self, text):
        """-> (unit vector, tokens run, whether the text was cut to the window)."""
        enc = self.tokenizer.encode(text)
        h = self.hidden_states(np.array(enc.ids), np.array(enc.type_ids))
        pooled = h.mean(axis=0)  # every token is real: the mask is all ones
        return pooled / max(np.linalg.norm(pooled), 1e-12), len(enc.ids), bool(enc.overflowing)


# --- checking servers -------------------------------------------------------------------------

def post(url, inputs):
    """-> (vectors, usage or {}); raises RuntimeError with the reason."""
    body = json.dumps({"input": inputs, "model": "all-MiniLM-L6-v2"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read()[:200]!r}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RuntimeError(str(e))
    vectors = []
    for item in sorted(answer["data"], key=lambda d: d["index"]):
        value = item["embedding"]
        if isinstance(value, str):
            value = np.frombuffer(base64.b64decode(value), dtype="<f4")
        vectors.append(np.asarray(value, dtype=np.float64))
    return vectors, answer.get("usage") or {}


def cosine(a, b):
    if a.shape != b.shape:
        return float("nan")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def check(url, texts, reference, tokens):
    """Cosines of one URL's answers, batched and one by one -> (rows, problems)."""
    rows, problems = [[None, None] for _ in texts], []
    try:
        vectors, usage = post(url, texts)
        if len(vectors) != len(texts):
            raise RuntimeError(f"{len(vectors)} vectors for {len(texts)} texts")
        for i, v in enumerate(vectors):
            rows[i][0] = cosine(v, reference[i])
        if "prompt_tokens" in usage and usage["prompt_tokens"] != sum(tokens):
            problems.append(f"batch prompt_tokens {usage['prompt_tokens']}, "
                            f"reference {sum(tokens)}")
    except (RuntimeError, KeyError, TypeError) as e:
        problems.append(f"batch request: {e}")
    for i, text in enumerate(texts):
        try:
            vectors, usage = post(url, text)
            rows[i][1] = cosine(vectors[0], reference[i])
            if "prompt_tokens" in usage and usage["prompt_tokens"] != tokens[i]:
                problems.append(f"text {i}: prompt_tokens {usage['prompt_tokens']}, "
                                f"reference {tokens[i]}")
        except (RuntimeError, KeyError, TypeError, IndexError) as e:
            problems.append(f"text {i}: {e}")
    return rows, problems


def label(text, width=34):
    """The text on one line, cut and padded to `width` terminal columns (CJK takes two)."""
    out, used = "", 0
    for ch in " ".join(text.split()):
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + w > width - 3:
            return out + "..." + " " * (width - 3 - used)
        out, used = out + ch, used + w
    return out + " " * (width - used)


def fmt(value):
    return "   -   " if value is None else f"{value:.5f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--url", action="append", default=[], help="judged against --min-cosine")
    parser.add_argument("--info-url", action="append", default=[], help="shown, not judged")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    parser.add_argument("--texts-file", help="one text a line (UTF-8) instead of the built-in list")
    parser.add_argument("--print-json", action="store_true",
                        help="print the reference vectors as JSON on stdout (the table goes to "
                             "stderr)")
    args = parser.parse_args()

    texts = TEXTS
    if args.texts_file:
        texts = [t for t in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if t]
    if not texts:
        raise SystemExit("no texts")
    bert = Bert(args.model_dir)
    reference, tokens, cut = [], [], []
    for text in texts:
        vector, count, truncated = bert.embed(text)
        reference.append(vector)
        tokens.append(count)
        cut.append(truncated)

    out = sys.stderr if args.print_json else sys.stdout
    if args.print_json:
        json.dump({"dimensions": len(reference[0]), "texts": texts, "tokens": tokens,
                   "truncated": cut, "vectors": [v.tolist() for v in reference]}, sys.stdout)
        print()

    urls = [(u, True) for u in args.url] + [(u, False) for u in args.info_url]
    failed = False
    results = []
    for url, judged in urls:
        rows, problems = check(url, texts, reference, tokens)
        results.append((url, judged, rows, problems))
    if not urls:
        for i, text in enumerate(texts):
            flag = " cut" if cut[i] else "    "
            print(f"{i:>2} {tokens[i]:>4} tok{flag}  {label(text).rstrip()}", file=out)
        return 0

    for n, (url, judged, _, _) in enumerate(results):
        print(f"[{n}] {url}{'' if judged else '  (informative)'}", file=out)
    head = "".join(f"  [{n}] batch  [{n}] single" for n in range(len(results)))
    print(f"{'#':>2} {'tok':>4}     {'text':<34}{head}", file=out)
    for i, text in enumerate(texts):
        cells = "".join(f"  {fmt(r[2][i][0]):>9}  {fmt(r[2][i][1]):>10}" for r in results)
        print(f"{i:>2} {tokens[i]:>4}{' cut' if cut[i] else '    '} {label(text)}{cells}",
              file=out)
    for n, (url, judged, rows, problems) in enumerate(results):
        values = [c for row in rows for c in row if c is not None]
        low = min(values) if values else float("nan")
        bad = [c for c in values if not c >= args.min_cosine]  # NaN (wrong size) is bad too
        verdict = "informative" if not judged else (
            "FAIL" if bad or problems or not values else "ok")
        print(f"[{n}] min cosine {low:.5f} ({len(bad)} of {len(values)} below "
              f"{args.min_cosine}): {verdict}", file=out)
        for p in problems:
            print(f"[{n}]   {p}", file=out)
        if judged and verdict == "FAIL":
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
