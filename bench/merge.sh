#!/bin/bash
# lora-merge: a rank-16 adapter on every linear layer merged into a
# generated Llama-shaped bf16 checkpoint in shards, against `cp -r` of the
# same checkpoint in the same run; peak RSS against the bound of 4x the
# largest tensor in f32 plus the adapter. Then the same merge written as one
# GGUF model (bf16, and q8_0), against the merge to safetensors.
#
# The 1.1 GB checkpoint (TinyLlama's widths, 9 blocks) always runs. With
# LORA_BENCH_BIG=1, Llama-2-7B's shapes too (13.5 GB in shards of 5 GB;
# about 40 GB of disk: the checkpoint, its copy, the merge), generated in
# the scratch directory unless LORA_BENCH_BIG_MODEL names one made before
# with the mkmodel line below.
. "$(dirname "$0")/common.bash"

# merge_case LABEL MODEL TARGET: the adapter, the copy, the merge and the
# numbers; TARGET is the ratio to the copy aimed at.
merge_case() {
	local label=$1 model=$2
	echo "== lora-merge: rank 16, all-linear, into $label"
	lora-init -m "$model" -t all-linear -r 16 -q -f -o "$w/a.lora"
	# B is zero after lora-init: re-rank a dense adapter in instead, so the merge does real work
	specs=$(lora-inspect --json "$w/a.lora" | jq -r '.layers[] | "\(.name)=\(.out)x\(.in)x16"')
	mkadapter --gaussian 1 $specs > "$w/a.lora"
	# a GGUF model carries the tokenizer (llama.cpp pads the ids past it)
	[ -f "$model/tokenizer.json" ] || cp "$(dirname "$0")"/../tests/fixtures/gguf/spm/tokenizer*.json "$model/"
	bytes=$(du -sb "$model" | cut -f1)
	sync
	peakrss "$w/cp" cp -r "$model" "$w/copy"
	rm -rf "$w/copy"
	sync
	peakrss "$w/merge" lora-merge -q -m "$model" "$w/a.lora" -o "$w/merged"
	rm -rf "$w/merged"
	sync
	peakrss "$w/gguf" lora-merge -q -m "$model" "$w/a.lora" -o "$w/merged.gguf"
	rm -f "$w/merged.gguf"
	sync
	peakrss "$w/q8" lora-merge -q -m "$model" "$w/a.lora" --dtype q8_0 -o "$w/merged.gguf"
	rm -f "$w/merged.gguf"
	# largest tensor: the embedding or the head, 32000 x hidden, in f32
	largest=$(lora-inspect --json --per-layer "$model" | jq '[.layers[] | .shape | reduce .[] as $d (1; . * $d)] | max * 4')
	adapter=$(lora-inspect --json "$w/a.lora" | jq '.raw_bytes')
	bound=$(( 4 * largest + adapter ))
	cp_s=$(val wall_s "$w/cp") m_s=$(val wall_s "$w/merge")
	rss=$(( $(val peak_rss_kib "$w/merge") * 1024 ))
	printf 'checkpoint %.2f GB; cp -r %.2f s; lora-merge %.2f s: %.2fx the copy (target <= %s)\n' \
		"$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" "$cp_s" "$m_s" \
		"$(awk -v a="$m_s" -v b="$cp_s" 'BEGIN { print a / b }')" "$3"
	printf 'peak RSS %.0f MiB; bound 4 x largest tensor in f32 + adapter = %.0f MiB: %.2f of the bound (target <= 1)\n' \
		"$(awk -v r="$rss" 'BEGIN { print r / 1048576 }')" "$(awk -v r="$bound" 'BEGIN { print r / 1048576 }')" \
		"$(awk -v a="$rss" -v b="$bound" 'BEGIN { print a / b }')"
	local t
	for t in gguf q8; do
		g_s=$(val wall_s "$w/$t")
		printf 'to GGUF (%s) %.2f s: %.2fx the copy, %.2fx the merge to safetensors (target <= 1.3); peak RSS %.0f MiB, %.2f of the bound\n' \
			"$([ $t = q8 ] && echo q8_0 || echo bf16)" "$g_s" "$(awk -v a="$g_s" -v b="$cp_s" 'BEGIN { print a / b }')" \
			"$(awk -v a="$g_s" -v b="$m_s" 'BEGIN { print a / b }')" \
			"$(awk -v r="$(val peak_rss_kib "$w/$t")" 'BEGIN { print r / 1024 }')" \
			"$(awk -v r="$(val peak_rss_kib "$w/$t")" -v b="$bound" 'BEGIN { print r * 1024 / b }')"
	done
}

# hidden 2048, intermediate 5632, 9 blocks, vocab 32000 (TinyLlama's widths)
mkmodel --hidden 2048 --inter 5632 --layers 9 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 \
	--shard-bytes 300000000 "$w/base" >/dev/null
merge_case "a 1.1 GB bf16 checkpoint in shards of 300 MB" "$w/base" 1.5x
rm -rf "$w/base"

if [ "${LORA_BENCH_BIG:-0}" = 1 ]; then
	big=${LORA_BENCH_BIG_MODEL:-$w/big}
	[ -n "${LORA_BENCH_BIG_MODEL:-}" ] ||
		mkmodel --hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --dtype bf16 \
			--shard-bytes 5000000000 "$big" >/dev/null
	merge_case "Llama-2-7B shapes, 13.5 GB of bf16 in shards of 5 GB" "$big" 1.3x
fi
