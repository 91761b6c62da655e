"""Helpers of bench/model (the real model side by side), one subcommand each (the process
tree's peak memory is bench/programs.py tree-peak):

    model.py m0-python DIR ONNX TEXT
                               the Python program's model time per input, in process (the
                               tokenizer + ONNX Runtime + pooling of plugins/minilm-py/app.py's
                               kind, without a server): prints `median_ms p99_ms batch16_ms`
    model.py openai BASE_URL   embeds two texts with the official `openai` client
                               (`embeddings.create`, base64 on the wire as it asks by default) and
                               prints their dimensions and norms; exits 1 if that fails
"""
import os
import sys
import time


def m0_python(model_dir, onnx_file, text):
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    session = onnxruntime.InferenceSession(os.path.join(model_dir, onnx_file), providers=["CPUExecutionProvider"])

    def embed(texts):
        encoded = tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(texts), length), np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def timed(texts):
        start = time.perf_counter()
        embed(texts)
        return (time.perf_counter() - start) * 1000

    for _ in range(20):
        timed([text])
    one = sorted(timed([text]) for _ in range(300))
    sixteen = sorted(timed([text] * 16) / 16 for _ in range(30))
    print(f"{one[len(one) // 2]:.3f} {one[len(one) * 99 // 100]:.3f} {sixteen[len(sixteen) // 2]:.3f}")


def openai_check(base_url):
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused")
    answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a crab", "a market"])
    norms = [sum(x * x for x in d.embedding) ** 0.5 for d in answer.data]
    print(f"{len(answer.data)} vectors of {len(answer.data[0].embedding)}, norms {norms[0]:.4f} {norms[1]:.4f}, usage {answer.usage.prompt_tokens} tokens")
    if len(answer.data) != 2 or any(abs(n - 1) > 1e-3 for n in norms):
        sys.exit(1)


def main(args):
    if len(args) == 4 and args[0] == "m0-python":
        m0_python(args[1], args[2], args[3])
    elif len(args) == 2 and args[0] == "openai":
        openai_check(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
