#!/bin/bash
# The independent check of merged GGUF models against llama.cpp, run by
# hand while developing (never by `make check`, which is offline):
#
#   LORA_BUILD=build tests/ref/ggufmerge_check.sh [NPM_DIR]
#
# NPM_DIR as for gguf_check.sh (node-llama-cpp 3.21.1). For every case of
# ggufmerge_cases.bash: lora-merge writes the GGUF model and the merged
# safetensors; llama.cpp's next-token log-probabilities over the whole
# vocabulary at every position of tokens.u16 (f32 KV cache, no flash
# attention) on the GGUF against ours on the safetensors (argmax-full with
# ARGMAX_LOGPROBS=1); and for the three tokenizers, llama.cpp's ids of
# GGUFMERGE_STRINGS from the GGUF against lora-tokenize's. Writes to
# tests/fixtures/gguf/: merge-NAME.llamacpp (the first 256 log-probabilities
# of each position), merge-NAME.kv (ggufcheck kv of the file llama.cpp
# read) and tok-MODEL.ids (llama.cpp's ids, a line per string).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
: "${LORA_BUILD:=$ROOT/build}"
NPM=$(realpath -m "${1:-$ROOT/.npm-ref}")
PATH="$LORA_BUILD/bin:$LORA_BUILD/tests/tools:$PATH"
FIX=$ROOT/tests/fixtures
if [ ! -d "$NPM/node_modules/node-llama-cpp" ]; then
	mkdir -p "$NPM"
	(cd "$NPM" && npm init -y >/dev/null && npm install --no-audit --no-fund node-llama-cpp@3.21.1 >/dev/null)
fi
cp tests/ref/gguf_llamacpp.mjs "$NPM/"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
source "$ROOT/tests/ref/gguf_cases.bash"
source "$ROOT/tests/ref/ggufmerge_cases.bash"
gguf_models
gguf_adapters
ggufmerge_models
cp "$FIX/gguf/tokens.u16" .
worst=0
for c in "${GGUFMERGE_CASES[@]}"; do
	set -- $c
	name=$1 model=$2 ad=$3 dt=$4
	lora-merge -q -m $model $ad --dtype $dt -o $name.gguf
	lora-merge -q -m $model $ad -o $name.st
	node "$NPM/gguf_llamacpp.mjs" probs $name.gguf tokens.u16 >$name.ref
	ARGMAX_LOGPROBS=1 argmax-full $name.st tokens.u16 1 >$name.ours
	dmax=$(python3 - "$name.ref" "$name.ours" <<'PY'
import sys
ref = [list(map(float, l.split())) for l in open(sys.argv[1])]
ours = [list(map(float, l.split())) for l in open(sys.argv[2])]
assert len(ref) == len(ours) and all(len(a) == len(b) for a, b in zip(ref, ours))
print("%.3g" % max(abs(x - y) for a, b in zip(ref, ours) for x, y in zip(a, b)))
PY
)
	printf '%-18s %-5s log-probabilities over %s tokens: max |llama.cpp - ours| %s\n' "$name" "$dt" \
		"$(head -1 $name.ref | wc -w)" "$dmax"
	[ "$dt" = f32 ] && worst=$(python3 -c "print(max($worst, $dmax))")
	cut -d' ' -f1-256 $name.ref >"$FIX/gguf/merge-$name.llamacpp"
	ggufcheck kv $name.gguf >"$FIX/gguf/merge-$name.kv"
done
printf '%s' "$GGUFMERGE_STRINGS" >strings.json
tokbad=0
for m in spm llama3 qwen; do
	g=$(ls *.gguf | grep "^$m-" | head -1)
	[ -n "$g" ] || { lora-merge -q -m $(ls -d *-$m) plain -o $m-tok.gguf 2>/dev/null || lora-merge -q -m $(ls -d *-$m) qplain -o $m-tok.gguf; g=$m-tok.gguf; }
	node "$NPM/gguf_llamacpp.mjs" tokenize $g strings.json >"$FIX/gguf/tok-$m.ids"
	python3 -c "import json,sys; [print(s) for s in json.loads(sys.argv[1])]" "$GGUFMERGE_STRINGS" >/dev/null
	i=0
	while IFS= read -r want; do
		s=$(python3 -c "import json,sys; sys.stdout.write(json.loads(sys.argv[1])[int(sys.argv[2])])" "$GGUFMERGE_STRINGS" $i)
		got=$(printf '%s' "$s" | lora-tokenize -q --tokenizer $(ls -d *-$m)/tokenizer.json --no-special | od -An -tu2 -v | xargs)
		if [ "$got" != "$want" ]; then
			echo "tokenizer $m, string $i: llama.cpp [$want], ours [$got]"
			tokbad=1
		fi
		i=$((i + 1))
	done <"$FIX/gguf/tok-$m.ids"
	echo "tokenizer $m: $i strings compared"
done
echo "largest f32 difference $worst (tolerance 1e-4); tokenizers $([ $tokbad = 0 ] && echo agree || echo DISAGREE)"
python3 -c "import sys; sys.exit(0 if $worst < 1e-4 and $tokbad == 0 else 1)"
