#!/usr/bin/env bats
# lora-convert: every promise of lora-convert(1).

setup() {
	load test_helper/common-setup
	_common_setup
}

Q=model.layers.0.self_attn.q_proj
V=model.layers.0.self_attn.v_proj

@test "lora-convert -h prints usage on stdout and exits 0" {
	run -0 --separate-stderr lora-convert -h
	assert_line --index 0 'Usage: lora-convert [options] [IN] [-o OUT]'
	assert_output --partial '--to FORMAT'
	assert_equal "$stderr" ''
}

@test "lora-convert --version" {
	run -0 lora-convert --version
	assert_output 'lora-convert 0.1.0'
}

@test "an unknown option or a bad value is a usage error, exit 2" {
	run -2 --separate-stderr lora-convert --bogus a.lora
	assert_output ''
	assert_equal "${stderr_lines[0]}" "lora-convert: unknown option '--bogus'"
	run -2 --separate-stderr lora-convert --to onnx a.lora
	assert_equal "${stderr_lines[0]}" "lora-convert: --to: 'onnx' is not lora, peft or gguf"
	run -2 --separate-stderr lora-convert --dtype f64 a.lora
	assert_equal "${stderr_lines[0]}" "lora-convert: --dtype: 'f64' is not f32, f16 or bf16"
	run -2 --separate-stderr lora-convert a.lora b.lora
	assert_equal "${stderr_lines[0]}" "lora-convert: one input at a time (got 'a.lora' and 'b.lora')"
}

@test "a PEFT output needs -o DIR" {
	mkadapter w=4x4x1:1 >a.lora
	run -2 --separate-stderr lora-convert a.lora
	assert_equal "${stderr_lines[0]}" "lora-convert: a PEFT adapter is a directory: give -o DIR (or --to lora)"
	run -2 --separate-stderr lora-convert --to peft -o - a.lora
	assert_equal "${stderr_lines[0]}" "lora-convert: a PEFT adapter is a directory: give -o DIR"
}

@test "a missing input is named, exit 1, nothing written" {
	run -1 --separate-stderr lora-convert nope.lora -o out
	assert_output ''
	assert_equal "$stderr" "lora-convert: nope.lora: No such file or directory"
	assert_not_exist out
	mkdir d
	run -1 --separate-stderr lora-convert d -o x.lora
	assert_equal "$stderr" "lora-convert: d: no adapter_config.json (not a PEFT adapter directory)"
	mkpeft p w=8x8x2
	rm p/adapter_config.json
	run -1 --separate-stderr lora-convert p/adapter_model.safetensors -o x.lora
	assert_equal "$stderr" "lora-convert: p/adapter_model.safetensors: no adapter_config.json beside it (not a PEFT adapter)"
	mkpeft q w=8x8x2
	mv q/adapter_model.safetensors q/adapter_model.bin
	run -1 --separate-stderr lora-convert q -o x.lora
	assert_equal "$stderr" "lora-convert: q: adapter_model.bin (a Python pickle) is not supported; save the adapter as adapter_model.safetensors"
	assert_not_exist x.lora
}

@test "a truncated input is refused, nothing written" {
	mkadapter w=16x16x2:1,1 >a.lora
	head -c $(($(stat -c %s a.lora) - 1)) a.lora >t.lora
	run -1 --separate-stderr lora-convert t.lora -o out
	assert_equal "$stderr" "lora-convert: t.lora: truncated: header promises $(stat -c %s a.lora) bytes, file has $(stat -c %s t.lora)"
	run -1 --separate-stderr lora-convert - -o out < <(head -c 30 a.lora)
	assert_regex "$stderr" "^lora-convert: standard input: truncated in the header"
	assert_not_exist out
	mkpeft p w=16x16x2
	head -c 200 p/adapter_model.safetensors >t && mv t p/adapter_model.safetensors
	run -1 --separate-stderr lora-convert p -o x.lora
	assert_regex "$stderr" "^lora-convert: p/adapter_model\.safetensors: "
	assert_not_exist x.lora
}

@test "a wrong-shaped PEFT input names the tensor" {
	mkpeft p q=64x64x8 --drop base_model.model.q.lora_B.weight --extra base_model.model.q.lora_B.weight=F32:64x4
	run -1 --separate-stderr lora-convert p -o x.lora
	assert_output ''
	assert_equal "$stderr" "lora-convert: p/adapter_model.safetensors: tensor 'base_model.model.q.lora_A.weight': shape 8x64 does not match lora_B rank 4"
	assert_not_exist x.lora
}

@test "PEFT -> .lora -> PEFT is lossless at every dtype: same keys, same bytes, same config" {
	for t in f32 f16 bf16; do
		mkpeft --dtype $t --dora --lora-bias --fan-in-fan-out --rslora --r 4 --alpha 16 \
			--rank-pattern v_proj=2 --alpha-pattern 'layers\.1\..*=3' --base tiny-llama \
			--embedding model.embed_tokens=64x32x4 --extra base_model.model.lm_head.modules_to_save.weight=BF16:64x32 \
			--extra some.index=I64:5 p$t $Q=32x32x4 $V=16x32x2 model.layers.1.self_attn.q_proj=32x32x4
		lora-convert p$t -o $t.lora
		assert_equal "$(lora-inspect --json $t.lora | jq -r .dtype)" $t
		lora-convert $t.lora -o back$t
		cmp p$t/adapter_model.safetensors back$t/adapter_model.safetensors
		cmp p$t/adapter_config.json back$t/adapter_config.json
		assert_equal "$(ls back$t)" "$(printf 'adapter_config.json\nadapter_model.safetensors')"
	done
	# and the comparison can fail: the dtypes differ
	run -1 cmp -s pf16/adapter_model.safetensors backbf16/adapter_model.safetensors
}

@test "the same holds whatever the tensor order of the input file" {
	mkpeft --reverse --dora p $Q=32x32x4 $V=16x32x4 --extra z.first=U8:7
	lora-convert p -o a.lora
	lora-convert a.lora -o back
	assert_equal "$(mkpeft --dump back/adapter_model.safetensors)" "$(mkpeft --dump p/adapter_model.safetensors)"
	cmp p/adapter_config.json back/adapter_config.json
	# our writer stores keys sorted, so the files themselves differ
	run -1 cmp -s p/adapter_model.safetensors back/adapter_model.safetensors
}

@test "the .lora carries DoRA, biases, fan_in_fan_out, extra tensors and the PEFT config" {
	mkpeft --dora --lora-bias --fan-in-fan-out --base gpt2 --extra base_model.model.score.modules_to_save.weight=F32:2x32 \
		p transformer.h.0.attn.c_attn=96x32x4 transformer.h.0.mlp.c_fc=64x32x4
	lora-convert p -o a.lora
	keys='[.dtype, .num_layers, .ranks, .alphas, .scales, .targets, .parameters, .raw_bytes, .base_model.name, .fan_in_fan_out, .dora_layers, .bias_layers, .extras, .peft_config, [.layers[] | del(.norm)]]'
	assert_equal "$(lora-inspect --json --stats a.lora | jq -c "$keys")" "$(lora-inspect --json --stats p | jq -c "$keys")"
	run -0 lora-inspect a.lora
	assert_line --index 0 'format       .lora version 1'
	assert_line 'dora         2 layers with a magnitude vector'
	assert_line 'lora bias    2 layers with a lora_B bias'
	assert_line 'layout       fan_in_fan_out: base weights stored [in, out]'
	assert_line 'extra        base_model.model.score.modules_to_save.weight f32 2x32'
	assert_line 'provenance   {"tool":"lora-convert 0.1.0","from":"peft","source":"p"}'
	# header only: the flags come from the header
	run -0 lora-inspect --check a.lora
	assert_line 'dora         2 layers with a magnitude vector'
}

@test ".lora -> PEFT: keys, shapes and bytes are PEFT's" {
	# w: B = [5; 0] (2x1), A = [0 0 1] (1x3), as mkadapter plants them
	mkadapter --alpha 2 w=2x3x1:5 >a.lora
	lora-convert a.lora -o p
	run -0 mkpeft --dump p/adapter_model.safetensors
	assert_output "base_model.model.w.lora_A.weight F32 1x3 00000000000000000000803f
base_model.model.w.lora_B.weight F32 2x1 0000a04000000000"
	lora-convert --dtype bf16 a.lora -o pb
	run -0 mkpeft --dump pb/adapter_model.safetensors
	assert_output "base_model.model.w.lora_A.weight BF16 1x3 00000000803f
base_model.model.w.lora_B.weight BF16 2x1 a0400000"
	run -0 jq -c '[.peft_type, .r, .lora_alpha, .target_modules, .rank_pattern, .alpha_pattern, .use_rslora, .fan_in_fan_out, .base_model_name_or_path, has("use_dora"), has("lora_bias")]' p/adapter_config.json
	assert_output '["LORA",1,2,["w"],{},{},false,false,null,false,false]'
}

@test "an adapter from lora-init becomes a PEFT adapter and comes back" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 model >/dev/null
	lora-init -m model -r 4 -a 16 --rslora --seed 3 -o a.lora
	lora-convert a.lora -o p
	run -0 jq -c '[.peft_type, .r, .lora_alpha, .target_modules, .rank_pattern, .use_rslora, .base_model_name_or_path, .bias, .task_type]' p/adapter_config.json
	assert_output '["LORA",4,16,["q_proj","v_proj"],{},true,"tiny-llama","none",null]'
	run -0 mkpeft --dump p/adapter_model.safetensors
	assert_equal "$(cut -d' ' -f1-3 <<<"$output" | tr '\n' ' ')" \
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight F32 4x64 base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight F32 64x4 base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight F32 4x64 base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight F32 32x4 base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight F32 4x64 base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight F32 64x4 base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight F32 4x64 base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight F32 32x4 "
	lora-convert p -o b.lora
	keys='[.dtype, .scaling, .ranks, .alphas, .targets, .parameters, .base_model.name, [.layers[] | [.name, .out, .in, .rank, .alpha, .singular_values]]]'
	assert_equal "$(lora-inspect --json --stats b.lora | jq -c "$keys")" "$(lora-inspect --json --stats a.lora | jq -c "$keys")"
	lora-convert b.lora -o q
	cmp p/adapter_model.safetensors q/adapter_model.safetensors
	cmp p/adapter_config.json q/adapter_config.json
}

@test "ranks and alphas that differ by layer become rank_pattern and alpha_pattern" {
	mkadapter a=8x8x2:1,1 b=8x8x2:1,1 c=16x16x4:1,1,1,1 >m.lora
	lora-convert m.lora -o p
	run -0 jq -c '[.r, .lora_alpha, .rank_pattern, .alpha_pattern]' p/adapter_config.json
	assert_output '[2,2,{"c":4},{"c":4}]'
	lora-convert p -o back.lora
	assert_equal "$(lora-inspect --json back.lora | jq -c '[.layers[] | [.name, .rank, .alpha]]')" '[["a",2,2],["b",2,2],["c",4,4]]'
	# a key that would also select a longer name is escaped, longest names first
	mkadapter --alpha 8 layers.0.q=8x8x4:1,1,1,1 model.layers.0.q=8x8x2:1,1 x=8x8x2:1,1 >n.lora
	lora-convert n.lora -o pn
	run -0 jq -c '[.r, .rank_pattern]' pn/adapter_config.json
	assert_output '[2,{"model\\.layers\\.0\\.q":2,"layers\\.0\\.q":4,"x":2}]'
	lora-convert pn -o n2.lora
	assert_equal "$(lora-inspect --json n2.lora | jq -c '[.layers[] | [.name, .rank]]')" '[["layers.0.q",4],["model.layers.0.q",2],["x",2]]'
}

@test "a string target_modules is a Python regex over whole names: the modules it misses are skipped, as PEFT skips them" {
	mkpeft p $Q=32x32x4 $V=16x32x4
	cp p/adapter_config.json c.json
	got=
	for t in 'model\.layers\.\d+\.self_attn\.[qv]_proj' '.*_proj\Z' 'ALL-LINEAR' \
		'(q|v)_proj' '.*q_proj' '.*\.[[:alpha:]]_proj' '.*self_attn'; do
		jq --arg t "$t" '.target_modules = $t' c.json >p/adapter_config.json
		run -0 --separate-stderr lora-convert -f p -o a.lora
		got+="$(lora-inspect --json a.lora | jq -r .num_layers):${#stderr} "
		rm -rf back && lora-convert a.lora -o back
		# what is left is still all PEFT targets: the config goes back as it came
		cmp p/adapter_config.json back/adapter_config.json
	done
	# re.fullmatch, \d and \Z as Python reads them, all-linear in any case;
	# (q|v)_proj only matches the last part, .*q_proj misses v_proj, [[:alpha:]]
	# is no POSIX class to Python, .*self_attn does not reach the end
	assert_equal "$got" "2:0 2:0 2:0 0:204 1:165 0:204 0:204 "
	run -0 --separate-stderr lora-convert -f p -o a.lora
	assert_equal "$stderr" "lora-convert: warning: p/adapter_model.safetensors: 2 modules that adapter_config.json does not target are skipped, as PEFT skips them: '$Q', '$V'"
}

@test "--dtype sets the output dtype; mixed PEFT dtypes are held as f32" {
	mkpeft --dtype bf16 --dtype-b F16 p w=16x16x4
	lora-convert p -o a.lora
	assert_equal "$(lora-inspect --json a.lora | jq -r .dtype)" f32
	lora-convert a.lora -o f32
	assert_equal "$(mkpeft --dump f32/adapter_model.safetensors | cut -d' ' -f2 | sort -u)" F32
	# every bf16 A value and f16 B value is exact in f32: converting back gives them again
	lora-convert --dtype bf16 a.lora -o b
	assert_equal "$(mkpeft --dump b/adapter_model.safetensors | grep lora_A)" "$(mkpeft --dump p/adapter_model.safetensors | grep lora_A)"
	lora-convert --dtype f16 a.lora -o h
	assert_equal "$(mkpeft --dump h/adapter_model.safetensors | grep lora_B)" "$(mkpeft --dump p/adapter_model.safetensors | grep lora_B)"
	lora-convert --dtype f16 --to lora p -o h.lora
	assert_equal "$(lora-inspect --json h.lora | jq -r .dtype)" f16
}

@test "a value that the output dtype cannot hold is refused, nothing written" {
	mkadapter w=4x4x1:70000 >a.lora
	mkdir o
	run -1 --separate-stderr lora-convert --dtype f16 a.lora -o o/p
	assert_equal "$stderr" "lora-convert: layer 'w' B: value 70000 at [0,0] overflows f16"
	assert_equal "$(ls -A o)" ''
	run -1 --separate-stderr lora-convert --dtype f16 --to lora a.lora -o o/b.lora
	assert_equal "$stderr" "lora-convert: layer 'w' B: value 70000 at [0,0] overflows f16"
	assert_equal "$(ls -A o)" ''
	# bf16 has the range
	lora-convert --dtype bf16 a.lora -o o/p
}

@test "standard input and standard output" {
	mkadapter w=8x8x2:1,2 >a.lora
	lora-convert -o p <a.lora
	assert_file_exists p/adapter_model.safetensors
	lora-convert p --to lora >b.lora
	lora-convert p --to lora | lora-inspect --json - >j
	assert_equal "$(jq -c '[.layers[] | [.name, .rank]]' j)" '[["w",2]]'
	run -0 script -qec "lora-convert p --to lora; echo status=\$?" /dev/null
	assert_output --partial "lora-convert: refusing to write binary data to a terminal; use -o FILE or a pipe"
	assert_output --partial "status=2"
}

@test "an existing output needs -f; a directory is replaced only if it holds just an adapter" {
	mkdir o && cd o
	mkadapter w=8x8x2:1,2 >a.lora
	mkadapter w=8x8x2:3,4 >b.lora
	lora-convert a.lora -o p
	run -1 --separate-stderr lora-convert b.lora -o p
	assert_equal "$stderr" "lora-convert: p: already exists (use -f to overwrite)"
	lora-convert -f b.lora -o p
	lora-convert b.lora -o pb
	cmp p/adapter_model.safetensors pb/adapter_model.safetensors
	touch p/README.md
	run -1 --separate-stderr lora-convert -f a.lora -o p
	assert_equal "$stderr" "lora-convert: p: holds 'README.md', which would be lost; not replacing it"
	cmp p/adapter_model.safetensors pb/adapter_model.safetensors
	touch file
	run -1 --separate-stderr lora-convert -f a.lora -o file
	assert_equal "$stderr" "lora-convert: file: exists and is not a directory"
	run -1 --separate-stderr lora-convert p/ -o a.lora
	assert_equal "$stderr" "lora-convert: a.lora: already exists (use -f to overwrite)"
	assert_equal "$(ls -A | sort | tr '\n' ' ')" "a.lora b.lora file p pb "
}

@test "a full disk leaves neither the directory nor a temporary one" {
	mkadapter w=512x512x64:1 >a.lora
	mkdir out
	run -1 --separate-stderr bash -c 'ulimit -f 64; lora-convert a.lora -o out/p'
	assert_equal "$stderr" "lora-convert: out/p/adapter_model.safetensors: write error: File too large"
	assert_equal "$(ls -A out)" ''
}

@test "an interrupted conversion leaves no output and no temporary directory" {
	mkadapter w=4096x4096x512:1 v=4096x4096x512:1 >a.lora
	mkdir o
	for sig in TERM INT HUP; do
		lora-convert a.lora -o o/p &
		pid=$!
		# strike while the directory is being built
		for i in $(seq 2000); do compgen -G 'o/.p.*' >/dev/null && break; sleep 0.002; done
		kill -$sig $pid
		st=0
		wait $pid || st=$?
		assert_equal "$st" "$((128 + $(kill -l $sig)))"
		assert_equal "$(ls -A o)" ''
	done
}
