"""all-MiniLM-L6-v2 sentence embeddings as a FastAPI app: the OpenAI embeddings API over
onnxruntime (CPU) and the `tokenizers` package.

This file owns the HTTP surface (routes, request checks, the error shape) and the model's
forward pass with its pooling. It leaves the model files to `plugins/minilm/fetch-model` (which
writes them and the `env` file beside `serve`), and the socket or port to `serve` (or to whoever
runs `python3 -m uvicorn app:app` by hand). Routes:

    POST /v1/embeddings   {"input": "text" | ["a", "b"], "model"?, "encoding_format"?, "user"?}
    POST /                a plain text body -> {"embedding": [...], "tokens": N, "truncated": b}
    GET  /v1/models       the one model
    GET  /health          503 while the model loads, then 200

Settings come from the environment: MINILM_MODEL_DIR (tokenizer.json and the ONNX file),
MINILM_ONNX (the file's name inside it, default model-int8.onnx), MINILM_MODEL_NAME (default
all-MiniLM-L6-v2), MINILM_THREADS (onnxruntime's intra-op threads; unset: onnxruntime chooses).
"""
import base64
import json
import os
import sys
import threading
import time
from contextlib import asynccontextmanager

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from tokenizers import Tokenizer

# The model's window, as sentence-transformers sets it for this model (the tokenizer.json it
# ships pads and truncates to 128; both are replaced at load).
MAX_TOKENS = 256
MAX_INPUTS = 256
MAX_BODY = 1024 * 1024
# Padded tokens (rows x longest row) per onnxruntime run. Memory grows with it: 256 inputs of
# 256 tokens in one run took 6 GB here; 16 rows of 256 stay under 1 GB. 256 short sentences
# (16 tokens) still run as one batch.
MAX_BATCH_TOKENS = 4096

MODEL_DIR = os.environ.get("MINILM_MODEL_DIR", "")
ONNX_FILE = os.environ.get("MINILM_ONNX", "model-int8.onnx")
MODEL_NAME = os.environ.get("MINILM_MODEL_NAME", "all-MiniLM-L6-v2")
THREADS = os.environ.get("MINILM_THREADS", "")


def fail(message):
    """Stops the process with one line on stderr (the server keeps the last lines it sees)."""
    print(f"minilm-py: {message}", file=sys.stderr, flush=True)
    os._exit(1)


# Checked at import, before uvicorn listens: a missing file is a start that fails, not a program
# that answers 503 forever.
if not MODEL_DIR:
    fail("MINILM_MODEL_DIR is not set; run plugins/minilm/fetch-model first")
for _name in ("tokenizer.json", ONNX_FILE):
    if not os.path.isfile(os.path.join(MODEL_DIR, _name)):
        fail(f"{os.path.join(MODEL_DIR, _name)} is missing; run plugins/minilm/fetch-model first")
if THREADS and not THREADS.isdigit():
    fail(f"MINILM_THREADS={THREADS!r} is not a number")


class Model:
    """The tokenizer and the onnxruntime session, loaded once on a thread of their own so that
    /health can say 503 meanwhile. `ready` is set only after a first run has succeeded."""

    def __init__(self):
        self.ready = threading.Event()
        self.tokenizer = None
        self.session = None

    def load(self):
        try:
            started = time.monotonic()
            tokenizer = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(MAX_TOKENS)
            options = ort.SessionOptions()
            if THREADS:
                options.intra_op_num_threads = int(THREADS)
            session = ort.InferenceSession(os.path.join(MODEL_DIR, ONNX_FILE), options,
                                           providers=["CPUExecutionProvider"])
            self.tokenizer, self.session = tokenizer, session
            self.embed(["warm up"])
            print(f"minilm-py: {ONNX_FILE} loaded in "
                  f"{(time.monotonic() - started) * 1000:.0f} ms", file=sys.stderr, flush=True)
            self.ready.set()
        except Exception as e:  # any load failure ends the program; the server restarts it
            fail(f"cannot load {os.path.join(MODEL_DIR, ONNX_FILE)}: {e}")

    def embed(self, texts):
        """All `texts` -> (unit vectors [n, hidden], tokens per text, whether each was cut to
        the window). They run as one padded batch unless that batch would pass
        MAX_BATCH_TOKENS: then longest first, in slices under it (the answer is the same)."""
        encodings = self.tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        if len(texts) * max(lengths) <= MAX_BATCH_TOKENS:
            slices = [list(range(len(texts)))]
        else:
            order, slices = sorted(range(len(texts)), key=lambda i: -lengths[i]), []
            while order:
                take = max(1, MAX_BATCH_TOKENS // lengths[order[0]])
                slices.append(order[:take])
                order = order[take:]
        vectors = [None] * len(texts)
        for rows in slices:
            width = max(lengths[i] for i in rows)
            for i, v in zip(rows, self.run([encodings[i] for i in rows], width)):
                vectors[i] = v
        return np.stack(vectors), lengths, [bool(e.overflowing) for e in encodings]

    def run(self, encodings, width):
        """One padded batch (pad id 0, mask 0 and type 0 on pads) -> its unit vectors."""
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
            types[row, :len(e.ids)] = e.type_ids
        (hidden,) = self.session.run(["last_hidden_state"], {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


MODEL = Model()


@asynccontextmanager
async def lifespan(_app):
    threading.Thread(target=MODEL.load, name="minilm-load", daemon=True).start()
    yield


app = FastAPI(title="minilm-py", lifespan=lifespan)


class Rejected(Exception):
    """A request answered with an OpenAI-shaped error."""

    def __init__(self, status, message):
        self.status, self.message = status, message


def error_body(status, message):
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


@app.exception_handler(Rejected)
async def rejected(_request, e):
    return error_body(e.status, e.message)


@app.exception_handler(StarletteHTTPException)
async def http_error(_request, e):
    # FastAPI's own 404/405 in the same shape as ours.
    return error_body(e.status_code, str(e.detail))


async def read_body(request):
    """The whole body, refused with 413 as soon as it passes MAX_BODY."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise Rejected(413, f"the body is larger than the limit of {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Rejected(413, f"the body is larger than the limit of {MAX_BODY} bytes")
    return bytes(body)


def parse_inputs(body):
    """The request's texts and encoding, or Rejected(400) naming what is wrong."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Rejected(400, f"the body is not valid JSON: {e}")
    if not isinstance(request, dict):
        raise Rejected(400, "the body must be a JSON object")
    if "input" not in request:
        raise Rejected(400, "'input' is required: a string or a list of strings")
    texts = request["input"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list):
        raise Rejected(400, "'input' must be a string or a list of strings")
    if not texts:
        raise Rejected(400, "'input' is an empty list")
    if len(texts) > MAX_INPUTS:
        raise Rejected(400, f"'input' has {len(texts)} items; the limit is {MAX_INPUTS}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise Rejected(400, f"'input'[{i}] is not a string (token arrays are not accepted)")
        if not text:
            raise Rejected(400, f"'input'[{i}] is an empty string")
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise Rejected(400, "'model' must be a string")
    encoding = request.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise Rejected(400, "'encoding_format' must be \"float\" or \"base64\"")
    return texts, encoding


async def embed(texts):
    if not MODEL.ready.is_set():
        raise Rejected(503, "the model is still loading")
    # onnxruntime releases the GIL; the event loop keeps answering /health meanwhile.
    return await run_in_threadpool(MODEL.embed, texts)


@app.post("/v1/embeddings")
async def embeddings(request: Request):
    texts, encoding = parse_inputs(await read_body(request))
    vectors, lengths, truncated = await embed(texts)
    if encoding == "base64":
        values = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        values = vectors.tolist()
    tokens = sum(lengths)
    # A JSONResponse, not a dict: FastAPI would walk every float through jsonable_encoder.
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": value}
                 for i, value in enumerate(values)],
        "model": MODEL_NAME,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                  "truncated_inputs": sum(truncated)},
    })


@app.post("/")
async def embed_text(request: Request):
    body = await read_body(request)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "the body is not UTF-8 text")
    if not text:
        raise Rejected(400, "the body is empty: POST the text to embed")
    vectors, lengths, truncated = await embed([text])
    return JSONResponse({"embedding": vectors[0].tolist(), "tokens": lengths[0],
                         "truncated": truncated[0]})


@app.get("/v1/models")
async def models():
    return {"object": "list",
            "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "local"}]}


@app.get("/health")
async def health():
    if not MODEL.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ok", "model": MODEL_NAME, "onnx": ONNX_FILE}
