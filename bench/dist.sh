#!/bin/bash
# Data-parallel lora-train (lora-train(1), "Data-parallel runs"): the
# gradient exchange on its own, 2 ranks on this machine, at TinyLlama-1.1B's
# shapes with r8, r16 and r64 on every linear module (788480 values per unit
# of rank: 22 blocks x (q 2048+2048, k 2048+256, v 2048+256, o 2048+2048,
# gate/up/down 3 x (2048+5632))): its time and bytes per step; then one
# training step of the same model (B=1 T=256, r16 on every linear module),
# and from the two, the speedup on 2 to 16 machines over 1 and 10 Gbit/s
# networks by the ring-allreduce cost model (README, "Past one machine").
. "$(dirname "$0")/common.bash"

if ! command -v mpirun >/dev/null || ! ldd "$B/bin/lora-train" | grep -q libmpi; then
	echo "== dist: skipped (no Open MPI; make deps installs it, MPI=0 builds without)"
	exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
per_rank=788480
echo "== dist: gradient exchange, 2 ranks on this machine (shared memory), TinyLlama shapes, every linear module"
for r in 8 16 64; do
	mpirun -q -np 2 distbench $((per_rank * r)) 3 > "$w/r$r"
	printf 'r%-3d %9d values: %6.1f MB per link per step, %7.1f ms per exchange; %.2fx the time of MPI_Allreduce (%.1f ms, any order)\n' \
		"$r" "$(val params "$w/r$r")" "$(awk -v b="$(val bytes_per_step "$w/r$r")" 'BEGIN { print b / 1e6 }')" \
		"$(val reduce_ms "$w/r$r")" "$(awk -v a="$(val reduce_ms "$w/r$r")" -v b="$(val allreduce_ms "$w/r$r")" 'BEGIN { print a / b }')" \
		"$(val allreduce_ms "$w/r$r")"
done

mkmodel --hidden 2048 --inter 5632 --layers 22 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 \
	--shard-bytes 1000000000 "$w/tiny" >/dev/null
bench-model -m "$w/tiny" -b 1 -T 256 -r 16 -t all-linear --steps 2 --no-ceiling > "$w/step"
step=$(val step_ms "$w/step")
S=$(val bytes_per_step "$w/r16")
echo "== dist: one step B=1 T=256 r16 every linear module, $cores threads: $step ms ($(val compute "$w/step")); exchange $(awk -v b="$S" 'BEGIN { printf "%.1f MB", b / 2e6 }') of gradient"
# Ring allreduce of S/2 bytes (the gradient) over N machines at B bit/s:
# 2 (N-1)/N x (S/2) x 8 / B seconds, plus 2 (N-1) latencies of 50 us;
# compute spreads over the machines (each its share of the global batch):
# speedup = N t / (t + exchange), with t one step of one micro-batch here
# (more accumulation per rank moves it towards N).
for gbit in 1 10; do
	printf '%2d Gbit/s:' "$gbit"
	for n in 2 4 8 16; do
		awk -v n="$n" -v t="$step" -v s="$S" -v g="$gbit" 'BEGIN {
			x = 2 * (n - 1) / n * (s / 2) * 8 / (g * 1e9) * 1e3 + 2 * (n - 1) * 0.05
			printf "  %2d machines %5.2fx (exchange %4.0f ms)", n, n * t / (t + x), x }'
	done
	echo
done
