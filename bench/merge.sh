#!/bin/bash
# lora-merge: a rank-16 adapter on every linear layer merged into a
# generated Llama-shaped bf16 checkpoint of over 1 GB in shards, against
# `cp -r` of the same checkpoint in the same run; peak RSS against the
# bound of 4x the largest tensor in f32 plus the adapter.
. "$(dirname "$0")/common.bash"

echo "== lora-merge: rank 16, all-linear, into a 1.1 GB bf16 checkpoint in shards of 300 MB"
# hidden 2048, intermediate 5632, 9 blocks, vocab 32000 (TinyLlama's widths)
mkmodel --hidden 2048 --inter 5632 --layers 9 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 \
	--shard-bytes 300000000 "$w/base" >/dev/null
lora-init -m "$w/base" -t all-linear -r 16 -q -o "$w/a.lora"
# B is zero after lora-init: re-rank a dense adapter in instead, so the merge does real work
specs=$(lora-inspect --json "$w/a.lora" | jq -r '.layers[] | "\(.name)=\(.out)x\(.in)x16"')
mkadapter --gaussian 1 $specs > "$w/a.lora"
bytes=$(du -sb "$w/base" | cut -f1)
sync
peakrss "$w/cp" cp -r "$w/base" "$w/copy"
rm -rf "$w/copy"
sync
peakrss "$w/merge" lora-merge -q -m "$w/base" "$w/a.lora" -o "$w/merged"
# largest tensor: the embedding or the head, 32000 x 2048, in f32
largest=$(lora-inspect --json --layers "$w/base" | jq '[.layers[] | .shape | reduce .[] as $d (1; . * $d)] | max * 4')
adapter=$(lora-inspect --json "$w/a.lora" | jq '.raw_bytes')
bound=$(( 4 * largest + adapter ))
cp_s=$(val wall_s "$w/cp") m_s=$(val wall_s "$w/merge")
rss=$(( $(val peak_rss_kib "$w/merge") * 1024 ))
printf 'checkpoint %.2f GB; cp -r %.2f s; lora-merge %.2f s: %.2fx the copy (target <= 1.5x)\n' \
	"$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" "$cp_s" "$m_s" "$(awk -v a="$m_s" -v b="$cp_s" 'BEGIN { print a / b }')"
printf 'peak RSS %.0f MiB; bound 4 x largest tensor in f32 + adapter = %.0f MiB: %.2f of the bound (target <= 1)\n' \
	"$(awk -v r="$rss" 'BEGIN { print r / 1048576 }')" "$(awk -v r="$bound" 'BEGIN { print r / 1048576 }')" \
	"$(awk -v a="$rss" -v b="$bound" 'BEGIN { print a / b }')"
