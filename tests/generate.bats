#!/usr/bin/env bats
# lora-generate: every promise of lora-generate(1).

setup() {
	load test_helper/common-setup
	_common_setup
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --init-scale 0.2 model >/dev/null
}

@test "lora-generate -h, --version, unknown option, missing model" {
	run -0 lora-generate -h
	assert_line --index 0 'Usage: lora-generate -m MODEL [ADAPTER[:SCALE]...] [options] [-o OUT]'
	run -0 lora-generate --version
	assert_output 'lora-generate 0.1.0'
	run -2 --separate-stderr lora-generate --bogus
	assert_equal "${stderr_lines[0]}" "lora-generate: unknown option '--bogus'"
	run -2 --separate-stderr lora-generate -n 3
	assert_equal "${stderr_lines[0]}" "lora-generate: need -m MODEL"
	run -1 --separate-stderr lora-generate -m nope -n 3 -o x
	assert_equal "$stderr" "lora-generate: nope: No such file or directory"
	assert_file_not_exists x
}

@test "rows of prompt + N tokens, every token in the vocabulary" {
	lora-generate -m model --rows 3 -n 20 --start 7 -o out.u16
	assert_equal "$(stat -c %s out.u16)" $((3 * 21 * 2))
	toks=$(od -An -v -tu2 out.u16 | tr -s ' ' '\n' | grep -v '^$')
	assert_equal "$(awk '$1 >= 300' <<<"$toks" | wc -l)" 0
	# each row starts with the start token
	assert_equal "$(sed -n '1p;22p;43p' <<<"$toks" | tr '\n' ' ')" '7 7 7 '
	lora-generate -m model -n 5 --output-format u32 -o out.u32
	assert_equal "$(stat -c %s out.u32)" 24
}

@test "same seed, same tokens; another seed, other tokens" {
	lora-generate -m model --rows 2 -n 30 --seed 5 -o a
	lora-generate -m model --rows 2 -n 30 --seed 5 > b
	lora-generate -m model --rows 2 -n 30 --seed 6 -o c
	cmp a b
	run -1 cmp -s a c
}

@test "greedy ignores the seed, and top-k 1 is greedy" {
	lora-generate -m model -n 30 --temperature 0 --seed 1 -o a
	lora-generate -m model -n 30 --temperature 0 --seed 2 -o b
	lora-generate -m model -n 30 --top-k 1 --seed 3 -o c
	cmp a b
	cmp a c
}

@test "the prompt is fed whole and kept; the continuation depends on it" {
	mktokens --vocab 300 --seed 4 12 > p.u16
	lora-generate -m model -d p.u16 -n 10 --temperature 0 -o out
	cmp -n 24 p.u16 out
	assert_equal "$(stat -c %s out)" 44
	mktokens --vocab 300 --seed 5 12 > q.u16
	lora-generate -m model -d q.u16 -n 10 --temperature 0 -o out2
	run -1 cmp -s <(tail -c 20 out) <(tail -c 20 out2)
}

@test "greedy decoding with the cache picks the argmax of a full forward at every step" {
	# two rows of a 5-token prompt and 70 greedy tokens, decoded with the
	# key/value cache and an adapter applied at run time
	mkplanted --seed 3 model.layers.0.self_attn.v_proj=32x64x2:40,30 model.layers.1.mlp.down_proj=64x128x2:40,30 > a.lora
	mktokens --vocab 300 --seed 4 5 > p.u16
	lora-generate -m model a.lora --rows 2 -d p.u16 -n 70 --temperature 0 -o g
	# one forward of both whole rows without a cache: argmax and top-2 gap at each position
	run -0 argmax-full model g 2 a.lora
	assert_equal "${#lines[@]}" 150
	od -An -v -tu2 g | tr -s ' ' '\n' | grep -v '^$' > tokens
	printf '%s\n' "${lines[@]}" | paste tokens - > pairs
	# every generated token (position 5..74 of a row) is the argmax of the
	# position before it; only a near-tie (gap < 1e-4) could go either way
	run -0 awk '(NR - 1) % 75 >= 5 { n++; if ($1 != arg && gap >= 1e-4) bad++ } { arg = $2; gap = $3 } END { print n, bad + 0 }' pairs
	assert_output '140 0'
}

@test "--compute: on a bf16 checkpoint f32 and bf16 decoding each pick the argmax of a full forward in the same type; bf16 refused without" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --init-scale 0.2 --dtype bf16 mb >/dev/null
	mktokens --vocab 300 --seed 4 5 > p.u16
	types=f32
	grep -qw avx512f /proc/cpuinfo && types="f32 bf16"
	for c in $types; do
		lora-generate -m mb --rows 2 -d p.u16 -n 40 --temperature 0 --compute $c -o g.$c
		ARGMAX_COMPUTE=$c run -0 argmax-full mb g.$c 2
		od -An -v -tu2 g.$c | tr -s ' ' '\n' | grep -v '^$' > tokens
		printf '%s\n' "${lines[@]}" | paste tokens - > pairs
		run -0 awk '(NR - 1) % 45 >= 5 { n++; if ($1 != arg && gap >= 1e-3) bad++ } { arg = $2; gap = $3 } END { print n, bad + 0 }' pairs
		assert_output '80 0'
	done
	run -1 --separate-stderr env DNNL_MAX_CPU_ISA=AVX2 lora-generate -m mb -n 3 --compute bf16 -o x
	assert_equal "$stderr" "lora-generate: bf16 compute needs a CPU with AVX-512 (oneDNN multiplies bf16 from avx512_core up; this one runs avx2): use --compute f32"
	assert_file_not_exists x
}

@test "adapters apply at run time, with their scale" {
	mkplanted --seed 3 model.layers.0.self_attn.v_proj=32x64x2:40,30 model.layers.1.self_attn.q_proj=64x64x2:40,30 > a.lora
	lora-generate -m model -n 30 --temperature 0 -o base
	lora-generate -m model a.lora -n 30 --temperature 0 -o with
	lora-generate -m model a.lora:0 -n 30 --temperature 0 -o zero
	run -1 cmp -s base with
	cmp base zero
	lora-merge -q -m model a.lora -o merged
	lora-generate -m merged -n 30 --temperature 0 -o m
	cmp with m
}

@test "bad prompts and lengths are named" {
	printf '\001\000\130\002' > bad.u16
	run -1 --separate-stderr lora-generate -m model -d bad.u16 -n 3 -o x
	assert_equal "$stderr" "lora-generate: bad.u16: token 600 at position 1 is >= vocab_size 300"
	run -1 --separate-stderr lora-generate -m model -n 5000 -o x
	assert_equal "$stderr" "lora-generate: 1 prompt and 5000 new tokens exceed max_position_embeddings 2048 of model"
	run -2 --separate-stderr lora-generate -m model -n 3 --output-format bytes
	assert_equal "$stderr" "lora-generate: vocab_size 300 does not fit --output-format bytes; use u16 or u32"
	run -2 --separate-stderr lora-generate -m model --top-p 0
	assert_equal "${stderr_lines[0]}" "lora-generate: --top-p: '0' is not in (0, 1]"
	assert_file_not_exists x
}

@test "binary tokens are not written to a terminal" {
	run -0 script -qec "lora-generate -m model -n 3; echo status=\$?" /dev/null
	assert_output --partial "lora-generate: refusing to write binary data to a terminal; use -o FILE or a pipe"
	assert_output --partial "status=2"
}
