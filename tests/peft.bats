#!/usr/bin/env bats
# PEFT adapter directories as input: what is read, how ranks, alphas and
# scales are resolved, and every way a PEFT adapter can be refused.

setup() {
	load test_helper/common-setup
	_common_setup
}

Q=model.layers.0.self_attn.q_proj
V=model.layers.0.self_attn.v_proj
W=base_model.model.w

@test "lora-inspect shows a PEFT directory like a .lora" {
	mkpeft --base tiny-llama --alpha 16 p $Q=64x64x8 $V=32x64x8
	run -0 --separate-stderr lora-inspect p
	assert_line --index 0 'format       PEFT (adapter_config.json + adapter_model.safetensors)'
	assert_line 'layers       2'
	assert_line 'rank         8'
	assert_line 'alpha        16'
	assert_line 'scaling      standard (alpha/r)'
	assert_line 'scale        2'
	assert_line 'targets      q_proj,v_proj'
	assert_line 'dtype        f32'
	# q: 8*(64+64), v: 8*(64+32) parameters, 4 bytes each
	assert_line 'parameters   1792'
	size=$(($(stat -c %s p/adapter_config.json) + $(stat -c %s p/adapter_model.safetensors)))
	assert_line "bytes        $size ($(awk -v s=$size 'BEGIN { printf "%.1f", s / 1024 }') KiB) on disk, 7168 (7.0 KiB) uncompressed, ratio $(awk -v s=$size 'BEGIN { printf "%.3f", 7168 / s }')"
	assert_line 'base model   tiny-llama'
	assert_line 'provenance   -'
	refute_line --partial 'dora'
	refute_line --partial 'extra'
	assert_equal "$stderr" ''
	run -0 lora-inspect --json p
	assert_equal "$(jq -c '[.kind, .version, .dtype, .num_layers, .parameters, .file_bytes, .fan_in_fan_out, .dora_layers, .bias_layers, .extras, .peft_config.lora_alpha]' <<<"$output")" \
		"[\"peft\",null,\"f32\",2,1792,$size,false,0,0,[],16]"
	assert_equal "$(jq -c '[.layers[] | [.name, .out, .in, .rank, .alpha, .scale, .dora, .bias]]' <<<"$output")" \
		"[[\"$Q\",64,64,8,16,2,false,false],[\"$V\",32,64,8,16,2,false,false]]"
}

@test "the bare adapter_model.safetensors with its config beside it" {
	mkpeft p $Q=64x64x8 $V=32x64x8
	a=$(lora-inspect --json p | jq -c 'del(.file)')
	b=$(lora-inspect --json p/adapter_model.safetensors | jq -c 'del(.file)')
	assert_equal "$b" "$a"
	run -0 lora-inspect --layers p/adapter_model.safetensors
	assert_line --regexp "^model\.layers\.0\.self_attn\.v_proj +32x64 +8 +8 +1$"
	# without the config it is just a safetensors file
	rm p/adapter_config.json
	run -0 lora-inspect p/adapter_model.safetensors
	assert_line 'format       safetensors, 1 shard'
}

@test "rank_pattern and alpha_pattern match (.*\\.)?(KEY)\$, first key in file order wins" {
	# layer 1's q_proj: first alpha key matches; layer 0's only the second;
	# xq_proj ends in q_proj but not at a dot, so it keeps lora_alpha.
	mkpeft --r 2 --alpha 4 --rank-pattern 'layers\.1\..*=3' --rank-pattern q_proj=1 \
		--alpha-pattern 'layers.1.self_attn.q_proj=12' --alpha-pattern q_proj=6 p \
		model.layers.0.self_attn.q_proj=8x8x1:5 model.layers.1.self_attn.q_proj=8x8x3:5,4,2 \
		model.layers.0.self_attn.xq_proj=8x8x2:1,1 model.layers.1.mlp.up_proj=8x8x3:1,1,1
	run -0 lora-inspect --json --stats p
	# scales alpha/r: 6/1, 4/2, 4/3, 12/3; singular values s_k times the scale
	assert_equal "$(jq -c '[.layers[] | [.name, .rank, .alpha, (.scale * 1e6 | round / 1e6)]]' <<<"$output")" \
		'[["model.layers.0.self_attn.q_proj",1,6,6],["model.layers.0.self_attn.xq_proj",2,4,2],["model.layers.1.mlp.up_proj",3,4,1.333333],["model.layers.1.self_attn.q_proj",3,12,4]]'
	assert_equal "$(jq -c '[.layers[] | .singular_values | map(. * 1e6 | round / 1e6)]' <<<"$output")" \
		'[[30],[2,2],[1.333333,1.333333,1.333333],[20,16,8]]'
}

@test "a pattern key equal to a module name applies even where it does not match as a regex" {
	# (.*\.)?(w+1)$ matches neither name, but PEFT then looks the name
	# itself up: rank_pattern.get("w+1"); a.w+1 keeps r
	mkpeft --r 2 --rank-pattern 'w+1=4' --alpha-pattern 'w+1=12' p 'w+1=16x16x4' 'a.w+1=16x16x2'
	run -0 lora-inspect --json p
	assert_equal "$(jq -c '[.layers[] | [.name, .rank, .alpha]]' <<<"$output")" '[["a.w+1",2,8],["w+1",4,12]]'
}

@test "use_rslora scales by alpha/sqrt(r)" {
	mkpeft --rslora --alpha 8 --rank-pattern v=16 p w=16x16x4:1,1,1,1 v=16x16x16
	run -0 lora-inspect --json p
	assert_equal "$(jq -c '[.scaling, [.layers[].scale]]' <<<"$output")" '["rslora",[2,4]]'
	run -0 lora-inspect p
	assert_line 'scaling      rslora (alpha/sqrt(r))'
}

@test "DoRA magnitudes, lora_B biases and fan_in_fan_out are read and shown" {
	mkpeft --dora --lora-bias --fan-in-fan-out p transformer.h.0.attn.c_attn=96x32x4 transformer.h.0.mlp.c_fc=64x32x4
	run -0 lora-inspect p
	assert_line 'dora         2 layers with a magnitude vector'
	assert_line 'lora bias    2 layers with a lora_B bias'
	assert_line 'layout       fan_in_fan_out: base weights stored [in, out]'
	run -0 lora-inspect --json p
	assert_equal "$(jq -c '[.fan_in_fan_out, .dora_layers, .bias_layers, [.layers[] | .dora, .bias]]' <<<"$output")" \
		'[true,2,2,[true,true,true,true]]'
}

@test "tensors that are not linear LoRA factors are listed by name" {
	mkpeft --embedding model.embed_tokens=256x64x4 --extra base_model.model.lm_head.modules_to_save.weight=BF16:256x64 \
		--extra other.tensor=I64:3 p $Q=64x64x8
	run -0 lora-inspect p
	assert_line 'extra        base_model.model.lm_head.modules_to_save.weight bf16 256x64'
	assert_line 'extra        base_model.model.model.embed_tokens.lora_embedding_A f32 4x256'
	assert_line 'extra        base_model.model.model.embed_tokens.lora_embedding_B f32 64x4'
	assert_line 'extra        other.tensor i64 3'
	assert_line 'layers       1'
	run -0 lora-inspect --json p
	assert_equal "$(jq -c '[.extras[] | [.name, .dtype, .shape]]' <<<"$output")" \
		'[["base_model.model.lm_head.modules_to_save.weight","bf16",[256,64]],["base_model.model.model.embed_tokens.lora_embedding_A","f32",[4,256]],["base_model.model.model.embed_tokens.lora_embedding_B","f32",[64,4]],["other.tensor","i64",[3]]]'
}

@test "the storage dtype is the tensors'; mixed dtypes are held as f32" {
	mkpeft --dtype bf16 p w=16x16x4
	assert_equal "$(lora-inspect --json p | jq -r .dtype)" bf16
	mkpeft --dtype bf16 --dtype-b F16 m w=16x16x4
	assert_equal "$(lora-inspect --json m | jq -r .dtype)" f32
}

@test "tensor order in the file does not matter" {
	mkpeft --dora p $Q=64x64x8 $V=32x64x8
	mkpeft --dora --reverse r $Q=64x64x8 $V=32x64x8
	assert_equal "$(lora-inspect --json --stats r | jq -c 'del(.file, .file_bytes, .compression_ratio)')" \
		"$(lora-inspect --json --stats p | jq -c 'del(.file, .file_bytes, .compression_ratio)')"
}

# One refused input: stderr is exactly the line, stdout empty, exit 1.
refused() {
	run -1 --separate-stderr lora-inspect p
	assert_output ''
	assert_equal "$stderr" "lora-inspect: $1"
}

@test "config: malformed JSON, not an object, no peft_type, another peft_type" {
	mkpeft p w=16x16x4
	printf '{"peft_type": "LORA",' >p/adapter_config.json
	refused 'p/adapter_config.json: file is not valid JSON (error near byte 20)'
	printf '[1]' >p/adapter_config.json
	refused 'p/adapter_config.json: file is not a JSON object'
	printf '{"r": 4}' >p/adapter_config.json
	refused "p/adapter_config.json: 'peft_type' is missing"
	printf '{"peft_type": "LORA"} x' >p/adapter_config.json
	refused 'p/adapter_config.json: file has data after the JSON object (byte 22)'
	printf '{"peft_type": "LORA", "base_model_name_or_path": "\351"}' >p/adapter_config.json
	refused 'p/adapter_config.json: file is not valid UTF-8 (byte 50)'
	printf '{"peft_type": "LORA", "base_model_name_or_path": "\000"}' >p/adapter_config.json
	refused 'p/adapter_config.json: file contains a control character at byte 50'
	# a key given twice: the last one stands, as PEFT (Python's json) reads it
	printf '{"peft_type": "LORA", "lora_alpha": 16, "r": 4, "lora_alpha": 1600, "target_modules": ["w"]}' >p/adapter_config.json
	run -0 lora-inspect --json p
	assert_equal "$(jq -c '[.alphas, .scales]' <<<"$output")" '[[{"alpha":1600,"layers":1}],[{"scale":400,"layers":1}]]'
	mkpeft --peft-type LOHA p w=16x16x4
	refused "p/adapter_config.json: peft_type 'LOHA' is not supported (only LORA)"
}

@test "config: fields of the wrong type are named" {
	mkpeft p w=16x16x4
	cp p/adapter_config.json good.json
	for c in '.r = 0' '.r = 2.5' '.r = 1e30' '.rank_pattern = {"w": 3e9}' '.lora_alpha = "8"' '.use_rslora = 1' '.use_dora = "yes"' \
		'.rank_pattern = [1]' '.rank_pattern = {"w": 0}' '.alpha_pattern = {"w": null}' \
		'.target_modules = 5' '.target_modules = ["w", 1]' '.base_model_name_or_path = 3'; do
		jq "$c" good.json >p/adapter_config.json
		run -1 --separate-stderr lora-inspect p
		case $c in
		'.rank_pattern = [1]') want="'rank_pattern' must be an object" ;;
		'.r = 1e30') want="'r': 1e+30 is too large (at most 2147483648)" ;;
		'.rank_pattern = {"w": 3e9}') want="rank_pattern 'w': 3e+09 is too large (at most 2147483648)" ;;
		.rank_pattern*) want="rank_pattern 'w' must map to a positive integer" ;;
		.r*) want="'r' must be a positive integer" ;;
		.lora_alpha*) want="'lora_alpha' must be a finite number" ;;
		.use_rslora*) want="'use_rslora' must be true or false" ;;
		.use_dora*) want="'use_dora' must be true or false" ;;
		.alpha_pattern*) want="alpha_pattern 'w' must map to a finite number" ;;
		.target_modules*) want="'target_modules' must be a list of strings or a string" ;;
		.base*) want="'base_model_name_or_path' must be a string" ;;
		esac
		assert_equal "$stderr" "lora-inspect: p/adapter_config.json: $want"
	done
	mkpeft --rank-pattern 'w(=4' p w=16x16x4
	refused "p/adapter_config.json: rank_pattern key 'w(' is not a valid regular expression: missing closing parenthesis at offset 2"
	mkpeft --alpha-pattern 'w=4' --alpha-pattern '[a-=4' p w=16x16x4
	refused "p/adapter_config.json: alpha_pattern key '[a-' is not a valid regular expression: range out of order in character class at offset 3"
	jq '.target_modules = "q_proj|(v_proj"' good.json >p/adapter_config.json
	refused "p/adapter_config.json: target_modules 'q_proj|(v_proj' is not a valid regular expression: missing closing parenthesis at offset 14"
	# thousands of keys, plain names or not, each compiled small (a shared
	# budget bounds them: tests/fuzz.bats)
	jq '.alpha_pattern = ([range(4097)] | map({key: "k(\(.))", value: 4}) | from_entries)' good.json >p/adapter_config.json
	run -0 lora-inspect p
	jq '.rank_pattern = ([range(20000)] | map({key: "m.layers.\(.).x", value: 2}) | from_entries)' good.json >p/adapter_config.json
	run -0 lora-inspect p
}

@test "a lora_A without its lora_B, and the other way round" {
	mkpeft p w=16x16x4 --drop $W.lora_B.weight
	refused "p/adapter_model.safetensors: tensor '$W.lora_A.weight' has no matching '$W.lora_B.weight'"
	rm -r p && mkpeft p w=16x16x4 --drop $W.lora_A.weight
	refused "p/adapter_model.safetensors: tensor '$W.lora_B.weight' has no matching '$W.lora_A.weight'"
	rm -r p && mkpeft --dora p w=16x16x4 --drop $W.lora_A.weight --drop $W.lora_B.weight
	refused "p/adapter_model.safetensors: tensor '$W.lora_magnitude_vector' belongs to no LoRA layer (no '$W.lora_A.weight')"
}

@test "ranks: A against B, and against r and rank_pattern" {
	mkpeft p w=64x64x8 --drop $W.lora_B.weight --extra $W.lora_B.weight=F32:64x4
	refused "p/adapter_model.safetensors: tensor '$W.lora_A.weight': shape 8x64 does not match lora_B rank 4"
	rm -r p && mkpeft --r 8 p w=16x16x4
	refused "p/adapter_model.safetensors: tensor '$W.lora_A.weight': rank 4 does not match r = 8 in adapter_config.json"
	rm -r p && mkpeft --rank-pattern w=2 p w=16x16x4
	refused "p/adapter_model.safetensors: tensor '$W.lora_A.weight': rank 4 does not match rank_pattern 'w' = 2 in adapter_config.json"
}

@test "wrong-shaped factors and vectors, unsupported dtypes, non-finite values" {
	mkpeft p w=16x16x4 --drop $W.lora_A.weight --extra $W.lora_A.weight=F32:4x16x1
	refused "p/adapter_model.safetensors: tensor '$W.lora_A.weight' is 3-D; LoRA factors must be 2-D"
	rm -r p && mkpeft --dora p w=16x16x4 --drop $W.lora_magnitude_vector --extra $W.lora_magnitude_vector=F32:8
	refused "p/adapter_model.safetensors: tensor '$W.lora_magnitude_vector': shape 8 does not match lora_B (16 outputs)"
	rm -r p && mkpeft --lora-bias p w=16x16x4 --drop $W.lora_B.bias --extra $W.lora_B.bias=F32:16x1
	refused "p/adapter_model.safetensors: tensor '$W.lora_B.bias': shape 16x1 does not match lora_B (16 outputs)"
	rm -r p && mkpeft --dtype-b F64 p w=16x16x4
	refused "p/adapter_model.safetensors: tensor '$W.lora_B.weight': dtype F64 is not supported (F32, F16 or BF16)"
	rm -r p && mkpeft --dtype-b I8 p w=16x16x4
	refused "p/adapter_model.safetensors: tensor '$W.lora_B.weight': dtype I8 is not supported (F32, F16 or BF16)"
	rm -r p && mkpeft --dtype bf16 p w=16x16x4 --poison $W.lora_B.weight@5
	refused "p/adapter_model.safetensors: tensor '$W.lora_B.weight': non-finite value at [1,1]"
}

@test "use_dora and lora_bias must agree with the tensors" {
	mkpeft p w=16x16x4 --extra $W.lora_magnitude_vector=F32:16
	refused "p/adapter_model.safetensors: tensor '$W.lora_magnitude_vector': use_dora is not true in adapter_config.json"
	rm -r p && mkpeft --dora p w=16x16x4 --drop $W.lora_magnitude_vector
	refused "p/adapter_model.safetensors: module 'w' has no 'lora_magnitude_vector' but adapter_config.json sets use_dora"
	rm -r p && mkpeft --lora-bias p w=16x16x4 --drop $W.lora_B.bias
	refused "p/adapter_model.safetensors: module 'w' has no 'lora_B.bias' but adapter_config.json sets lora_bias"
}

@test "a truncated adapter_model.safetensors" {
	mkpeft p w=16x16x4
	size=$(stat -c %s p/adapter_model.safetensors)
	head -c $((size - 1)) p/adapter_model.safetensors >t && mv t p/adapter_model.safetensors
	run -1 --separate-stderr lora-inspect p
	assert_output ''
	assert_regex "$stderr" "^lora-inspect: p/adapter_model\.safetensors: tensor 'base_model\.model\.w\.lora_B\.weight': data_offsets \[[0-9]+,[0-9]+\] run past the end of the [0-9]+-byte data section$"
	hl=$(od -An -tu8 -N8 p/adapter_model.safetensors | tr -d ' ')
	head -c 100 p/adapter_model.safetensors >t && mv t p/adapter_model.safetensors
	refused "p/adapter_model.safetensors: header length $hl exceeds file size 100"
}

@test "PEFT's pattern rule and the config it is given, from the C unit test" {
	run test_peft
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "other tools take a PEFT adapter too: lora-merge of a directory equals that of its .lora" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 model >/dev/null
	mkpeft --dora --alpha 16 p $Q=64x64x8 model.layers.1.self_attn.k_proj=32x64x4 --rank-pattern k_proj=4
	lora-convert p -o p.lora
	lora-merge -q -m model p -o m1
	lora-merge -q -m model p.lora -o m2
	lora-merge -q -m model p/adapter_model.safetensors:0.5 -o m3
	lora-merge -q -m model p.lora:0.5 -o m4
	cmp m1/model.safetensors m2/model.safetensors
	cmp m3/model.safetensors m4/model.safetensors
	run -1 cmp -s m1/model.safetensors m3/model.safetensors
	# a tensor it cannot apply is named, not dropped
	mkpeft --embedding model.embed_tokens=256x64x4 e $Q=64x64x8
	run -1 --separate-stderr lora-merge -q -m model e -o m5
	assert_equal "$stderr" "lora-merge: e: 2 tensors are not linear LoRA factors and cannot be merged (--ignore-unknown skips them): 'base_model.model.model.embed_tokens.lora_embedding_A', 'base_model.model.model.embed_tokens.lora_embedding_B'"
	assert_not_exist m5
}

@test "tensors of a module outside target_modules are skipped with a warning by every tool, as PEFT skips them" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 model >/dev/null
	mktokens --vocab 256 300 >data.u16
	K=model.layers.1.self_attn.k_proj U=model.layers.1.mlp.up_proj
	mkpeft --targets q_proj,k_proj p $Q=64x64x8 $K=32x64x8 $U=128x64x8
	mkpeft --targets q_proj,k_proj --drop base_model.model.$U.lora_A.weight --drop base_model.model.$U.lora_B.weight \
		p0 $Q=64x64x8 $K=32x64x8 $U=128x64x8
	w="warning: p/adapter_model.safetensors: 1 module that adapter_config.json does not target is skipped, as PEFT skips it: '$U'"
	run -0 --separate-stderr lora-merge -m model p -o m1
	assert_equal "$stderr" "lora-merge: $w"
	lora-merge -m model p0 -o m0
	cmp m0/model.safetensors m1/model.safetensors
	# up_proj is in the model: merged, it would have changed the output
	lora-merge -m model p0 $(mkpeft --targets up_proj u $U=128x64x8; echo u) -o mu
	run -1 cmp -s m0/model.safetensors mu/model.safetensors
	run -0 --separate-stderr lora-convert p -o p.lora
	assert_equal "$stderr" "lora-convert: $w"
	# the same name, so that the provenance (source "p") is the same
	mkdir o && cp -r p0 o/p && (cd o && lora-convert p -o ../p0.lora)
	cmp p.lora p0.lora
	run -0 --separate-stderr lora-convert --to peft p -o back
	assert_equal "$stderr" "lora-convert: $w"
	cmp back/adapter_model.safetensors p0/adapter_model.safetensors
	# every tool that reads the adapter says it, once per reading
	run -0 --separate-stderr lora-inspect p
	assert_equal "$stderr" "lora-inspect: $w"
	assert_line 'layers       2'
	run -0 --separate-stderr lora-diff p p0.lora
	assert_equal "$stderr" "lora-diff: $w"
	run -0 --separate-stderr lora-eval -m model -d data.u16 -T 32 -b 2 p
	assert_equal "$stderr" "lora-eval: $w"
	assert_equal "$(grep -v adapters <<<"$output")" "$(lora-eval -m model -d data.u16 -T 32 -b 2 p0 | grep -v adapters)"
	run -0 --separate-stderr lora-generate -m model -n 4 p -o g.u16
	assert_equal "$stderr" "lora-generate: $w"
	run -0 --separate-stderr lora-svd -q -r 2 p -o s.lora
	assert_equal "$stderr" ""
	run -0 --separate-stderr lora-svd -r 2 p -o s2.lora
	assert_regex "$stderr" "^lora-svd: $(printf '%s' "$w" | sed 's/[][\.*^$]/\\&/g')"
	cmp s.lora s2.lora
	run -0 --separate-stderr lora-merge --combine cat p p0 -o c.lora
	assert_equal "$stderr" "lora-merge: $w"
	run -0 --separate-stderr lora-train -m model -d data.u16 --steps 1 -T 8 p -o t.lora
	assert_equal "$stderr" "lora-train: $w"
	# -q silences it where a tool has -q
	for t in "lora-merge -q -m model p -o mq" "lora-convert -q p -o q.lora" "lora-diff -q p p0" \
		"lora-eval -q -m model -d data.u16 -T 32 -b 2 p"; do
		run -0 --separate-stderr $t
		assert_equal "$stderr" ""
	done
}

@test "which modules PEFT adapts: exclude_modules, modules_to_save, layers_to_transform and layers_pattern as PEFT 0.20 reads them" {
	L0=model.layers.0 L1=model.layers.1
	mkpeft --targets q_proj,k_proj,up_proj p $L0.self_attn.q_proj=8x8x2 $L0.self_attn.k_proj=8x8x2 $L0.mlp.up_proj=8x8x2 \
		$L1.self_attn.q_proj=8x8x2 $L1.self_attn.k_proj=8x8x2 $L1.mlp.up_proj=8x8x2
	cp p/adapter_config.json c.json
	# layers(JQ): the layers lora-convert keeps with the config changed by JQ
	layers() {
		jq "$1" c.json >p/adapter_config.json
		lora-convert -q -f p -o a.lora
		lora-inspect --json a.lora | jq -r '[.layers[].name | sub("model.layers."; "") | sub("self_attn.|mlp."; "")] | sort | join(" ")'
	}
	assert_equal "$(layers .)" "0.k_proj 0.q_proj 0.up_proj 1.k_proj 1.q_proj 1.up_proj"
	# exclude_modules: names or suffixes at a dot, or a string matched whole
	assert_equal "$(layers '.exclude_modules = ["model.layers.0.self_attn.q_proj", "k_proj", "up"]')" "0.up_proj 1.q_proj 1.up_proj"
	assert_equal "$(layers '.exclude_modules = "model\\.layers\\.1\\..*"')" "0.k_proj 0.q_proj 0.up_proj"
	assert_equal "$(layers '.exclude_modules = "layers\\.1\\..*"')" "0.k_proj 0.q_proj 0.up_proj 1.k_proj 1.q_proj 1.up_proj"
	# modules_to_save: never adapted, nor what lies inside them
	assert_equal "$(layers '.modules_to_save = ["up_proj", "layers.1.self_attn"]')" "0.k_proj 0.q_proj"
	# layers_to_transform: an index or a list, the first number after a name part
	assert_equal "$(layers '.layers_to_transform = 1')" "1.k_proj 1.q_proj 1.up_proj"
	assert_equal "$(layers '.layers_to_transform = [0, 5]')" "0.k_proj 0.q_proj 0.up_proj"
	assert_equal "$(layers '.layers_to_transform = []')" "0.k_proj 0.q_proj 0.up_proj 1.k_proj 1.q_proj 1.up_proj"
	# a module named whole in target_modules takes no layer filter
	assert_equal "$(layers '.layers_to_transform = [1] | .target_modules += ["model.layers.0.mlp.up_proj"]')" \
		"0.up_proj 1.k_proj 1.q_proj 1.up_proj"
	# layers_pattern: the name part before the index, a Python regex
	assert_equal "$(layers '.layers_to_transform = [0] | .layers_pattern = "layers"')" "0.k_proj 0.q_proj 0.up_proj"
	assert_equal "$(layers '.layers_to_transform = [0] | .layers_pattern = ["blocks", "lay.rs"]')" "0.k_proj 0.q_proj 0.up_proj"
	assert_equal "$(layers '.layers_to_transform = [0] | .layers_pattern = "blocks"')" ""
	# a string target_modules takes no layer filter either
	assert_equal "$(layers '.layers_to_transform = [0] | .target_modules = ".*q_proj"')" "0.q_proj 1.q_proj"
	# the warning names the first three and counts the rest
	jq '.layers_to_transform = [7]' c.json >p/adapter_config.json
	run -0 --separate-stderr lora-convert -f p -o a.lora
	assert_equal "$stderr" "lora-convert: warning: p/adapter_model.safetensors: 6 modules that adapter_config.json does not target are skipped, as PEFT skips them: 'model.layers.0.mlp.up_proj', 'model.layers.0.self_attn.k_proj', 'model.layers.0.self_attn.q_proj' and 3 more"
	# keys of the wrong type are named; a group in layers_pattern that PEFT's int() would refuse is refused
	# refused JQ LINE: lora-convert of p with the config changed by JQ fails with LINE
	refused() {
		jq "$1" c.json >p/adapter_config.json
		run -1 --separate-stderr lora-convert -f p -o a.lora
		assert_equal "$stderr" "lora-convert: p/adapter_config.json: $2"
	}
	refused '.exclude_modules = 3' "'exclude_modules' must be a list of strings or a string"
	refused '.layers_pattern = [3]' "'layers_pattern' must be a list of strings or a string"
	refused '.modules_to_save = "lm_head"' "'modules_to_save' must be a list of strings"
	refused '.layers_to_transform = [0.5]' "'layers_to_transform' must be an integer or a list of integers"
	refused '.layers_to_transform = [0] | .layers_pattern = "(lay)ers"' \
		"module 'model.layers.0.mlp.up_proj': the layer index that layers_pattern finds is not a number of ASCII digits"
	jq '.layers_pattern = "(" | .layers_to_transform = 0' c.json >p/adapter_config.json
	run -1 --separate-stderr lora-convert -f p -o a.lora
	assert_regex "$stderr" "^lora-convert: p/adapter_config.json: layers_pattern '\\(' "
}

@test "written back to PEFT, layers a kept config would not adapt get target_modules that name them and no filters" {
	mkpeft --targets q_proj pa model.layers.0.self_attn.q_proj=8x8x2
	jq '.exclude_modules = ["up_proj"] | .layers_to_transform = [0] | .layers_pattern = "layers"' pa/adapter_config.json >c.json
	mv c.json pa/adapter_config.json
	mkpeft --targets up_proj pb model.layers.1.mlp.up_proj=8x8x2
	lora-merge --combine cat pa pb -o ab.lora
	lora-convert ab.lora -o back
	assert_equal "$(jq -c '[.target_modules, .exclude_modules, .layers_to_transform, .layers_pattern]' back/adapter_config.json)" \
		'[["q_proj","up_proj"],null,null,null]'
	run -0 --separate-stderr lora-inspect back
	assert_line 'layers       2'
	assert_equal "$stderr" ''
}
