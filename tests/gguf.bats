#!/usr/bin/env bats
# GGUF adapters (lora-convert --to gguf, and back; lora-inspect), checked
# against what llama.cpp said of the same files: tests/ref/gguf_check.sh ran
# llama.cpp (node-llama-cpp 3.21.1) on the models and adapters of
# tests/ref/gguf_cases.bash and kept, in tests/fixtures/gguf/, the adapters
# it loaded and its next-token log-probabilities over the whole vocabulary
# at every position of tokens.u16. Offline: nothing here runs llama.cpp.

setup() {
	load test_helper/common-setup
	_common_setup
	G="$FIX/gguf"
	source "$ROOT/tests/ref/gguf_cases.bash"
}

Q=model.layers.0.self_attn.q_proj

# maxdiff A B: the largest absolute difference between two files of numbers
# laid out alike.
maxdiff() {
	paste -d ' ' "$1" "$2" | awk '{ n = NF / 2; for (i = 1; i <= n; i++) { d = $i - $(i + n); if (d < 0) d = -d; if (d > m) m = d } }
		END { printf "%.3g\n", m }'
}

# below X LIMIT: X < LIMIT, as numbers.
below() {
	awk -v x="$1" -v l="$2" 'BEGIN { exit !(x < l) }'
}

@test "lora-convert -h documents GGUF; --to gguf is accepted" {
	run -0 --separate-stderr lora-convert -h
	assert_output --partial '--to FORMAT'
	assert_output --partial 'lora, peft or gguf'
	assert_output --partial '-m, --model MODEL'
}

@test "our GGUF adapters are byte for byte the ones llama.cpp loaded" {
	gguf_models
	gguf_adapters
	for f in plain rslora pattern qplain; do
		cmp "$f.gguf" "$G/$f.gguf"
	done
}

@test "with and without adapters, next-token log-probabilities agree with llama.cpp's within 1e-4" {
	gguf_models
	cp "$G"/*.gguf .
	for c in "${GGUF_CASES[@]}"; do
		set -- $c
		ARGMAX_LOGPROBS=1 argmax-full "$2" "$G/tokens.u16" 1 ${3:-} >"$1.ours"
		d=$(maxdiff "$1.ours" "$G/$1.llamacpp")
		below "$d" 1e-4 || fail "$1: log-probabilities differ from llama.cpp's by $d"
	done
	# the adapters matter: each case differs from its base model
	d=$(maxdiff "$G/llama-base.llamacpp" "$G/llama-pattern.llamacpp")
	below 0.5 "$d"
	d=$(maxdiff "$G/qwen2-base.llamacpp" "$G/qwen2-plain.llamacpp")
	below 0.5 "$d"
}

@test "lora-eval's loss on the tokens is llama.cpp's mean -log p of each next token" {
	gguf_models
	cp "$G"/*.gguf .
	n=$(($(stat -c %s "$G/tokens.u16") / 2))
	toks=$(od -An -tu2 -v "$G/tokens.u16" | tr -s ' ' '\n' | grep -v '^$' | tr '\n' ' ')
	for c in "llama-rslora llama rslora.gguf" "llama-pattern llama pattern.gguf" "qwen2-plain qwen2 qplain.gguf"; do
		set -- $c
		ours=$(lora-eval -q -m "$2" "$3" -d "$G/tokens.u16" -b 1 -T $((n - 1)) --no-shuffle --json | jq .loss)
		ref=$(awk -v toks="$toks" 'BEGIN { split(toks, t, " ") } NR < '"$n"' { s -= $(t[NR + 1] + 1) } END { printf "%.9g", s / (NR - 1) }' "$G/$1.llamacpp")
		d=$(awk -v a="$ours" -v b="$ref" 'BEGIN { d = a - b; printf "%.3g", d < 0 ? -d : d }')
		below "$d" 1e-4 || fail "$1: lora-eval $ours, llama.cpp $ref"
	done
}

@test ".lora -> GGUF -> .lora keeps the factors byte for byte, q/k rows put back" {
	gguf_models
	gguf_adapters
	for a in plain rslora; do
		lora-convert -q "$a" -o "$a.lora"
		lora-convert -q "$a.lora" -m llama -o "$a.x.gguf"
		lora-convert -q "$a.x.gguf" -o "$a.back.lora"
		lora-convert -q --to peft "$a.lora" -o "$a.p1"
		lora-convert -q --to peft "$a.back.lora" -o "$a.p2"
		cmp "$a.p1/adapter_model.safetensors" "$a.p2/adapter_model.safetensors"
		cmp "$a.p1/adapter_config.json" "$a.p2/adapter_config.json"
	done
	# per-module alpha folded into lora_B (stored in f32): exact back to f16 and bf16
	for t in f16 bf16; do
		lora-convert -q --dtype $t pattern -o p.$t.lora
		lora-convert -q -m llama p.$t.lora -o p.$t.gguf
		lora-convert -q p.$t.gguf -o p.$t.back.lora
		lora-convert -q --to peft p.$t.lora -o p1.$t
		lora-convert -q --to peft p.$t.back.lora -o p2.$t
		cmp p1.$t/adapter_model.safetensors p2.$t/adapter_model.safetensors
		cmp p1.$t/adapter_config.json p2.$t/adapter_config.json
	done
	# straight to PEFT, and every adapter reader takes the .gguf
	lora-convert -q --to peft "$G/pattern.gguf" -o pp
	jq -c '[.r, .lora_alpha, .rank_pattern, .alpha_pattern]' pp/adapter_config.json >cfg
	assert_equal "$(cat cfg)" '[4,8,{"q_proj":2},{"k_proj":2,"down_proj":12}]'
	run -0 lora-diff pattern "$G/pattern.gguf"
}

@test "lora-inspect reads GGUF adapters: ranks, alphas, targets, bytes" {
	run -0 lora-inspect "$G/pattern.gguf"
	assert_line --index 0 'format       GGUF LoRA adapter (llama.cpp)'
	assert_line --index 1 'layers       14'
	assert_output --partial 'targets      q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj'
	assert_output --partial "bytes        18304 (17.9 KiB) on disk"
	run -0 lora-inspect --json "$G/pattern.gguf"
	assert_equal "$(jq -c '[.kind, .dtype, .scaling, .file_bytes, .num_layers]' <<<"$output")" '["gguf","f32","standard",18304,14]'
	assert_equal "$(jq -c '[.layers[] | select(.name | test("layers.0")) | [.rank, .alpha]]' <<<"$output")" \
		'[[4,12],[4,8],[4,8],[4,2],[4,8],[2,8],[4,8]]'
	run -0 lora-inspect --json "$G/rslora.gguf"
	assert_equal "$(jq -c '[.scaling, .alphas]' <<<"$output")" '["rslora",[{"alpha":8,"layers":14}]]'
	run -0 lora-inspect --stats "$G/plain.gguf"
	assert_output --partial 'model.layers.1.self_attn.v_proj'
}

@test "the base model comes from -m, else from the one the adapter records (a directory or the hub cache)" {
	gguf_models
	mkpeft --alpha 8 --seed 11 --base "$PWD/llama" rec $(gguf_specs 4) >/dev/null
	lora-convert -q rec -o rec.gguf
	lora-convert -q -m llama rec -o m.gguf
	cmp rec.gguf m.gguf
	mkdir -p hub/models--org--tiny/refs hub/models--org--tiny/snapshots/0123abc
	printf '0123abc\n' >hub/models--org--tiny/refs/main
	cp llama/config.json hub/models--org--tiny/snapshots/0123abc/
	mkpeft --alpha 8 --seed 11 --base org/tiny hubbed $(gguf_specs 4) >/dev/null
	HF_HUB_CACHE=$PWD/hub lora-convert -q hubbed -o hub.gguf
	run -0 lora-inspect --json hub.gguf
	assert_equal "$(jq -r .base_model.name <<<"$output")" org/tiny
	run -2 --separate-stderr lora-convert hubbed -o x.gguf
	assert_equal "$stderr" "lora-convert: hubbed: base model 'org/tiny' not found (no config.json there or in the Hugging Face cache): give -m MODEL"
	mkpeft nobase $Q=32x32x2 >/dev/null
	run -2 --separate-stderr lora-convert nobase -o x.gguf
	assert_equal "$stderr" "lora-convert: nobase: the adapter records no base model: give -m MODEL (its config.json has the architecture and head counts)"
	run -2 --separate-stderr lora-convert -m nowhere nobase -o x.gguf
	assert_equal "$stderr" "lora-convert: -m nowhere: no config.json there"
	assert_not_exist x.gguf
}

@test "-o x.gguf implies --to gguf; --to gguf writes standard output, never a terminal" {
	gguf_models
	mkpeft --alpha 8 --seed 11 plain $(gguf_specs 4) >/dev/null
	lora-convert -q -m llama --to gguf plain >out.gguf
	cmp out.gguf "$G/plain.gguf"
	run -1 --separate-stderr lora-convert -m llama plain -o out.gguf
	assert_regex "$stderr" '^lora-convert: out\.gguf: .*exists'
	lora-convert -q -f -m llama --dtype bf16 plain -o out.gguf
	run -0 lora-inspect --json out.gguf
	assert_equal "$(jq -r .dtype <<<"$output")" bf16
}

@test "what a GGUF adapter cannot say is an error naming the layer, and nothing is written" {
	gguf_models
	mkpeft --dora d $Q=32x32x2 >/dev/null
	run -1 --separate-stderr lora-convert -m llama d -o out.gguf
	assert_equal "$stderr" "lora-convert: d: layer '$Q': DoRA magnitude vectors have no place in a GGUF LoRA adapter"
	mkpeft --lora-bias b $Q=32x32x2 >/dev/null
	run -1 --separate-stderr lora-convert -m llama b -o out.gguf
	assert_equal "$stderr" "lora-convert: b: layer '$Q': a lora_B bias has no place in a GGUF LoRA adapter"
	mkpeft --embedding model.embed_tokens=256x32x2 e $Q=32x32x2 >/dev/null
	run -1 --separate-stderr lora-convert -m llama e -o out.gguf
	assert_equal "$stderr" "lora-convert: e: tensor 'base_model.model.model.embed_tokens.lora_embedding_A' is not the LoRA factor of a linear module and has no place in a GGUF adapter"
	mkpeft h lm_head=256x32x2 >/dev/null
	run -1 --separate-stderr lora-convert -m llama h -o out.gguf
	assert_equal "$stderr" "lora-convert: h: layer 'lm_head': llama.cpp adapts only the q/k/v/o_proj and gate/up/down_proj modules of model.layers.N"
	mkpeft --fan-in-fan-out f $Q=32x32x2 >/dev/null
	run -1 --separate-stderr lora-convert -m llama f -o out.gguf
	assert_equal "$stderr" "lora-convert: f: a fan_in_fan_out adapter (weights stored [in, out]) has no GGUF form"
	mkpeft odd $Q=30x32x2 >/dev/null
	run -1 --separate-stderr lora-convert -m llama odd -o out.gguf
	assert_equal "$stderr" "lora-convert: odd: $Q: 30 rows do not split into 4 heads of even size"
	assert_not_exist out.gguf
}

@test "a corrupt or foreign GGUF is one line naming the file and what is wrong" {
	head -c 1000 "$G/plain.gguf" >cut.gguf
	run -1 --separate-stderr lora-inspect cut.gguf
	assert_equal "$stderr" "lora-inspect: cut.gguf: key 'lora.targets': string length 9 runs past the end of the file (1000 bytes)"
	head -c 1200 "$G/plain.gguf" >cut1.gguf
	run -1 --separate-stderr lora-inspect cut1.gguf
	assert_equal "$stderr" "lora-inspect: cut1.gguf: truncated in tensor 'blk.0.ffn_gate.weight.lora_a' (the file is 1200 bytes)"
	head -c 19000 "$G/plain.gguf" >cut2.gguf
	run -1 --separate-stderr lora-convert cut2.gguf -o x.lora
	assert_equal "$stderr" "lora-convert: cut2.gguf: tensor 'blk.1.attn_v.weight.lora_a': truncated: its 512 bytes at byte 18528 run past the end of the file (19000 bytes)"
	cp "$ROOT/tests/fuzz/corpus/gguf/values.gguf" v.gguf
	run -1 --separate-stderr lora-eval -m "$FIX/model/llama_gqa" v.gguf -d "$FIX/model/llama_gqa/tokens.u16"
	assert_equal "$stderr" "lora-eval: v.gguf: no general.type: not a LoRA adapter"
	run -1 --separate-stderr lora-convert missing.gguf -o x.lora
	assert_equal "$stderr" "lora-convert: missing.gguf: No such file or directory"
	printf 'GGUF\003\000\000\000' >short.gguf
	run -1 --separate-stderr lora-inspect short.gguf
	assert_equal "$stderr" "lora-inspect: short.gguf: truncated: 8 bytes, shorter than the 24-byte GGUF header"
	assert_not_exist x.lora
}

@test "a GGUF adapter is applied as the PEFT adapter it came from, by every tool" {
	gguf_models
	gguf_adapters
	for a in plain rslora pattern; do
		x=$(lora-eval -q -m llama "$a" -d "$G/tokens.u16" -b 1 -T 9 --no-shuffle --json | jq .loss)
		y=$(lora-eval -q -m llama "$a.gguf" -d "$G/tokens.u16" -b 1 -T 9 --no-shuffle --json | jq .loss)
		# the same factors, but for lora_B of the layers with their own
		# alpha: f32 folded and unfolded, within one rounding
		[ "$a" = pattern ] || assert_equal "$x" "$y"
		below "$(awk -v a="$x" -v b="$y" 'BEGIN { d = a - b; print d < 0 ? -d : d }')" 1e-6
	done
	lora-merge -q -m llama rslora.gguf -o merged1
	lora-merge -q -m llama rslora -o merged2
	cmp merged1/model.safetensors merged2/model.safetensors
}
