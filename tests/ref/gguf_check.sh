#!/bin/bash
# The independent check of GGUF adapters against llama.cpp, run by hand
# while developing (never by `make check`, which is offline):
#
#   LORA_BUILD=build tests/ref/gguf_check.sh [NPM_DIR]
#
# NPM_DIR (default .npm-ref, not committed) gets `npm install
# node-llama-cpp@3.21.1` (its prebuilt llama.cpp for the CPU) unless it has
# it. For every case of gguf_cases.bash: the base model converted to GGUF by
# gguf_llamacpp.mjs (its own converter), our adapter, llama.cpp's next-token
# log-probabilities over the whole vocabulary at every position (f32 KV
# cache, no flash attention) against ours (argmax-full with
# ARGMAX_LOGPROBS=1, the adapter read from the same .gguf), and llama.cpp's
# mean loss on the tokens against lora-eval's. Prints the largest
# differences; writes the adapters llama.cpp accepted and its values to
# tests/fixtures/gguf/ for tests/gguf.bats.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
: "${LORA_BUILD:=$ROOT/build}"
NPM=$(realpath -m "${1:-$ROOT/.npm-ref}")
PATH="$LORA_BUILD/bin:$LORA_BUILD/tests/tools:$PATH"
FIX=$ROOT/tests/fixtures/gguf
if [ ! -d "$NPM/node_modules/node-llama-cpp" ]; then
	mkdir -p "$NPM"
	(cd "$NPM" && npm init -y >/dev/null && npm install --no-audit --no-fund node-llama-cpp@3.21.1 >/dev/null)
fi
cp tests/ref/gguf_llamacpp.mjs "$NPM/"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
source "$ROOT/tests/ref/gguf_cases.bash"
gguf_models
gguf_adapters
cp "$FIX/tokens.u16" .
for m in llama qwen2; do
	node "$NPM/gguf_llamacpp.mjs" base $m $m.gguf
done
worst=0
for c in "${GGUF_CASES[@]}"; do
	set -- $c
	name=$1 model=$2 ad=${3:-}
	node "$NPM/gguf_llamacpp.mjs" probs $model.gguf tokens.u16 ${ad:+"$W/$ad"} >"$name.ref"
	ARGMAX_LOGPROBS=1 argmax-full $model tokens.u16 1 $ad >"$name.ours"
	n=$(($(stat -c %s tokens.u16) / 2 - 1))
	eval_loss=$(lora-eval -q -m $model $ad -d tokens.u16 -b 1 -T $n --no-shuffle --json | jq .loss)
	read -r dmax dloss < <(python3 - "$name.ref" "$name.ours" tokens.u16 "$eval_loss" <<'PY'
import struct, sys
ref = [list(map(float, l.split())) for l in open(sys.argv[1])]
ours = [list(map(float, l.split())) for l in open(sys.argv[2])]
raw = open(sys.argv[3], 'rb').read()
tok = struct.unpack('<%dH' % (len(raw) // 2), raw)
assert len(ref) == len(ours) == len(tok) and all(len(a) == len(b) == 256 for a, b in zip(ref, ours))
dmax = max(abs(x - y) for a, b in zip(ref, ours) for x, y in zip(a, b))
loss = -sum(ref[i][tok[i + 1]] for i in range(len(tok) - 1)) / (len(tok) - 1)
print("%.3g %.3g" % (dmax, abs(loss - float(sys.argv[4]))))
PY
)
	printf '%-18s log-probabilities: max |llama.cpp - ours| %-9s mean loss: |llama.cpp - lora-eval| %s\n' "$name" "$dmax" "$dloss"
	worst=$(python3 -c "print(max($worst, $dmax, $dloss))")
	cp "$name.ref" "$FIX/$name.llamacpp"
done
cp plain.gguf pattern.gguf qplain.gguf rslora.gguf "$FIX/"
echo "largest difference $worst (tolerance 1e-4)"
python3 -c "import sys; sys.exit(0 if $worst < 1e-4 else 1)"
