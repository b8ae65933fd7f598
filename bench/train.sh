#!/bin/bash
# lora-train end to end on the model benchmark's configuration (hidden 288,
# intermediate 768, 6 layers, vocab 32000; batch 4, sequence 256; r=8 on
# q_proj and v_proj): training tokens/s from its log, utilisation against
# the sgemm ceiling measured in the same run on the step's own shapes, and
# peak RSS of the whole process.
. "$(dirname "$0")/common.bash"

mkmodel --hidden 288 --inter 768 --layers 6 --heads 6 --kv-heads 6 --vocab 32000 "$w/model" >/dev/null
mktokens --vocab 32000 --seed 1 200000 > "$w/train.bin"
echo "== lora-train: hidden 288, 6 layers, vocab 32000, B=4 T=256, r=8 on q_proj,v_proj, 12 steps"
threads="1"
[ "$cores" -gt 1 ] && threads="$cores 1"
for j in $threads; do
	bench-model -m "$w/model" -b 4 -T 256 -j "$j" --steps 2 > "$w/ceil"
	rm -f "$w/log"
	peakrss "$w/rss" lora-train -j "$j" -m "$w/model" -d "$w/train.bin" --seq 256 --batch 4 --steps 12 \
		--log "$w/log" -q -f -o "$w/a.lora"
	# the first steps warm caches up: rate over the last 8
	tps=$(jq -s '(.[-1].elapsed - .[-9].elapsed) as $t | 8 * 1024 / $t' "$w/log")
	fpt=$(val model_flops_per_token "$w/ceil")
	ceil=$(val ceiling_gflops "$w/ceil")
	printf '%d thread%s: %.0f training tokens/s, %.1f GFLOP/s of a %.1f GFLOP/s sgemm ceiling: %.1f%%; peak RSS %.0f MiB\n' \
		"$j" "$([ "$j" = 1 ] || echo s)" "$tps" "$(awk -v f="$fpt" -v t="$tps" 'BEGIN { print f * t / 1e9 }')" "$ceil" \
		"$(awk -v f="$fpt" -v t="$tps" -v c="$ceil" 'BEGIN { print f * t / 1e9 / c * 100 }')" \
		"$(awk -v r="$(val peak_rss_kib "$w/rss")" 'BEGIN { print r / 1024 }')"
done
