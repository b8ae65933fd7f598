#!/bin/bash
# Header parsing at 10k, 40k and 80k layers: lora-inspect (header only) of
# a .lora and lora-diff of it with itself. Linear readers show a time per
# layer that stays flat; a quadratic one grows 8x from 10k to 80k.
. "$(dirname "$0")/common.bash"
now() { date +%s.%N; }
echo "== header parsing: time per 1k layers (flat = linear)"
for n in 10000 40000 80000; do
	mkadapter --many $n >"$w/h.lora"
	t0=$(now); lora-inspect "$w/h.lora" >/dev/null; t1=$(now)
	lora-diff -q "$w/h.lora" "$w/h.lora"; t2=$(now)
	awk -v n=$n -v a="$t0" -v b="$t1" -v c="$t2" \
		'BEGIN { printf "%6d layers: inspect %.3f s (%.2f ms/1k), diff %.3f s (%.2f ms/1k)\n", n, b - a, (b - a) * 1e6 / n, c - b, (c - b) * 1e6 / n }'
done
rm -f "$w/h.lora"
