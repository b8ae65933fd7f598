#!/bin/bash
# lora-svd: randomized vs exact extraction and re-ranking from the factors,
# each against a baseline timed in the same run (tests/tools/svdbench), then
# the tool end to end on a generated model.
# Sizes can be shrunk for a quick look: SVD_BENCH_DIM=1024 SVD_BENCH_INTER=2816.
set -eu
: "${LORA_BUILD:?set LORA_BUILD to a build directory}"
PATH="$LORA_BUILD/bin:$LORA_BUILD/tests/tools:$PATH"
dim=${SVD_BENCH_DIM:-4096}
inter=${SVD_BENCH_INTER:-11008}
echo "== lora-svd ($(nproc) cores; OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset})"
svdbench extract "$dim" "$dim" 16
svdbench extract "$dim" "$inter" 16
svdbench rerank "$dim" "$dim" 64 16 8

# End to end: read two checkpoints, factor every linear weight of one block.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
h=$((dim / 4)) f=$((inter / 4))
mkmodel --hidden "$h" --inter "$f" --layers 1 --heads 8 --vocab 64 "$tmp/base" >/dev/null
mktuned --plant all-linear=4,2,1 --noise 0.001 "$tmp/base" "$tmp/tuned"
t0=$(date +%s.%N)
lora-svd --json -m "$tmp/base" --tuned "$tmp/tuned" -r 16 -o "$tmp/r.lora" >"$tmp/r.json"
t1=$(date +%s.%N)
lora-svd --json -m "$tmp/base" --tuned "$tmp/tuned" -r 16 --method exact -o "$tmp/e.lora" >"$tmp/e.json"
t2=$(date +%s.%N)
er=$(jq '[.layers[].rel_error] | add / length' "$tmp/r.json")
ee=$(jq '[.layers[].rel_error] | add / length' "$tmp/e.json")
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v h="$h" -v f="$f" -v er="$er" -v ee="$ee" 'BEGIN {
	r = t1 - t0; e = t2 - t1
	printf "lora-svd end to end, 7 linear weights of %dx%d / %dx%d: exact %.2f s, randomized %.2f s: %.1fx faster\n",
		h, h, h, f, e, r, e / r
	printf "  mean rel.error: exact %.6f, randomized %.6f (%+.4f%%)\n", ee, er, 100 * (er / ee - 1) }'
