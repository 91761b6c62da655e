#!/usr/bin/env python3
"""Writes a tiny random-weight llama-architecture GGUF model (F32, about 0.5 MB) that
llama.cpp loads: a test-only model for bench/llama, which produces readable nonsense fast.

Usage: python3 tiny_gguf.py [out.gguf] [--seed N]
Needs: pip install gguf numpy
"""
import sys
import numpy as np
import gguf

out = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "tiny.gguf"
seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
rng = np.random.default_rng(seed)

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 128
N_LAYER = 2
N_CTX = 512

# ---- SentencePiece-style ("llama") vocab: specials + 256 byte tokens + a few pieces
T_NORMAL, T_UNKNOWN, T_CONTROL, T_BYTE = 1, 2, 3, 6
tokens, scores, types = [], [], []
def add(tok, score, typ):
    tokens.append(tok); scores.append(score); types.append(typ)
add("<unk>", 0.0, T_UNKNOWN)
add("<s>", 0.0, T_CONTROL)
add("</s>", 0.0, T_CONTROL)
for b in range(256):
    # Bytes >= 0x80 are marked CONTROL so that, if sampled, they render as ""
    # instead of a lone invalid-UTF-8 byte (llama-server's output parser
    # rejects invalid UTF-8 with HTTP 500 "does not match the expected ... format").
    # They still exist for byte-fallback tokenization of non-ASCII prompts.
    add(f"<0x{b:02X}>", 0.0, T_BYTE if b < 0x80 else T_CONTROL)
pieces = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] \
    + ["\u2581" + chr(c) for c in range(ord("a"), ord("z") + 1)] \
    + ["\u2581hi", "\u2581hello", "\u2581the", "\u2581world", ".", ",", "!", "?"]
for i, p in enumerate(pieces):
    add(p, -float(i + 1), T_NORMAL)
N_VOCAB = len(tokens)

w = gguf.GGUFWriter(out, "llama")
w.add_name("tiny-random-llama")
w.add_context_length(N_CTX)
w.add_embedding_length(N_EMBD)
w.add_block_count(N_LAYER)
w.add_feed_forward_length(N_FF)
w.add_head_count(N_HEAD)
w.add_head_count_kv(N_HEAD_KV)
w.add_rope_dimension_count(HEAD_DIM)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(N_VOCAB)
w.add_file_type(gguf.LlamaFileType.ALL_F32)

w.add_tokenizer_model("llama")
w.add_tokenizer_pre("default")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)
w.add_add_bos_token(True)
w.add_add_eos_token(False)

def t(name, *shape, scale=0.02):
    # numpy shape is (rows=out, cols=in); GGUF stores ne reversed
    w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

# Hidden dim 0 carries a constant +1 through the residual stream (the blocks'
# random weights are small), so after RMSNorm h[0] ~ +sqrt(N_EMBD). Column 0 of
# output.weight then acts as a per-token logit bias: +2 for the readable
# NORMAL pieces, -2 for unk/bos/eos/byte tokens -> the random model emits only
# printable text pieces and never stops early on EOS (streams n_predict tokens).
emb = (rng.standard_normal((N_VOCAB, N_EMBD)) * 0.02).astype(np.float32)
emb[:, 0] = 1.0
w.add_tensor("token_embd.weight", emb)
w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
outw = (rng.standard_normal((N_VOCAB, N_EMBD)) * 0.5).astype(np.float32)
outw[:, 0] = np.where(np.array(types) == T_NORMAL, 2.0, -2.0)
w.add_tensor("output.weight", outw)
for i in range(N_LAYER):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t(p + "attn_q.weight", N_EMBD, N_EMBD)
    t(p + "attn_k.weight", N_HEAD_KV * HEAD_DIM, N_EMBD)
    t(p + "attn_v.weight", N_HEAD_KV * HEAD_DIM, N_EMBD)
    t(p + "attn_output.weight", N_EMBD, N_EMBD)
    w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t(p + "ffn_gate.weight", N_FF, N_EMBD)
    t(p + "ffn_up.weight", N_FF, N_EMBD)
    t(p + "ffn_down.weight", N_EMBD, N_FF)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {out}: vocab={N_VOCAB} embd={N_EMBD} layers={N_LAYER}")
