#!/bin/bash
# Matrix products at TinyLlama-1.1B shapes (hidden 2048, intermediate 5632,
# 32 heads / 4 KV heads, vocab 32000; a 2-layer bf16 model, batch 1 x 256,
# r=16 on q_proj and v_proj): every distinct product of one training step,
# as the model issues it, timed through blas (oneDNN) and through OpenBLAS
# with its own threading at the same thread count, in the same run; the
# ratio per shape and over the whole step. Then the same with both capped
# at AVX2 (DNNL_MAX_CPU_ISA, OPENBLAS_CORETYPE=Haswell), as on a CPU without
# AVX-512.
. "$(dirname "$0")/common.bash"

mkmodel --hidden 2048 --inter 5632 --layers 2 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 "$w/model" >/dev/null
echo "== matmul: TinyLlama shapes, one training step (B=1 T=256, r=16 on q_proj,v_proj), $cores threads"
echo "CPU: $(lscpu | sed -n 's/^Model name:[ \t]*//p')"
for isa in default AVX2; do
	if [ $isa = default ]; then
		bench-model -m "$w/model" -b 1 -T 256 -r 16 -j "$cores" --steps 1 --per-shape > "$w/out"
	else
		DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell bench-model -m "$w/model" -b 1 -T 256 -r 16 -j "$cores" --steps 1 --per-shape > "$w/out"
	fi
	echo "-- ISA: $isa"
	printf '%-22s %6s %10s %10s %7s\n' "shape (op M x N x K)" calls "oneDNN" "OpenBLAS" ratio
	sed -n 's/^shape=\([^ ]*\) \([^ ]*\) calls=\([0-9]*\) onednn_gflops=\([^ ]*\) openblas_gflops=\([^ ]*\)$/\1 \2 \3 \4 \5/p' "$w/out" |
		awk '{ printf "%-22s %6d %10.1f %10.1f %6.2fx\n", $1 " " $2, $3, $4, $5, ($5 > 0 ? $4 / $5 : 0) }'
	printf 'whole step: oneDNN %.1f GFLOP/s, OpenBLAS %.1f GFLOP/s: %.2fx; the model step itself %.0f tokens/s\n' \
		"$(val step_onednn_gflops "$w/out")" "$(val step_openblas_gflops "$w/out")" \
		"$(awk -v a="$(val step_onednn_gflops "$w/out")" -v b="$(val step_openblas_gflops "$w/out")" 'BEGIN { print a / b }')" \
		"$(val tokens_per_s "$w/out")"
done
