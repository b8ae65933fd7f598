#!/usr/bin/env bats
# lora-eval: every promise of lora-eval(1). Exact numbers come from an
# independent computation: PyTorch fixtures (tests/ref/llama_ref.py) and
# evaluations of merged checkpoints.

setup() {
	load test_helper/common-setup
	_common_setup
	M="--hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256"
	mkmodel $M model >/dev/null
	mktokens 4097 > data.u16
	mkadapter model.layers.0.self_attn.q_proj=64x64x2:0.5,-0.25 \
		model.layers.1.mlp.down_proj=64x128x1:0.8 model.layers.1.self_attn.v_proj=32x64x3:0.9,0.6,0.3 > a.lora
	mkadapter --alpha 4 model.layers.0.mlp.up_proj=128x64x1:1.5 model.layers.0.self_attn.q_proj=64x64x1:0.7 > b.lora
}

# json FILE-OR-OUTPUT KEY
jget() { jq -r "$2" <<<"$1"; }

# relerr A B: |A - B| / |B|
relerr() { jq -n --argjson a "$1" --argjson b "$2" '(($a - $b) | fabs) / ($b | fabs)'; }

# close A B TOL: A within relative TOL of B
close() {
	local r
	r=$(relerr "$1" "$2")
	jq -e -n --argjson r "$r" --argjson t "$3" '$r < $t' >/dev/null || fail "$1 vs $2: relative error $r >= $3"
}

@test "lora-eval -h prints usage on stdout and exits 0" {
	run -0 --separate-stderr lora-eval -h
	assert_line --index 0 'Usage: lora-eval -m MODEL [ADAPTER[:SCALE]...] -d DATA [options]'
	assert_output --partial '--no-shuffle'
	assert_equal "$stderr" ''
}

@test "lora-eval --version" {
	run -0 lora-eval --version
	assert_output 'lora-eval 0.1.0'
}

@test "usage errors: unknown option, no model, no data, bad values; exit 2" {
	run -2 --separate-stderr lora-eval --bogus
	assert_output ''
	assert_equal "${stderr_lines[0]}" "lora-eval: unknown option '--bogus'"
	run -2 --separate-stderr lora-eval -d data.u16
	assert_equal "${stderr_lines[0]}" "lora-eval: need -m MODEL"
	run -2 --separate-stderr lora-eval -m model
	assert_equal "${stderr_lines[0]}" "lora-eval: need -d DATA"
	run -2 --separate-stderr lora-eval -m model -d data.u16 --data-format u8
	assert_equal "${stderr_lines[0]}" "lora-eval: --data-format: 'u8' is not auto, u16, u32, llmc, tok or bytes"
	run -2 --separate-stderr lora-eval -m model -d data.u16 -b 0
	assert_equal "${stderr_lines[0]}" "lora-eval: --batch: '0' is not an integer in [1, 1048576]"
	cp data.u16 data.dat
	run -2 --separate-stderr lora-eval -m model -d data.dat
	assert_equal "$stderr" "lora-eval: data.dat: cannot tell the token format from the name (.bin, .u16, .u32, .tok) or a header: give --data-format"
}

@test "missing model, data or adapter: one line naming it, exit 1" {
	run -1 --separate-stderr lora-eval -m nope -d data.u16
	assert_output ''
	assert_equal "$stderr" "lora-eval: nope: No such file or directory"
	run -1 --separate-stderr lora-eval -m model -d nope.u16 -T 16
	assert_equal "$stderr" "lora-eval: nope.u16: No such file or directory"
	run -1 --separate-stderr lora-eval -m model nope.lora -d data.u16 -T 16
	assert_equal "$stderr" "lora-eval: nope.lora: No such file or directory"
}

@test "a loss mask and documents: the loss and token count over the labels only, as PyTorch computes them" {
	# tests/ref/masked_ref.py: a row per document (cut at T+1, padded), or
	# with --sample-packing rows of whole documents; masked prompts, the
	# first token of a document and padding have no label
	d=$FIX/masked
	run -0 lora-eval -m "$d" "$d/adapter" -d "$d/data.tok" -b 2 -T 6 --no-shuffle --compute f32 --json
	assert_equal "$(jget "$output" .tokens) $(jget "$output" .batches)" "$(jq .eval_count "$d/expect.json") 2"
	close "$(jget "$output" .loss)" "$(jq .eval_loss "$d/expect.json")" 1e-6
	run -0 lora-eval -m "$d" "$d/adapter" -d "$d/data.tok" -b 2 -T 6 --no-shuffle --compute f32 --json --sample-packing
	assert_equal "$(jget "$output" .tokens)" "$(jq .packed_count "$d/expect.json")"
	close "$(jget "$output" .loss)" "$(jq .packed_loss "$d/expect.json")" 1e-6
	run -0 lora-eval -m "$d" "$d/adapter" -d "$d/data.tok" -b 2 -T 6 --no-shuffle --compute f32
	assert_line "data         $d/data.tok (tok, 25 tokens, 5 documents)"
	assert_line "tokens       $(jq .eval_count "$d/expect.json")"
	# too few documents for a batch
	run -1 --separate-stderr lora-eval -m "$d" -d "$d/data.tok" -b 8 -T 6
	assert_equal "$stderr" "lora-eval: $d/data.tok: 5 documents make 5 rows of 7 tokens with loss, fewer than a batch of 8"
}

@test "the loss matches PyTorch's in f32 compute: base model and PEFT adapter, 1e-4" {
	for c in $(cat "$FIX/model/cases"); do
		d="$FIX/model/$c"
		B=$(jq .B "$d/expect.json") T=$(jq .T "$d/expect.json")
		run -0 lora-eval -m "$d" -d "$d/tokens.u16" -b "$B" -T "$T" --no-shuffle --compute f32 --json
		assert_equal "$(jget "$output" .tokens)" $((B * T))
		close "$(jget "$output" .loss)" "$(jq .loss_base "$d/expect.json")" 1e-4
		run -0 lora-eval -m "$d" "$d/adapter" -d "$d/tokens.u16" -b "$B" -T "$T" --no-shuffle --compute f32 --json
		close "$(jget "$output" .loss)" "$(jq .loss "$d/expect.json")" 1e-4
		close "$(jget "$output" .perplexity)" "$(jq '.loss | exp' "$d/expect.json")" 1e-4
	done
}

@test "the text report" {
	run -0 --separate-stderr lora-eval -m model a.lora:0.5 -d data.u16 -b 2 -T 64 --batches 3
	assert_line --index 0 'model        model (tiny-llama, 2 layers, vocab 256)'
	assert_line --index 1 'adapters     a.lora (scale 0.5)'
	assert_line --index 2 'data         data.u16 (u16, 4097 tokens)'
	assert_line --index 3 'batches      3 of 2 x 64, shuffled (seed 0)'
	assert_line --index 4 'tokens       384'
	assert_line --index 5 --regexp '^loss         [0-9]+\.[0-9]{6}$'
	assert_line --index 6 --regexp '^perplexity   [0-9]+\.[0-9]{4}$'
	assert_equal "$stderr" ''
}

@test "--json: every key, perplexity = exp(loss)" {
	run -0 lora-eval -m model a.lora b.lora:2 -d data.u16 -b 4 -T 32 --no-shuffle --json -j 1
	assert_equal "$(jq -c 'keys' <<<"$output")" \
		'["adapters","batch","batches","compute","data","data_documents","data_format","data_tokens","loss","model","model_name","perplexity","sample_packing","seed","seq","shuffle","threads","tokens"]'
	assert_equal "$(jq -c '[.adapters[] | [.path, .scale, .layers]]' <<<"$output")" '[["a.lora",1,3],["b.lora",2,2]]'
	assert_equal "$(jq -c '[.batch, .seq, .batches, .tokens, .data_tokens, .shuffle, .seed, .threads, .data_format]' <<<"$output")" \
		'[4,32,32,4096,4097,false,null,1,"u16"]'
	close "$(jget "$output" .perplexity)" "$(jget "$output" '.loss | exp')" 1e-12
}

@test "run-time adapters equal the merge arithmetic done independently (mini-merge), 1e-4" {
	mini-merge model merged a.lora
	mini-merge model merged2 a.lora:0.5 b.lora:-2
	for args in "a.lora|merged" "a.lora:0.5 b.lora:-2|merged2"; do
		ads=${args%|*} m=${args#*|}
		run -0 lora-eval -m model $ads -d data.u16 -b 4 -T 64 --json
		l1=$(jget "$output" .loss)
		run -0 lora-eval -m "$m" -d data.u16 -b 4 -T 64 --json
		l2=$(jget "$output" .loss)
		close "$l1" "$l2" 1e-4
		run -0 lora-eval -m model -d data.u16 -b 4 -T 64 --json
		[ "$(jget "$output" .loss)" != "$l1" ] || fail "the adapter changed nothing"
	done
}

@test "run-time adapters equal lora-eval of lora-merge's checkpoint, 1e-4 (no additional inference latency)" {
	command -v lora-merge >/dev/null || skip "lora-merge is not built"
	lora-merge -m model a.lora:0.5 b.lora:-2 -o merged -q
	run -0 lora-eval -m model a.lora:0.5 b.lora:-2 -d data.u16 -b 4 -T 64 --json
	l1=$(jget "$output" .loss)
	run -0 lora-eval -m merged -d data.u16 -b 4 -T 64 --json
	close "$l1" "$(jget "$output" .loss)" 1e-4
	# a PEFT adapter from the PyTorch fixture, on a bf16 checkpoint
	d="$FIX/model/mistral_window"
	mktokens --vocab 40 1025 > t.u16
	lora-merge -m "$d" "$d/adapter" -o mw -q
	run -0 lora-eval -m "$d" "$d/adapter" -d t.u16 -b 2 -T 32 --json
	l1=$(jget "$output" .loss)
	run -0 lora-eval -m mw -d t.u16 -b 2 -T 32 --json
	close "$l1" "$(jget "$output" .loss)" 1e-4
}

@test "scale 0 is the base model exactly; an adapter from standard input" {
	run -0 lora-eval -m model -d data.u16 -T 64 --json
	base=$(jget "$output" .loss)
	run -0 lora-eval -m model a.lora:0 -d data.u16 -T 64 --json
	assert_equal "$(jget "$output" .loss)" "$base"
	run -0 lora-eval -m model a.lora -d data.u16 -T 64 --json
	l1=$(jget "$output" .loss)
	run -0 lora-eval -m model - -d data.u16 -T 64 --json < a.lora
	assert_equal "$(jget "$output" .loss)" "$l1"
}

@test "the same tokens as u16, u32, llm.c (both magics) and bytes give the same loss" {
	for f in u16 u32 llmc llmc32 bytes; do
		mktokens --format $f 3000 > "t.$f"
	done
	mv t.llmc t.bin
	ref=$(lora-eval -m model -d t.u16 -b 2 -T 100 --json | jq .loss)
	for f in t.u32 t.bin "t.llmc32 --data-format llmc" "t.bytes --data-format bytes"; do
		run -0 lora-eval -m model -d $f -b 2 -T 100 --json
		assert_equal "$(jget "$output" .loss)" "$ref"
		assert_equal "$(jget "$output" .data_tokens)" 3000
	done
	assert_equal "$(lora-eval -m model -d t.bin -b 2 -T 100 --json | jq -r .data_format)" llmc
}

@test "--no-shuffle cuts batches as llm.c: batch k is tokens [k*B*T, k*B*T+B*T+1)" {
	# batches = floor((4097-1) / (4*64)) = 16
	run -0 lora-eval -m model -d data.u16 -b 4 -T 64 --no-shuffle --json
	assert_equal "$(jget "$output" .batches)" 16
	all=$(jget "$output" .loss)
	# the first batch alone is the first B*T+1 tokens
	head -c $(( (4 * 64 + 1) * 2 )) data.u16 > first.u16
	run -0 lora-eval -m model -d data.u16 -b 4 -T 64 --no-shuffle --batches 1 --json
	one=$(jget "$output" .loss)
	run -0 lora-eval -m model -d first.u16 -b 4 -T 64 --no-shuffle --json
	assert_equal "$(jget "$output" .loss)" "$one"
	assert_equal "$(jget "$output" .batches)" 1
	# batch 2 alone: the span starting at token 2*B*T
	tail -c +$(( 2 * 256 * 2 + 1 )) data.u16 | head -c $(( 257 * 2 )) > third.u16
	a=$(lora-eval -m model -d third.u16 -b 4 -T 64 --no-shuffle --json | jq .loss)
	b=$(lora-eval -m model -d data.u16 -b 4 -T 64 --no-shuffle --batches 3 --json | jq .loss)
	c=$(lora-eval -m model -d data.u16 -b 4 -T 64 --no-shuffle --batches 2 --json | jq .loss)
	close "$(jq -n "($b * 3 - $c * 2)")" "$a" 1e-9
	# shuffling visits the same rows (64 windows, a multiple of 4): same mean
	run -0 lora-eval -m model -d data.u16 -b 4 -T 64 --seed 9 --json
	assert_equal "$(jget "$output" .batches)" 16
	close "$(jget "$output" .loss)" "$all" 1e-9
	# and a different subset for --batches, reproducible by seed
	s1=$(lora-eval -m model -d data.u16 -b 4 -T 64 --seed 1 --batches 2 --json | jq .loss)
	s1b=$(lora-eval -m model -d data.u16 -b 4 -T 64 --seed 1 --batches 2 --json | jq .loss)
	s2=$(lora-eval -m model -d data.u16 -b 4 -T 64 --seed 2 --batches 2 --json | jq .loss)
	assert_equal "$s1" "$s1b"
	[ "$s1" != "$s2" ] || fail "seeds 1 and 2 gave the same batches"
}

@test "threads change nothing but speed" {
	a=$(lora-eval -m model a.lora -d data.u16 -b 4 -T 128 -j 1 --json | jq .loss)
	b=$(lora-eval -m model a.lora -d data.u16 -b 4 -T 128 -j 2 --json | jq .loss)
	close "$a" "$b" 1e-6
}

@test "a token id >= vocab_size is an error naming its position" {
	mktokens --set 1234=300 2000 > bad.u16
	run -1 --separate-stderr lora-eval -m model -d bad.u16 -T 16
	assert_output ''
	assert_equal "$stderr" "lora-eval: bad.u16: token 300 at position 1234 is >= vocab_size 256"
	mktokens --format bytes 100 > ok.bytes
	mkmodel $M --vocab 200 small >/dev/null
	run -1 --separate-stderr lora-eval -m small -d ok.bytes --data-format bytes -T 8
	assert_regex "$stderr" '^lora-eval: ok\.bytes: token 2[0-9][0-9] at position [0-9]+ is >= vocab_size 200$'
}

@test "data shorter than one batch: one error saying what a batch needs" {
	mktokens 100 > short.u16
	run -1 --separate-stderr lora-eval -m model -d short.u16 -b 4 -T 25
	assert_equal "$stderr" "lora-eval: short.u16: 100 tokens is fewer than one batch needs (batch 4 x sequence 25 + 1 = 101)"
	run -0 lora-eval -m model -d short.u16 -b 3 -T 33 --json
	assert_equal "$(jget "$output" .batches)" 1
}

@test "truncated files: data and adapter" {
	mktokens --format u32 100 > t.u32
	head -c 399 t.u32 > cut.u32
	run -1 --separate-stderr lora-eval -m model -d cut.u32 -T 8
	assert_equal "$stderr" "lora-eval: cut.u32: 399 bytes is not a whole number of 4-byte tokens"
	mktokens --format llmc 100 > t.bin
	head -c 1100 t.bin > cut.bin
	run -1 --separate-stderr lora-eval -m model -d cut.bin -T 8
	assert_equal "$stderr" "lora-eval: cut.bin: llm.c header says 100 tokens but the file holds 76 bytes of 2-byte tokens"
	head -c 300 a.lora > cut.lora
	run -1 --separate-stderr lora-eval -m model cut.lora -d data.u16 -T 8
	assert_regex "$stderr" '^lora-eval: cut\.lora: .*'
	assert_equal "${#stderr_lines[@]}" 1
}

@test "an adapter built for another model names the layer and both shapes" {
	mkmodel --hidden 64 --inter 128 --layers 4 --heads 4 --kv-heads 4 --vocab 256 other >/dev/null
	lora-init -m other -t k_proj -r 2 -o k.lora
	run -1 --separate-stderr lora-eval -m model k.lora -d data.u16 -T 8
	assert_output ''
	assert_equal "$stderr" "lora-eval: k.lora: layer 'model.layers.0.self_attn.k_proj': adapter shape 64x64 does not match the model's 32x64"
	lora-init -m other -t down_proj --layers 3 -r 2 -o d.lora
	run -1 --separate-stderr lora-eval -m model d.lora -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: d.lora: layer 'model.layers.3.mlp.down_proj' is not in the model (it has 2 blocks)"
	lora-init --shape lm_head=256x64 -r 2 -o h.lora
	run -1 --separate-stderr lora-eval -m model h.lora -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: h.lora: layer 'lm_head' is not a linear module of a decoder block (q/k/v/o_proj, gate/up/down_proj)"
}

@test "config.json: missing key, unsupported model_type, rope_scaling, hidden_act" {
	cp -r model m
	jq 'del(.num_hidden_layers)' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m/config.json: missing key 'num_hidden_layers'"
	jq '.model_type = "gpt2"' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m/config.json: model_type 'gpt2' is not supported (llama, mistral, qwen2)"
	jq '.rope_scaling = {"rope_type": "yarn", "factor": 4}' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m/config.json: rope_scaling type 'yarn' is not supported (linear, llama3)"
	jq '.hidden_act = "gelu"' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m/config.json: hidden_act 'gelu' is not supported (silu)"
	rm m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m: no config.json beside the weights"
}

@test "shapes inconsistent with config.json name the tensor and both shapes" {
	cp -r model m
	jq '.num_key_value_heads = 4' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m: tensor 'model.layers.0.self_attn.k_proj.weight' has shape 32x64 but config.json implies 64x64"
	jq '.vocab_size = 300' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m: tensor 'model.embed_tokens.weight' has shape 256x64 but config.json implies 300x64"
	jq '.num_hidden_layers = 3' model/config.json > m/config.json
	run -1 --separate-stderr lora-eval -m m -d data.u16 -T 8
	assert_equal "$stderr" "lora-eval: m: tensor 'model.layers.2.self_attn.q_proj.weight' is missing"
	jq '.tie_word_embeddings = true' model/config.json > m/config.json
	run -0 lora-eval -m m -d data.u16 -T 8 --batches 1
}

@test "f16, bf16 and sharded checkpoints evaluate like their f32 values" {
	mkmodel $M --dtype bf16 mb >/dev/null
	mkmodel $M --dtype bf16 --shard-bytes 40000 ms >/dev/null
	mini-merge mb mf32
	a=$(lora-eval -m mb -d data.u16 -T 64 --compute f32 --json | jq .loss)
	b=$(lora-eval -m ms -d data.u16 -T 64 --compute f32 --json | jq .loss)
	c=$(lora-eval -m mf32 -d data.u16 -T 64 --json | jq .loss)
	assert_equal "$a" "$b"
	assert_equal "$a" "$c"
}

# 1 when oneDNN multiplies bf16 here (AVX-512 and no cap below it)
has_bf16() { avx512 && [ "${DNNL_MAX_CPU_ISA:-ALL}" != AVX2 ]; }

@test "--compute: bf16 within 1e-2 of f32 and chosen by auto on a bf16 checkpoint where the CPU has bf16; refused without; bad value" {
	mkmodel $M --dtype bf16 mb >/dev/null
	f32=$(lora-eval -m mb a.lora -d data.u16 -T 64 --compute f32 --json)
	assert_equal "$(jget "$f32" .compute)" f32
	run -0 --separate-stderr lora-eval -m model a.lora -d data.u16 -T 64 --json
	assert_equal "$(jget "$output" .compute)" f32 # an f32 checkpoint stays f32
	if has_bf16; then
		bf=$(lora-eval -m mb a.lora -d data.u16 -T 64 --compute bf16 --json)
		auto=$(lora-eval -m mb a.lora -d data.u16 -T 64 --json)
		assert_equal "$(jget "$bf" .compute)" bf16
		assert_equal "$(jget "$auto" .loss)" "$(jget "$bf" .loss)"
		close "$(jget "$bf" .loss)" "$(jget "$f32" .loss)" 1e-2
		[ "$(jget "$bf" .loss)" != "$(jget "$f32" .loss)" ] || fail "bf16 gave the f32 loss to the last digit"
	fi
	run -1 --separate-stderr env DNNL_MAX_CPU_ISA=AVX2 lora-eval -m mb -d data.u16 -T 64 --compute bf16
	assert_equal "$stderr" "lora-eval: bf16 compute needs a CPU with AVX-512 (oneDNN multiplies bf16 from avx512_core up; this one runs avx2): use --compute f32"
	run -0 --separate-stderr env DNNL_MAX_CPU_ISA=AVX2 lora-eval -m mb a.lora -d data.u16 -T 64 --json
	assert_equal "$(jget "$output" .compute)" f32
	close "$(jget "$output" .loss)" "$(jget "$f32" .loss)" 1e-6
	run -2 --separate-stderr lora-eval -m mb -d data.u16 --compute f16
	assert_equal "${stderr_lines[0]}" "lora-eval: --compute: 'f16' is not auto, f32 or bf16"
}

@test "a plan larger than the memory available is refused before any work, with the numbers" {
	run -1 --separate-stderr lora-eval -m model -d data.u16 -b 512 -T 262144
	assert_regex "$stderr" '^lora-eval: batch 512 x sequence 262144 needs [0-9.]+ GiB of activations, more than the [0-9.]+ GiB available$'
}
