#!/usr/bin/env python3
# tests/fixtures/gguf/spm/tokenizer.json from tests/fixtures/tokenizers/llama2.json:
# the trimmed vocabulary there keeps tokens of several characters that no
# chain of kept merges makes from single characters. The library never
# produces them, but llama.cpp's SentencePiece tokenizer joins any adjacent
# pair whose text is a token, so such a file would tokenize differently
# there for want of merges, not because of the GGUF. Each is renamed
# "<unreached_ID>" and the merges that use one are dropped (they can never
# apply), which changes no id the library gives. Run from the top of the
# tree.
import json
src = json.load(open("tests/fixtures/tokenizers/llama2.json", encoding="utf-8"))
m = src["model"]
reach = {t for t in m["vocab"] if len(t) == 1}
merges = []
for x in m["merges"]:
    a, b = x.split(" ")
    if a in reach and b in reach:
        reach.add(a + b)
        merges.append(x)
special = {t["content"] for t in src["added_tokens"]}
vocab = {}
for tok, i in m["vocab"].items():
    if tok not in reach and tok not in special and not tok.startswith("<0x"):
        tok = "<unreached_%d>" % i
    vocab[tok] = i
m["vocab"] = vocab
m["merges"] = merges
with open("tests/fixtures/gguf/spm/tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(src, f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")
