#!/bin/bash
# The transformer: one LoRA training step (forward + backward) on a
# generated model (hidden 288, intermediate 768, 6 layers, 6 heads, 6 kv
# heads, vocab 32000; batch 4, sequence 256; LoRA r=8 on q_proj and v_proj):
# tokens/s, peak RSS, and model FLOP utilisation against the sgemm rate
# measured in the same run on the step's own matrix shapes at the same
# thread count. Then peak RSS at sequence 2048, batch 1, to show activation
# memory growing linearly with the sequence. Then, at TinyLlama-1.1B shapes
# (22 blocks, bf16; batch 1 x 256 and 4 x 256, r=16 on q_proj and v_proj),
# how much of a step is not matrix products (attention, norms, RoPE,
# SwiGLU, cross-entropy, the optimizer...), now and as it would be with
# products twice as fast (bf16 on AMX), and the kernels that take it.
. "$(dirname "$0")/common.bash"

mkmodel --hidden 288 --inter 768 --layers 6 --heads 6 --kv-heads 6 --vocab 32000 "$w/model" >/dev/null

echo "== model: LoRA training step, hidden 288, 6 layers, vocab 32000, B=4 T=256, r=8 on q_proj,v_proj"
threads="1"
[ "$cores" -gt 1 ] && threads="$cores 1"
for j in $threads; do
	bench-model -m "$w/model" -b 4 -T 256 -j "$j" --steps 5 > "$w/out"
	printf '%d thread%s: %6.0f tokens/s (%.0f ms/step), %5.1f GFLOP/s of %.1f model GFLOP/step; sgemm ceiling %.1f GFLOP/s (OpenBLAS threading %.1f, oneDNN %.1f); MFU %.1f%% (target 70%%); peak RSS %.0f MiB\n' \
		"$j" "$([ "$j" = 1 ] || echo s)" "$(val tokens_per_s "$w/out")" "$(val step_ms "$w/out")" \
		"$(val achieved_gflops "$w/out")" \
		"$(awk -v f="$(val model_flops_per_token "$w/out")" 'BEGIN { printf "%.1f", f * 1024 / 1e9 }')" \
		"$(val ceiling_gflops "$w/out")" "$(val sgemm_openblas_gflops "$w/out")" "$(val sgemm_pool_gflops "$w/out")" \
		"$(awk -v m="$(val mfu "$w/out")" 'BEGIN { printf "%.1f", m * 100 }')" "$(val peak_rss_mib "$w/out")"
done

echo "== model: memory against sequence length (B=1, $cores threads)"
for T in 256 2048; do
	bench-model -m "$w/model" -b 1 -T "$T" --steps 3 --no-ceiling > "$w/t$T"
done
for T in 2048; do
	bench-model -m "$w/model" -b 1 -T "$T" --steps 3 --no-ceiling --recompute > "$w/r$T"
done
w256=$(val weights_mib "$w/t256")
for T in 256 2048; do
	printf 'T=%-5d peak RSS %5.0f MiB (weights %.0f MiB, activations %5.1f MiB), %6.0f tokens/s\n' "$T" \
		"$(val peak_rss_mib "$w/t$T")" "$w256" "$(val activation_mib "$w/t$T")" "$(val tokens_per_s "$w/t$T")"
done
printf 'T=2048 with block recomputation: peak RSS %5.0f MiB (activations %5.1f MiB), %6.0f tokens/s\n' \
	"$(val peak_rss_mib "$w/r2048")" "$(val activation_mib "$w/r2048")" "$(val tokens_per_s "$w/r2048")"
# a T x T float matrix for each of 6 layers x 6 heads, kept for backward
awk -v a="$(val activation_mib "$w/t256")" -v b="$(val activation_mib "$w/t2048")" 'BEGIN {
	per = (b - a) / (2048 - 256) * 1024
	printf "activations: a fixed %.1f MiB (logit chunk, scratch) plus %.1f KiB per token, linear in T;\n", a - per * 256 / 1024, per
	printf "keeping T x T attention probabilities per layer and head would add %.0f MiB at T=2048\n", 36 * 2048 * 2048 * 4 / 1048576
}'

echo "== model: the step outside the matrix products, TinyLlama-1.1B shapes (hidden 2048, inter 5632, 22 blocks, 32 heads / 4 kv, vocab 32000, bf16), r=16 on q_proj,v_proj, $cores threads"
mkmodel --hidden 2048 --inter 5632 --layers 22 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 "$w/tiny" >/dev/null
for b in 1 4; do
	bench-model -m "$w/tiny" -b "$b" -T 256 -r 16 --steps 2 --no-ceiling > "$w/tiny$b"
	awk -F= '{ v[$1] = $2 } END {
		p = v["products_ms"]; o = v["other_ms"]
		printf "B=%d x 256: step %.0f ms = products %.0f ms + the rest %.0f ms (optimizer %.1f ms): the rest is %.1f%% of the step (target 20%%); with products 2x faster %.1f%%\n", v["batch"], v["step_ms"], p, o, v["optimizer_ms"], 100 * o / (p + o), 100 * o / (p / 2 + o)
	}' "$w/tiny$b"
	printf '  kernels, ms of the step:'
	sed -n 's/^kernel_\(.*\)_ms=\(.*\)/\2 \1/p' "$w/tiny$b" | sort -rn | head -6 | awk '{ printf " %s %.1f", $2, $1 }'
	echo
done
