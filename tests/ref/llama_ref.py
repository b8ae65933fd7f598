#!/usr/bin/python3
"""Reference fixtures for the model tests, computed with PyTorch.

    tests/ref/llama_ref.py [OUTDIR]      (default: tests/fixtures/model)

For each case below this writes a tiny Hugging Face model directory
(config.json + model.safetensors, weights rounded to the case's dtype), a
PEFT LoRA adapter (adapter/adapter_config.json + adapter_model.safetensors),
a token stream, and what PyTorch computes from them: the mean cross-entropy
without and with the adapter and the gradient of the latter with respect to
every lora_A and lora_B (grads.safetensors, float32).

The math follows Hugging Face's LlamaForCausalLM (modeling_llama.py, the
Mistral and Qwen2 variants) and PEFT's LoRA Linear layer, written out
directly: RMSNorm, q/k/v projections (+ bias), rotate-half RoPE with the
default/linear/llama3 inverse frequencies, repeat_kv for grouped-query
attention, causal softmax attention (with Mistral's and Qwen2's sliding
window), o_proj, SwiGLU MLP, final norm, lm_head or tied embedding, and
cross-entropy; LoRA adds lora_B(lora_A(dropout(x))) * scaling with scaling
alpha/r or alpha/sqrt(r) (use_rslora). Everything is computed in float64
from the stored values, so the fixture is the exact answer up to float64
rounding. Batches follow llm.c's rule on the token stream: row b's inputs
are tokens [b*T, b*T+T) and its targets the same shifted by one.

Only the maintainers regenerating fixtures need PyTorch (Debian:
python3-torch); the test suite reads the files it writes.
"""
import json
import math
import os
import struct
import sys

import torch

torch.set_default_dtype(torch.float64)

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"}

CASES = [
    dict(
        name="llama_gqa",
        config=dict(model_type="llama", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=12, vocab_size=64,
                    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                    max_position_embeddings=128, hidden_act="silu",
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=16)),
        dtype="F32", biases=(), targets=MODULES, r=4, alpha=8.0, rslora=False,
        rank_pattern={"model.layers.1.self_attn.q_proj": 2, "model.layers.1.mlp.down_proj": 3},
        alpha_pattern={"model.layers.1.self_attn.q_proj": 6.0, "model.layers.0.mlp.up_proj": 2.0},
        B=2, T=9, seed=1),
    dict(
        name="qwen2_bias_tied",
        config=dict(model_type="qwen2", hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                    num_attention_heads=3, num_key_value_heads=3, vocab_size=48, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=64,
                    hidden_act="silu", use_sliding_window=False, sliding_window=4, max_window_layers=1,
                    rope_scaling=dict(type="linear", factor=2.0)),
        dtype="F16", biases=("q_proj", "k_proj", "v_proj"), targets=["q_proj", "v_proj", "down_proj", "up_proj"],
        r=4, alpha=16.0, rslora=True, rank_pattern={}, alpha_pattern={}, B=2, T=7, seed=2),
    dict(
        name="mistral_window",
        config=dict(model_type="mistral", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=8, vocab_size=40,
                    rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False,
                    max_position_embeddings=64, hidden_act="silu", sliding_window=4),
        dtype="BF16", biases=(), targets=["q_proj", "k_proj", "o_proj", "gate_proj"], r=2, alpha=4.0,
        rslora=False, rank_pattern={"model.layers.0.self_attn.k_proj": 3}, alpha_pattern={},
        B=1, T=10, seed=3),
    dict(
        name="mistral_long",
        config=dict(model_type="mistral", hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=8, vocab_size=32,
                    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                    max_position_embeddings=256, hidden_act="silu", sliding_window=70),
        dtype="F32", biases=(), targets=["q_proj", "k_proj", "v_proj"], r=2, alpha=2.0,
        rslora=False, rank_pattern={}, alpha_pattern={}, B=1, T=150, seed=4),
]


# ---- safetensors, written by hand (no extra packages) ----

def tensor_bytes(t, dtype):
    if dtype == "F32":
        return t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
    tt = torch.float16 if dtype == "F16" else torch.bfloat16
    return t.to(tt).contiguous().view(torch.int16).numpy().astype("<i2").tobytes()


def rounded(t, dtype):
    """The value a reader gets back after storing t at dtype."""
    tt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    return t.to(tt).to(torch.float64)


def write_safetensors(path, tensors):
    """tensors: list of (name, tensor, dtype), written in that order."""
    header, blobs, off = {}, [], 0
    for name, t, dtype in tensors:
        b = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- the model, as Hugging Face computes it ----

def inv_freq(cfg, head_dim):
    base = cfg["rope_theta"]
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            inv = inv / rs["factor"]
        elif kind == "llama3":
            factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            low_wavelen, high_wavelen = old / lo, old / hi
            wavelen = 2 * math.pi / inv
            inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
            smooth = (old / wavelen - lo) / (hi - lo)
            smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
            medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
            inv = torch.where(medium, smoothed, inv_l)
    return inv


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def window_of(cfg, layer):
    if cfg["model_type"] == "mistral":
        return cfg.get("sliding_window")
    if cfg["model_type"] == "qwen2" and cfg.get("use_sliding_window") and layer >= cfg.get("max_window_layers", 28):
        return cfg.get("sliding_window")
    return None


def forward(cfg, W, lora, inputs, targets):
    """Mean cross-entropy. lora maps a module name to (A, B, scaling)."""
    C, NH, NKV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    HD = cfg.get("head_dim", C // NH)
    eps = cfg["rms_norm_eps"]
    Bsz, T = inputs.shape

    def linear(x, name):
        y = x @ W[name + ".weight"].T
        if name + ".bias" in W:
            y = y + W[name + ".bias"]
        if name in lora:  # PEFT: result + lora_B(lora_A(dropout(x))) * scaling
            A, Bm, s = lora[name]
            y = y + (x @ A.T) @ Bm.T * s
        return y

    pos = torch.arange(T, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq(cfg, HD))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    h = W["model.embed_tokens.weight"][inputs]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms_norm(h, W[p + "input_layernorm.weight"], eps)
        q = linear(x, p + "self_attn.q_proj").view(Bsz, T, NH, HD).transpose(1, 2)
        k = linear(x, p + "self_attn.k_proj").view(Bsz, T, NKV, HD).transpose(1, 2)
        v = linear(x, p + "self_attn.v_proj").view(Bsz, T, NKV, HD).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(NH // NKV, dim=1)  # repeat_kv
        v = v.repeat_interleave(NH // NKV, dim=1)
        scores = q @ k.transpose(2, 3) * HD ** -0.5
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        allowed = j <= i
        w = window_of(cfg, l)
        if w:
            allowed = allowed & (j > i - w)
        scores = scores.masked_fill(~allowed, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v
        att = att.transpose(1, 2).reshape(Bsz, T, NH * HD)
        h = h + linear(att, p + "self_attn.o_proj")
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        g = linear(x, p + "mlp.gate_proj")
        u = linear(x, p + "mlp.up_proj")
        h = h + linear(torch.nn.functional.silu(g) * u, p + "mlp.down_proj")
    h = rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits = h @ head.T
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def shapes(cfg):
    C, F, NH, NKV = (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"],
                     cfg["num_key_value_heads"])
    HD = cfg.get("head_dim", C // NH)
    return {"q_proj": (NH * HD, C), "k_proj": (NKV * HD, C), "v_proj": (NKV * HD, C),
            "o_proj": (C, NH * HD), "gate_proj": (F, C), "up_proj": (F, C), "down_proj": (C, F)}


def make_case(case, outdir):
    cfg = case["config"]
    gen = torch.Generator().manual_seed(case["seed"])

    def uni(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    C, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    shp = shapes(cfg)
    dtype = case["dtype"]
    tensors = [("model.embed_tokens.weight", uni((V, C), -0.3, 0.3))]
    for l in range(L):
        p = f"model.layers.{l}."
        for m in MODULES:
            part = "self_attn." if m in ATTN else "mlp."
            tensors.append((p + part + m + ".weight", uni(shp[m], -0.3, 0.3)))
            if m in case["biases"]:
                tensors.append((p + part + m + ".bias", uni(shp[m][:1], -0.2, 0.2)))
        tensors.append((p + "input_layernorm.weight", uni((C,), 0.8, 1.2)))
        tensors.append((p + "post_attention_layernorm.weight", uni((C,), 0.8, 1.2)))
    tensors.append(("model.norm.weight", uni((C,), 0.8, 1.2)))
    if not cfg["tie_word_embeddings"]:
        tensors.append(("lm_head.weight", uni((V, C), -0.3, 0.3)))
    W = {n: rounded(t, dtype) for n, t in tensors}

    # The adapter, with PEFT's per-module rank and alpha rules.
    layers = []
    for l in range(L):
        for m in MODULES:
            if m not in case["targets"]:
                continue
            name = f"model.layers.{l}.{'self_attn' if m in ATTN else 'mlp'}.{m}"
            r = case["rank_pattern"].get(name, case["r"])
            alpha = case["alpha_pattern"].get(name, case["alpha"])
            out_f, in_f = shp[m]
            A = rounded(uni((r, in_f), -0.3, 0.3), "F32")
            Bm = rounded(uni((out_f, r), -0.3, 0.3), "F32")
            s = alpha / math.sqrt(r) if case["rslora"] else alpha / r
            layers.append(dict(name=name, rank=r, alpha=alpha, A=A, B=Bm, scaling=s))

    Bsz, T = case["B"], case["T"]
    tokens = torch.randint(0, V, (Bsz * T + 1,), generator=gen)
    inputs = torch.stack([tokens[b * T: b * T + T] for b in range(Bsz)])
    targets = torch.stack([tokens[b * T + 1: b * T + T + 1] for b in range(Bsz)])

    loss_base = forward(cfg, W, {}, inputs, targets).item()
    params = {}
    lora = {}
    for ly in layers:
        A = ly["A"].clone().requires_grad_(True)
        Bm = ly["B"].clone().requires_grad_(True)
        params[ly["name"]] = (A, Bm)
        lora[ly["name"]] = (A, Bm, ly["scaling"])
    loss = forward(cfg, W, lora, inputs, targets)
    loss.backward()

    d = os.path.join(outdir, case["name"])
    os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, _name_or_path=case["name"], architectures=["LlamaForCausalLM"]), f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), [(n, t, dtype) for n, t in tensors])
    write_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"),
                      [(f"base_model.model.{ly['name']}.lora_{k}.weight", ly[k], "F32")
                       for ly in layers for k in ("A", "B")])
    peft = dict(peft_type="LORA", task_type="CAUSAL_LM", base_model_name_or_path=case["name"],
                r=case["r"], lora_alpha=case["alpha"], lora_dropout=0.0, use_rslora=case["rslora"],
                target_modules=sorted(case["targets"]), rank_pattern=case["rank_pattern"],
                alpha_pattern=case["alpha_pattern"], bias="none", fan_in_fan_out=False, use_dora=False)
    with open(os.path.join(d, "adapter", "adapter_config.json"), "w") as f:
        json.dump(peft, f, indent=2)
        f.write("\n")
    grads = []
    for ly in layers:
        A, Bm = params[ly["name"]]
        grads.append((ly["name"] + ".lora_A", A.grad, "F32"))
        grads.append((ly["name"] + ".lora_B", Bm.grad, "F32"))
    write_safetensors(os.path.join(d, "grads.safetensors"), grads)
    with open(os.path.join(d, "tokens.u16"), "wb") as f:
        f.write(struct.pack("<%dH" % tokens.numel(), *tokens.tolist()))
    expect = dict(B=Bsz, T=T, tokens=tokens.tolist(), rslora=case["rslora"],
                  layers=[dict(name=ly["name"], rank=ly["rank"], alpha=ly["alpha"]) for ly in layers],
                  loss=loss.item(), loss_base=loss_base, torch=torch.__version__)
    with open(os.path.join(d, "expect.json"), "w") as f:
        json.dump(expect, f, indent=2)
        f.write("\n")
    print(f"{case['name']}: loss_base {loss_base:.9f} loss {loss.item():.9f} ({len(layers)} adapted modules)")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "fixtures", "model")
    os.makedirs(outdir, exist_ok=True)
    for case in CASES:
        make_case(case, outdir)
    with open(os.path.join(outdir, "cases"), "w") as f:
        f.write("".join(c["name"] + "\n" for c in CASES))


if __name__ == "__main__":
    main()
