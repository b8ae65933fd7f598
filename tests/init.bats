#!/usr/bin/env bats
# lora-init: every promise of lora-init(1).

setup() {
	load test_helper/common-setup
	_common_setup
	# hidden 64, 4 heads of 16, 2 kv heads: q 64x64, k/v 32x64, mlp 128
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 model >/dev/null
}

@test "lora-init -h prints usage on stdout and exits 0" {
	run -0 --separate-stderr lora-init -h
	assert_line --index 0 'Usage: lora-init (-m MODEL | --shape NAME=OUTxIN...) [options] [-o OUT]'
	assert_output --partial '--target-regex RE'
	assert_equal "$stderr" ''
}

@test "lora-init --version" {
	run -0 lora-init --version
	assert_output 'lora-init 0.1.0'
}

@test "an unknown option is a usage error on stderr, exit 2" {
	run -2 --separate-stderr lora-init --bogus
	assert_output ''
	assert_equal "${stderr_lines[0]}" "lora-init: unknown option '--bogus'"
}

@test "neither -m nor --shape is a usage error" {
	run -2 --separate-stderr lora-init -o x.lora
	assert_equal "${stderr_lines[0]}" "lora-init: need -m MODEL or --shape NAME=OUTxIN"
	assert_file_not_exists x.lora
}

@test "a missing model names it, exit 1, nothing written" {
	run -1 --separate-stderr lora-init -m nope/ -o x.lora
	assert_equal "$stderr" "lora-init: nope/: No such file or directory"
	assert_file_not_exists x.lora
}

@test "defaults: q_proj and v_proj, rank 8, alpha 8, kaiming, f32" {
	run -0 lora-init -m model -o a.lora
	run -0 lora-inspect --json a.lora
	# q: 8*(64+64)=1024 per layer, v: 8*(64+32)=768 per layer, 2 layers
	assert_equal "$(jq -c '[.num_layers, .ranks, .alphas, .scales, .parameters, .raw_bytes, .dtype, .targets]' <<<"$output")" \
		'[4,[{"rank":8,"layers":4}],[{"alpha":8,"layers":4}],[{"scale":1,"layers":4}],3584,14336,"f32",["q_proj","v_proj"]]'
	assert_equal "$(jq -r '[.layers[] | "\(.name) \(.out)x\(.in)"] | join(",")' <<<"$output")" \
		'model.layers.0.self_attn.q_proj 64x64,model.layers.0.self_attn.v_proj 32x64,model.layers.1.self_attn.q_proj 64x64,model.layers.1.self_attn.v_proj 32x64'
	assert_equal "$(jq -r '.base_model.name' <<<"$output")" tiny-llama
	assert_equal "$(jq -r '.provenance.init' <<<"$output")" kaiming
	fp=$(lora-inspect --json model | jq -r .fingerprint)
	assert_equal "$(jq -r '.base_model.fingerprint' <<<"$output")" "$fp"
}

@test "the same seed gives byte-identical output; another seed does not" {
	lora-init -m model --seed 7 -o a.lora
	lora-init -m model --seed 7 > b.lora
	lora-init -m model --seed 8 -o c.lora
	cmp a.lora b.lora
	run -1 cmp -s a.lora c.lora
}

@test "the output is the same with any thread count" {
	OMP_NUM_THREADS=1 lora-init -m model -t all-linear -o a.lora
	OMP_NUM_THREADS=2 lora-init -m model -t all-linear -o b.lora
	cmp a.lora b.lora
}

@test "all-linear takes every projection and no embedding, head or norm" {
	run -0 lora-init -m model -t all-linear -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq '.num_layers' <<<"$output")" 14
	assert_equal "$(jq '[.layers[].name | select(test("embed|lm_head|norm"))] | length' <<<"$output")" 0
}

@test "--target-regex matches whole module names" {
	lora-init -m model --target-regex 'model\.layers\.1\.mlp\..*' -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -r '[.layers[].name] | join(" ")' <<<"$output")" \
		'model.layers.1.mlp.down_proj model.layers.1.mlp.gate_proj model.layers.1.mlp.up_proj'
	run -1 --separate-stderr lora-init -m model --target-regex 'mlp' -o b.lora
	assert_equal "$stderr" "lora-init: model: no tensor matches the targets"
}

@test "--target-regex is a Python regex, as PEFT's target_modules: \\d, lookarounds, no POSIX classes" {
	lora-init -m model --target-regex 'model\.layers\.\d\.self_attn\.(?!v)[a-z]_proj' -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -c '[.layers[].name]' <<<"$output")" \
		'["model.layers.0.self_attn.k_proj","model.layers.0.self_attn.o_proj","model.layers.0.self_attn.q_proj","model.layers.1.self_attn.k_proj","model.layers.1.self_attn.o_proj","model.layers.1.self_attn.q_proj"]'
	# [[:alpha:]] is '[' or ':' ... then ']' to Python: it selects nothing here
	run -1 --separate-stderr lora-init -m model --target-regex '.*\.[[:alpha:]]_proj' -o b.lora
	assert_equal "$stderr" "lora-init: model: no tensor matches the targets"
	run -2 --separate-stderr lora-init -m model --target-regex 'mlp\.(up|down' -o b.lora
	assert_equal "$stderr" "lora-init: --target-regex 'mlp\.(up|down' is not a valid regular expression: missing closing parenthesis at offset 13"
	run -2 --separate-stderr lora-init -m model --target-regex '\p{L}+' -o b.lora
	assert_equal "$stderr" "lora-init: --target-regex '\p{L}+' is not a valid regular expression: bad escape \p at offset 0"
	assert_not_exist b.lora
}

@test "a target key matches whole name components: 'proj' is no suffix of 'q_proj'" {
	run -1 --separate-stderr lora-init -m model -t proj -o a.lora
	assert_equal "$stderr" "lora-init: model: no tensor matches the targets"
	run -1 --separate-stderr lora-init -m model -t _proj,ayers.0.mlp.up_proj -o a.lora
	assert_equal "$stderr" "lora-init: model: no tensor matches the targets"
	lora-init -m model -t 1.mlp.up_proj,self_attn.q_proj -o b.lora
	run -0 lora-inspect --json b.lora
	assert_equal "$(jq -r '[.layers[].name] | sort | join(" ")' <<<"$output")" \
		'model.layers.0.self_attn.q_proj model.layers.1.mlp.up_proj model.layers.1.self_attn.q_proj'
}

@test "--layers selects blocks by index" {
	lora-init -m model -t all-linear --layers 1 -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq '[.layers[].name | select(startswith("model.layers.1."))] | length' <<<"$output")" 7
	assert_equal "$(jq '.num_layers' <<<"$output")" 7
	run -2 --separate-stderr lora-init -m model --layers 3-1
	assert_equal "${stderr_lines[0]}" "lora-init: --layers '3-1': expected a list like 0-3,7"
}

@test "rank, alpha, rslora and dtype are recorded" {
	lora-init -m model -r 4 -a 16 --rslora --dtype bf16 -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -c '[.ranks[0].rank, .alphas[0].alpha, .scaling, .scales[0].scale, .dtype, .raw_bytes]' <<<"$output")" \
		'[4,16,"rslora",8,"bf16",3584]'
}

@test "no target matched: one error line, exit 1, no output" {
	run -1 --separate-stderr lora-init -m model -t nothing -o a.lora
	assert_output ''
	assert_equal "$stderr" "lora-init: model: no tensor matches the targets"
	assert_file_not_exists a.lora
}

@test "a rank above min(out, in) is refused" {
	run -1 --separate-stderr lora-init -m model -r 33 -o a.lora
	assert_equal "$stderr" "lora-init: model: tensor 'model.layers.0.self_attn.v_proj.weight': rank 33 exceeds min(32, 64)"
	assert_file_not_exists a.lora
}

@test "a non-2-D target is refused" {
	run -1 --separate-stderr lora-init -m model -t input_layernorm -o a.lora
	assert_equal "$stderr" "lora-init: model: tensor 'model.layers.0.input_layernorm.weight' is 1-D; only 2-D linear weights can be adapted"
}

@test "model given as a file, an index, or a sharded directory" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --shard-bytes 60000 sharded >/dev/null
	assert_file_exists sharded/model.safetensors.index.json
	for m in model model/model.safetensors sharded sharded/model.safetensors.index.json; do
		lora-init -m "$m" -t all-linear -o "$(basename "$m").lora"
	done
	a=$(lora-inspect --json model.lora | jq -c '[.layers, .base_model.fingerprint, .parameters]')
	for f in model.safetensors.lora sharded.lora model.safetensors.index.json.lora; do
		assert_equal "$(lora-inspect --json "$f" | jq -c '[.layers, .base_model.fingerprint, .parameters]')" "$a"
	done
}

@test "--shape builds an adapter without a model" {
	lora-init --shape w=16x32 --shape blk.0.attn.weight=8x8 -r 2 -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -c '[.layers[] | [.name, .out, .in, .rank]]' <<<"$output")" '[["w",16,32,2],["blk.0.attn",8,8,2]]'
	assert_equal "$(jq -c .base_model <<<"$output")" null
	run -2 --separate-stderr lora-init --shape w=16by32
	assert_equal "${stderr_lines[0]}" "lora-init: --shape 'w=16by32': expected NAME=OUTxIN, e.g. w=4096x1024"
	run -1 --separate-stderr lora-init --shape w=2x64 -r 4 -o b.lora
	assert_equal "$stderr" "lora-init: --shape 'w=2x64': rank 4 exceeds min(2, 64)"
	run -2 lora-init -m model --shape w=2x2
}

@test "a new adapter's update is exactly zero (B = 0), from the factors" {
	lora-init --shape w=64x100 -r 8 -o a.lora
	run -0 lora-inspect --json --stats a.lora
	assert_equal "$(jq '.layers[0].norm' <<<"$output")" 0
}

@test "an existing output needs -f" {
	lora-init --shape w=4x4 -r 1 -o a.lora
	run -1 --separate-stderr lora-init --shape w=4x4 -r 2 -o a.lora
	assert_equal "$stderr" "lora-init: a.lora: already exists (use -f to overwrite)"
	lora-init --shape w=4x4 -r 2 -f -o a.lora
	assert_equal "$(lora-inspect --json a.lora | jq .ranks[0].rank)" 2
}

@test "binary output to a terminal is refused" {
	run -0 script -qec "lora-init --shape w=4x4 -r 2; echo status=\$?" /dev/null
	assert_output --partial "lora-init: refusing to write binary data to a terminal; use -o FILE or a pipe"
	assert_output --partial "status=2"
}

@test "a full disk is an error: exit 1, no output, no temporary file" {
	mkdir out
	run -1 --separate-stderr bash -c 'ulimit -f 16; lora-init --shape w=512x512 -r 64 -o out/a.lora'
	assert_equal "$stderr" "lora-init: out/a.lora: write error: File too large"
	assert_equal "$(ls -A out)" ''
}
