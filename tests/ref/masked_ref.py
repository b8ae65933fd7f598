#!/usr/bin/python3
"""Reference for training and evaluation on token data with a loss mask and
document boundaries, computed with PyTorch.

    tests/ref/masked_ref.py [OUTDIR]      (default: tests/fixtures/masked)

Writes a tiny model and PEFT adapter (llama_ref.py's construction), a tok
file (man/lora-data.5, written here from the page) of documents of several
lengths with prompt tokens masked, and what Hugging Face's Trainer computes
from the rows lora-train and lora-eval cut from it (data.h's rules, written
out again below): labels -100 where a target has no loss (masked, in the
next document, padding), the loss of a step the mean over every label of
its micro-batches together (the Trainer's num_items_in_batch), and the
gradient of that loss. One SGD step of lr 1 from the adapter gives the
adapter in after/, which lora-train must reproduce: a gradient divided per
micro-batch, or by the padded length, lands elsewhere. The packed rows'
mean loss is recorded too (lora-eval --sample-packing).
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402

torch.set_default_dtype(torch.float64)

CFG = dict(model_type="llama", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, vocab_size=64, rms_norm_eps=1e-5,
           rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=64, hidden_act="silu")
TARGETS = ["q_proj", "v_proj", "down_proj"]
R, ALPHA = 2, 4.0
T = 6
# documents: (length, prompt tokens without loss); row lengths 7 (cut), 4,
# 7 and 3 give micro-batches of 2 rows with different label counts
DOCS = [(9, 3), (4, 2), (7, 1), (3, 1), (2, 1)]


def write_tok(path, tokens, docs, mask):
    with open(path, "wb") as f:
        f.write(b"LORATOK\n" + struct.pack("<IIII", 1, 2, 1, 0))
        f.write(struct.pack("<%dH" % len(tokens), *tokens))
        end = 0
        for n in docs:
            end += n
            f.write(struct.pack("<Q", end))
        bits = bytearray((len(tokens) + 7) // 8)
        for i, m in enumerate(mask):
            if m:
                bits[i // 8] |= 1 << (i % 8)
        f.write(bytes(bits))
        f.write(struct.pack("<QQ", len(tokens), len(docs)) + b"LORAEND\n")


def rows(tokens, docs, mask, packed):
    """(inputs, labels) of each row, data.h's rules."""
    starts, s = [], 0
    for n in docs:
        starts.append(s)
        s += n
    doc_of = [i for i, n in enumerate(docs) for _ in range(n)]
    spans = []
    if packed:
        cur = None
        for st, n in zip(starts, docs):
            if n > T + 1:
                if cur:
                    spans.append(cur)
                cur = None
                k = 0
                while k * T + 1 < n:
                    spans.append((st + k * T, min(T + 1, n - k * T)))
                    k += 1
            elif cur and cur[1] + n <= T + 1:
                cur = (cur[0], cur[1] + n)
            else:
                if cur:
                    spans.append(cur)
                cur = (st, n)
        if cur:
            spans.append(cur)
    else:
        spans = [(st, min(n, T + 1)) for st, n in zip(starts, docs)]
    out = []
    for off, n in spans:
        inp = [tokens[off + t] if t < n else 0 for t in range(T)]
        lab = [tokens[off + t + 1] if t + 1 < n and doc_of[off + t] == doc_of[off + t + 1] and mask[off + t + 1]
               else -100 for t in range(T)]
        if any(x != -100 for x in lab):
            out.append((inp, lab))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "fixtures", "masked")
    os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
    os.makedirs(os.path.join(d, "after"), exist_ok=True)
    gen = torch.Generator().manual_seed(7)

    def uni(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    C, V, L = CFG["hidden_size"], CFG["vocab_size"], CFG["num_hidden_layers"]
    shp = ref.shapes(CFG)
    tensors = [("model.embed_tokens.weight", uni((V, C), -0.3, 0.3))]
    for l in range(L):
        p = f"model.layers.{l}."
        for m in ref.MODULES:
            part = "self_attn." if m in ref.ATTN else "mlp."
            tensors.append((p + part + m + ".weight", uni(shp[m], -0.3, 0.3)))
        tensors.append((p + "input_layernorm.weight", uni((C,), 0.8, 1.2)))
        tensors.append((p + "post_attention_layernorm.weight", uni((C,), 0.8, 1.2)))
    tensors.append(("model.norm.weight", uni((C,), 0.8, 1.2)))
    tensors.append(("lm_head.weight", uni((V, C), -0.3, 0.3)))
    W = {n: ref.rounded(t, "F32") for n, t in tensors}
    layers = []
    for l in range(L):
        for m in TARGETS:
            name = f"model.layers.{l}.{'self_attn' if m in ref.ATTN else 'mlp'}.{m}"
            out_f, in_f = shp[m]
            A = ref.rounded(uni((R, in_f), -0.3, 0.3), "F32").requires_grad_(True)
            Bm = ref.rounded(uni((out_f, R), -0.3, 0.3), "F32").requires_grad_(True)
            layers.append((name, A, Bm))
    lora = {n: (A, Bm, ALPHA / R) for n, A, Bm in layers}

    n = sum(x for x, _ in DOCS)
    tokens = torch.randint(0, V, (n,), generator=gen).tolist()
    mask = [j >= p for x, p in DOCS for j in range(x)]
    lens = [x for x, _ in DOCS]
    write_tok(os.path.join(d, "data.tok"), tokens, lens, mask)

    def run(rs):
        inputs = torch.tensor([r[0] for r in rs])
        labels = torch.tensor([r[1] for r in rs])
        return ref.forward(CFG, W, lora, inputs, labels), int((labels != -100).sum())

    unpacked = rows(tokens, lens, mask, False)
    assert len(unpacked) == 5
    # one step: micro-batches of 2 rows, 2 of them: the first 4 rows
    loss, count = run(unpacked[:4])
    loss.backward()
    with torch.no_grad():
        loss_all, count_all = run(unpacked[:4])
        packed = rows(tokens, lens, mask, True)
        loss_packed, count_packed = run(packed[: len(packed) // 2 * 2])
    ref.write_safetensors(os.path.join(d, "model.safetensors"), [(k, t, "F32") for k, t in tensors])
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(CFG, _name_or_path="masked", architectures=["LlamaForCausalLM"]), f, indent=2)
        f.write("\n")
    peft = dict(peft_type="LORA", task_type="CAUSAL_LM", base_model_name_or_path="masked", r=R,
                lora_alpha=ALPHA, lora_dropout=0.0, use_rslora=False, target_modules=sorted(TARGETS),
                bias="none", fan_in_fan_out=False, use_dora=False)
    for sub, step in (("adapter", 0.0), ("after", 1.0)):
        ref.write_safetensors(os.path.join(d, sub, "adapter_model.safetensors"),
                              [(f"base_model.model.{nm}.lora_{k}.weight", (t - step * t.grad).detach(), "F32")
                               for nm, A, Bm in layers for k, t in (("A", A), ("B", Bm))])
        with open(os.path.join(d, sub, "adapter_config.json"), "w") as f:
            json.dump(peft, f, indent=2)
            f.write("\n")
    expect = dict(T=T, loss=loss.item(), count=count, eval_loss=loss_all.item(), eval_count=count_all,
                  packed_rows=len(packed), packed_loss=loss_packed.item(), packed_count=count_packed,
                  torch=torch.__version__)
    with open(os.path.join(d, "expect.json"), "w") as f:
        json.dump(expect, f, indent=2)
        f.write("\n")
    print(json.dumps(expect))


if __name__ == "__main__":
    main()
