#!/bin/bash
# .lora format: header-only inspection of a large adapter, and the size of
# .lora against the same tensors as raw safetensors (f32 and bf16).
. "$(dirname "$0")/common.bash"
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

echo "== .lora: inspecting a 1 GiB adapter"
# 32 layers of 4096x4096 at rank 1024: 268M parameters, 1 GiB of f32
shapes=()
for i in $(seq 0 31); do shapes+=(--shape "model.layers.$i.self_attn.q_proj=4096x4096"); done
t0=$(now); lora-init "${shapes[@]}" -r 1024 -q -o "$w/big.lora"; t1=$(now)
echo "lora-init (write 1 GiB f32, compressed): $(ms "$t0" "$t1") ms, $(stat -c %s "$w/big.lora") bytes"
t0=$(now); lora-inspect "$w/big.lora" >/dev/null; t1=$(now)
head=$(ms "$t0" "$t1")
t0=$(now); lora-inspect --check "$w/big.lora" >/dev/null; t1=$(now)
full=$(ms "$t0" "$t1")
echo "lora-inspect (header only): $head ms; lora-inspect --check (every payload): $full ms; ratio $(awk -v a="$full" -v b="$head" 'BEGIN { printf "%.0fx", a / b }')"
rm -f "$w/big.lora"

echo "== .lora: size against raw safetensors (dense factors, 32 layers 4096x4096, rank 16)"
for t in f32 bf16; do
	specs=()
	for i in $(seq 0 31); do specs+=("model.layers.$i.self_attn.q_proj=4096x4096x16"); done
	mkadapter --gaussian 1 --dtype $t "${specs[@]}" > "$w/d.lora"
	raw=$(lora-inspect --json "$w/d.lora" | jq .raw_bytes)
	# a safetensors file of the same tensors: the raw bytes plus its JSON header
	st=$((raw + 8 + 64 * 2 * 32 * 2))
	if command -v lora-convert >/dev/null; then
		lora-convert "$w/d.lora" -o "$w/peft" --to peft
		st=$(stat -c %s "$w/peft/adapter_model.safetensors")
		rm -rf "$w/peft"
	fi
	size=$(stat -c %s "$w/d.lora")
	echo "$t: .lora $size bytes, safetensors $st bytes: .lora is $(awk -v a="$size" -v b="$st" 'BEGIN { printf "%.3f", a / b }') of safetensors"
done
