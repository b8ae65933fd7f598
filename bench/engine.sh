#!/bin/bash
# The compute engine at real sizes: a LoRA training step of TinyLlama-1.1B's
# shapes (hidden 2048, intermediate 5632, 22 blocks, 32 heads / 4 KV heads,
# vocab 32000) from a bf16 checkpoint, batch 1 x 256, r16 on q_proj,v_proj,
# in f32 and bf16 compute: tokens/s, the share of the oneDNN ceiling measured
# in the same run on the step's own products in the same type, the step as
# it ran before oneDNN and bf16 (the same step with its products at
# OpenBLAS's f32 rate, measured here too), and peak RSS against the
# checkpoint's bytes + 1 GiB (the weights are read in place). Then the same
# on oneDNN's AVX2 kernels (DNNL_MAX_CPU_ISA=AVX2, the AMD EPYC machines)
# against OpenBLAS's Haswell kernels, which OpenBLAS runs on those.
# LORA_BENCH_BIG=1 adds Llama-2-7B's shapes (13.5 GB, generated once into
# LORA_BENCH_DIR, default $w): lora-eval of one 512-token batch and two
# lora-train steps, batch 1 x 512, in 24 GiB.
. "$(dirname "$0")/common.bash"

mkmodel --hidden 2048 --inter 5632 --layers 22 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 \
	--shard-bytes 1000000000 "$w/tiny" >/dev/null
bytes=$(lora-inspect --json "$w/tiny" | jq .tensor_bytes)
echo "== engine: TinyLlama-1.1B shapes, bf16 checkpoint ($(awk -v b="$bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }')), B=1 T=256, r=16 on q_proj,v_proj, $cores threads"
run() { # NAME ARGS...: bench-model's lines into $w/NAME
	local n=$1
	shift
	bench-model -m "$w/tiny" -b 1 -T 256 -r 16 --steps 2 "$@" > "$w/$n"
}
report() { # NAME LABEL
	local f="$w/$1" step before
	step=$(val step_ms "$f")
	# the same step with its products at OpenBLAS's f32 rate instead of oneDNN's
	before=$(awk -v s="$step" -v fl="$(val gemm_flops_per_step "$f")" -v pm="$(val products_ms "$f")" \
		-v o="$(val sgemm_openblas_gflops "$f")" 'BEGIN { printf "%.1f", s - pm + fl / (o * 1e9) * 1e3 }')
	printf '%-22s %5.1f tokens/s (%6.0f ms/step, %.0f%% outside the products: target <= 20%%), %5.1f%% of the %s ceiling (%.0f GFLOP/s); %.2fx the step with products at OpenBLAS f32 rate (%.0f ms); peak RSS %.0f MiB = checkpoint + %.0f MiB (target <= + 1024)\n' \
		"$2" "$(val tokens_per_s "$f")" "$step" "$(awk -v o="$(val other_share "$f")" 'BEGIN { print o * 100 }')" \
		"$(awk -v m="$(val mfu "$f")" 'BEGIN { print m * 100 }')" \
		"$(val compute "$f")" "$(val ceiling_gflops "$f")" "$(awk -v a="$before" -v b="$step" 'BEGIN { print a / b }')" \
		"$before" "$(val peak_rss_mib "$f")" "$(awk -v r="$(val peak_rss_mib "$f")" -v b="$bytes" 'BEGIN { print r - b / 1048576 }')"
}
run f32 --compute f32
report f32 "f32 compute"
if bench-model -m "$w/tiny" -b 1 -T 8 --steps 1 --no-ceiling --compute bf16 >/dev/null 2>&1; then
	run bf16 --compute bf16
	report bf16 "bf16 compute"
	printf 'auto picks %s here; bf16 runs %.2fx f32\n' "$(bench-model -m "$w/tiny" -b 1 -T 8 --steps 1 --no-ceiling | sed -n 's/^compute=//p')" \
		"$(awk -v a="$(val tokens_per_s "$w/bf16")" -v b="$(val tokens_per_s "$w/f32")" 'BEGIN { print a / b }')"
else
	echo "bf16 compute: not available on this CPU (oneDNN has no bf16 kernels below AVX-512)"
fi
# OpenBLAS capped alike: the baseline is the step an AVX2 machine ran before
DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell run avx2 --compute f32
report avx2 "f32 on AVX2 kernels"
echo "(on AVX2 kernels the target is at least 1.00x the step with products at OpenBLAS's Haswell rate)"

[ "${LORA_BENCH_BIG:-0}" = 1 ] || exit 0
big=${LORA_BENCH_DIR:-$w}/llama7b-bf16
[ -d "$big" ] || mkmodel --hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --dtype bf16 \
	--shard-bytes 5000000000 "$big" >/dev/null
bytes=$(lora-inspect --json "$big" | jq .tensor_bytes)
mktokens --vocab 32000 --seed 3 4000 > "$w/t7.u16"
echo "== engine: Llama-2-7B shapes, bf16 ($(awk -v b="$bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }')), B=1 T=512, $cores threads"
peakrss "$w/e7" lora-eval -m "$big" -d "$w/t7.u16" -b 1 -T 512 --batches 1 --json > "$w/e7.json"
peakrss "$w/t7" lora-train -m "$big" -d "$w/t7.u16" -b 1 -T 512 -r 16 --steps 2 --log "$w/t7.jsonl" -q -o "$w/a7.lora"
for k in e7 t7; do
	printf '%-32s %6.1f s; peak RSS %.0f MiB = checkpoint + %.0f MiB (target <= + 2560)\n' \
		"$([ $k = e7 ] && echo "lora-eval, one batch ($(jq -r .compute "$w/e7.json"))" || echo "lora-train, two steps ($(jq -r -s '.[0].compute' "$w/t7.jsonl"))")" \
		"$(val wall_s "$w/$k")" "$(val peak_rss_kib "$w/$k" | awk '{ print $1 / 1024 }')" \
		"$(awk -v r="$(val peak_rss_kib "$w/$k")" -v b="$bytes" 'BEGIN { print r / 1024 - b / 1048576 }')"
done
printf 'seconds per training step: %.1f (the second step)\n' "$(jq -s '.[-1].elapsed - .[-2].elapsed' "$w/t7.jsonl")"
