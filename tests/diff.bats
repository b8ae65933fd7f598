#!/usr/bin/env bats
# lora-diff: every promise of lora-diff(1), with numbers computed by hand.

setup() {
	load test_helper/common-setup
	_common_setup
	# Unit-vector bases (e_0, e_1, e_2): a and b differ only in the third
	# singular value, 0.5 against 0.25.
	mkplanted --offset 0 w=10x12x3:3,2,0.5 v=4x4x1:1 > a.lora
	mkplanted --offset 0 w=10x12x3:3,2,0.25 > b.lora
}

approx() {
	awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }' ||
		fail "got $1, want $2 (+- $3)"
}

# calc EXPR: awk arithmetic, printed to 17 digits
calc() { awk "BEGIN { printf \"%.17g\", $1 }"; }

@test "lora-diff -h, --version, unknown option" {
	run -0 lora-diff -h
	assert_line --index 0 'Usage: lora-diff [options] A B | -m BASE --tuned TUNED [options] [A]'
	run -0 lora-diff --version
	assert_output 'lora-diff 0.1.0'
	run -2 --separate-stderr lora-diff --bogus a.lora b.lora
	assert_output ''
	assert_equal "${stderr_lines[0]}" "lora-diff: unknown option '--bogus'"
}

@test "usage errors exit 2" {
	check() {
		local want=$1; shift
		run -2 --separate-stderr lora-diff "$@"
		assert_output ''
		assert_equal "${stderr_lines[0]}" "lora-diff: $want"
	}
	check 'need two adapters A and B, or -m and --tuned'
	check 'need a second adapter B' a.lora
	check "unexpected operand 'c.lora': compare two adapters at a time" a.lora b.lora c.lora
	check '-m BASE needs --tuned TUNED' -m base
	check "unexpected operand 'b.lora': -m and --tuned take one adapter at most" -m base --tuned tuned a.lora b.lora
	check '--subspace compares adapters, not checkpoints' -m base --tuned tuned --subspace
	check '-t goes with -m and --tuned' -t q_proj a.lora b.lora
	check '--top goes with --subspace' --top 2 a.lora b.lora
	check "--tol: '-1' is negative" --tol -1 a.lora b.lora
	run -2 --separate-stderr lora-diff - - < a.lora
	assert_equal "${stderr_lines[0]}" "lora-diff: '-' given twice: standard input can be read only once"
}

@test "an adapter against itself: exit 0, difference 0, cosine 1" {
	run -0 lora-diff a.lora a.lora
	assert_line --index 0 'layer    out x in  rank a/b    ||dW_a||    ||dW_b||   rel.diff    cosine'
	assert_line --index 1 'w           10x12       3/3      3.6401      3.6401  0.000e+00         1'
	assert_line --index 3 '2 common layers, 0 differ (*, tolerance 1e-06), 0 only in a.lora, 0 only in a.lora'
	run -0 lora-diff --json a.lora a.lora
	assert_equal "$(jq -c '[.same, .differing, [.layers[] | [.rel_diff, .cosine, .differs]]]' <<<"$output")" \
		'[true,0,[[0,1,false],[0,1,false]]]'
}

@test "two adapters: exit 1 and the numbers by hand" {
	run -1 --separate-stderr lora-diff --json a.lora b.lora
	assert_equal "$stderr" ''
	# dW_a - dW_b = 0.25 e3 e3^T: ||.|| = 0.25; norms sqrt(13.25), sqrt(13.0625); <a, b> = 13.125
	approx "$(jq '.layers[0].norm_a' <<<"$output")" "$(calc 'sqrt(13.25)')" 1e-6
	approx "$(jq '.layers[0].norm_b' <<<"$output")" "$(calc 'sqrt(13.0625)')" 1e-6
	approx "$(jq '.layers[0].rel_diff' <<<"$output")" "$(calc '0.25 / sqrt(13.25)')" 1e-9
	approx "$(jq '.layers[0].cosine' <<<"$output")" "$(calc '13.125 / sqrt(13.25 * 13.0625)')" 1e-9
	assert_equal "$(jq -c '[.same, .differing, .layers[0].differs, .only_in_a, .only_in_b, .a, .b]' <<<"$output")" \
		'[false,1,true,["v"],[],"a.lora","b.lora"]'
	run -1 lora-diff a.lora b.lora
	assert_line --index 1 'w           10x12       3/3      3.6401      3.6142  6.868e-02   0.99765 *'
	assert_line --index 2 'only in a.lora: v'
	assert_line --index 3 '1 common layers, 1 differ (*, tolerance 1e-06), 1 only in a.lora, 0 only in b.lora'
}

@test "--tol decides; a layer in one adapter only is always a difference" {
	mkplanted --offset 0 w=10x12x3:3,2,0.25 v=4x4x1:1 > b2.lora
	run -0 lora-diff -q --tol 0.07 a.lora b2.lora
	run -1 lora-diff -q --tol 0.06 a.lora b2.lora
	run -1 lora-diff -q --tol 0.07 a.lora b.lora
	assert_output ''
}

@test "scales count: alpha 6 against alpha 3 at the same factors is half the update" {
	mkplanted --offset 0 --alpha 6 w=10x12x3:3,2,0.5 > s6.lora
	mkplanted --offset 0 --alpha 3 w=10x12x3:3,2,0.5 > s3.lora
	run -1 lora-diff --json s6.lora s3.lora
	approx "$(jq '.layers[0].rel_diff' <<<"$output")" 0.5 1e-12
	approx "$(jq '.layers[0].cosine' <<<"$output")" 1 1e-12
	approx "$(jq '.layers[0].norm_a' <<<"$output")" "$(calc '2 * sqrt(13.25)')" 1e-6
}

@test "--subspace: an adapter with itself is 1 everywhere, orthogonal subspaces 0" {
	mkplanted --seed 3 w=24x20x4:4,3,2,1 > r.lora
	run -0 lora-diff --subspace --json r.lora r.lora
	assert_equal "$(jq '[.layers[0].subspace | (.phi_A, .phi_B)[][] | . - 1 | fabs < 1e-9] | all' <<<"$output")" true
	assert_equal "$(jq -c '.layers[0].subspace | [(.phi_A | length), (.phi_A[0] | length), .top, (.top_out * 1e9 | round), (.top_in * 1e9 | round)]' <<<"$output")" \
		'[4,4,4,1000000000,1000000000]'
	mkplanted --offset 0 w=12x10x4:4,3,2,1 > o1.lora
	mkplanted --offset 4 w=12x10x4:4,3,2,1 > o2.lora
	run -1 lora-diff --subspace --json o1.lora o2.lora
	assert_equal "$(jq -c '.layers[0].subspace | [([(.phi_A, .phi_B)[][]] | max), .top_out, .top_in]' <<<"$output")" '[0,0,0]'
	assert_equal "$(jq '.layers[0].cosine' <<<"$output")" 0
}

@test "--subspace: phi(i, j) by hand for overlapping subspaces" {
	# A rows (and B columns) span e0, e1 against e1, e2, in singular-value order
	mkplanted --offset 0 w=6x6x2:2,1 > p.lora
	mkplanted --offset 1 w=6x6x2:2,1 > q.lora
	run -1 lora-diff --subspace --json p.lora q.lora
	assert_equal "$(jq -c '.layers[0].subspace | [.phi_A, .phi_B] | map(map(map(. * 1e9 | round / 1e9)))' <<<"$output")" \
		'[[[0,0],[1,0.5]],[[0,0],[1,0.5]]]'
	run -1 lora-diff --subspace --top 1 p.lora q.lora
	assert_line '  phi(i, j) of A (input space)        j=1     j=2'
	assert_line '                              i=2  1.0000  0.5000'
	assert_line '  top-1 directions of dW: output space 0.0000, input space 0.0000'
}

@test "one adapter from standard input; lora-svd at full rank makes no difference" {
	run -1 lora-diff -q a.lora - < b.lora
	lora-svd -q -r 3 a.lora | lora-diff a.lora -
	run -1 bash -c 'lora-svd -q -r 2 a.lora | lora-diff --json a.lora -'
	assert_equal "$(jq -r .b <<<"$output")" 'standard input'
	approx "$(jq '.layers[0].rel_diff' <<<"$output")" "$(calc '0.5 / sqrt(13.25)')" 1e-6
}

@test "trouble is exit 2: missing, truncated, mismatched shapes" {
	run -2 --separate-stderr lora-diff a.lora nope.lora
	assert_output ''
	assert_equal "$stderr" "lora-diff: nope.lora: No such file or directory"
	size=$(stat -c %s b.lora)
	head -c $((size - 3)) b.lora > t.lora
	run -2 --separate-stderr lora-diff a.lora t.lora
	assert_equal "$stderr" "lora-diff: t.lora: truncated: header promises $size bytes, file has $((size - 3))"
	mkplanted --offset 0 w=12x10x3:3,2,0.5 > c.lora
	run -2 --separate-stderr lora-diff a.lora c.lora
	assert_output ''
	assert_equal "$stderr" "lora-diff: layer 'w': shape 10x12 in a.lora but 12x10 in c.lora"
}

@test "PEFT directories; DoRA magnitudes and lora_B biases are compared too" {
	mkpeft --dora --seed 1 d1 q=16x12x4:4,3,2,1
	mkpeft --dora --seed 2 d2 q=16x12x4:4,3,2,1
	mkpeft d0 q=16x12x4:4,3,2,1
	run -0 lora-diff d1 d1
	# same factors, other magnitudes: the update agrees, the layer differs
	run -1 lora-diff --json d1 d2
	assert_equal "$(jq -c '.layers[0] | [.rel_diff, .cosine, .differs, (.vectors_diff > 0.01)]' <<<"$output")" '[0,1,true,true]'
	run -1 lora-diff d1 d2
	assert_line --regexp '^  DoRA magnitudes / lora_B biases differ: [0-9.]+e-0[0-9]$'
	run -1 lora-diff --json d1 d0
	assert_equal "$(jq -c '.layers[0] | [.rel_diff, .vectors_diff]' <<<"$output")" '[0,1]'
	run -0 lora-diff --json d0 d0
	assert_equal "$(jq -c '.layers[0].vectors_diff' <<<"$output")" null
}

# ---- checkpoints ----

@test "-m/--tuned: norms, relative change and 50/90/99% ranks per tensor" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	# q_proj: 4, 2, 1 (16 + 4 + 1 = 21: 76% at 1, 95% at 2)
	mktuned --plant q_proj=4,2,1 base tuned
	run -1 --separate-stderr lora-diff -m base --tuned tuned --json
	assert_equal "$stderr" ''
	q='.tensors[] | select(.name == "model.layers.1.self_attn.q_proj.weight")'
	assert_equal "$(jq -c "$q | [.shape, .rank_50, .rank_90, .rank_99, .differs]" <<<"$output")" '[[64,64],1,2,3,true]'
	approx "$(jq "$q | .norm" <<<"$output")" "$(calc 'sqrt(21)')" 1e-5
	n='.tensors[] | select(.name == "model.norm.weight")'
	assert_equal "$(jq -c "$n | [.norm, .relative, .rank_50, .differs]" <<<"$output")" '[0,0,null,false]'
	assert_equal "$(jq -c '[.same, .differing, (.tensors | length), .only_in_base, .only_in_tuned]' <<<"$output")" \
		'[false,2,21,[],[]]'
	# o_proj changed by 1% of itself: relative change 0.01
	mktuned --plant o_proj= --scale 0.01 base scaled
	run -1 lora-diff -m base --tuned scaled --json -t o_proj
	assert_equal "$(jq -c '[.tensors[].relative] | map(. * 1e5 | round)' <<<"$output")" '[1000,1000]'
	run -1 lora-diff -m base --tuned tuned -t q_proj
	assert_line --index 0 'tensor                                         shape      ||dW||   relative   r50   r90   r99'
	assert_line --regexp '^model\.layers\.0\.self_attn\.q_proj\.weight +64x64 +4\.5826 +[0-9.]+e[+-][0-9]+ +1 +2 +3$'
	assert_line '2 common tensors, 2 differ (tolerance 1e-06), 0 only in base, 0 only in tuned'
}

@test "-m/--tuned: identical checkpoints exit 0; dropped tensors are listed" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	run -0 lora-diff -m base --tuned base/model.safetensors
	assert_line --regexp '^model\.layers\.0\.input_layernorm\.weight +64 +0 +0\.000e\+00 +- +- +-$'
	assert_line --partial '21 common tensors, 0 differ'
	mktuned --drop lm_head.weight base dropped
	run -1 lora-diff -m base --tuned dropped
	assert_line 'only in base: lm_head.weight'
	run -1 lora-diff -q -m dropped --tuned base
	assert_output ''
}

@test "-m/--tuned: trouble is exit 2" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 1 --vocab 256 other >/dev/null
	run -2 --separate-stderr lora-diff -m base --tuned other
	assert_output ''
	assert_equal "$stderr" "lora-diff: tensor 'model.layers.0.self_attn.k_proj.weight': shape 32x64 in base but 16x64 in other"
	run -2 --separate-stderr lora-diff -m base --tuned nope
	assert_equal "$stderr" "lora-diff: nope: No such file or directory"
	head -c 3000 base/model.safetensors > cut.safetensors
	run -2 --separate-stderr lora-diff -m base --tuned cut.safetensors
	assert_regex "$stderr" '^lora-diff: cut\.safetensors: '
}

# ---- an adapter against a fine-tune ----

@test "an adapter against W_tuned - W_base: the truncation error and cosine, by hand" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	mktuned --plant q_proj=4,2,1 base tuned
	lora-svd -q -m base --tuned tuned -t q_proj -r 3 --method exact -o r3.lora
	run -0 lora-diff --tol 1e-5 -m base --tuned tuned r3.lora
	assert_line --regexp '^model\.layers\.0\.self_attn\.q_proj +64x64 +3/- +4\.5826 +4\.5826 +[0-9.]+e-0[6-9] +1$'
	assert_line '2 layers, 0 differ (*, tolerance 1e-05), 0 changed tensors not in r3.lora'
	# rank 1 keeps 4 of 4, 2, 1: error sqrt(5/21), cosine 4/sqrt(21)
	lora-svd -q -m base --tuned tuned -t q_proj -r 1 --method exact -o r1.lora
	run -1 lora-diff --json -m base --tuned tuned r1.lora
	approx "$(jq '.layers[1].rel_diff' <<<"$output")" "$(calc 'sqrt(5 / 21)')" 1e-5
	approx "$(jq '.layers[1].cosine' <<<"$output")" "$(calc '4 / sqrt(21)')" 1e-5
	approx "$(jq '.layers[1].norm_b' <<<"$output")" "$(calc 'sqrt(21)')" 1e-5
	assert_equal "$(jq -c '[.a, .b, .base, .tuned, .layers[1].rank_b, .only_in_b]' <<<"$output")" \
		'["r1.lora","tuned - base","base","tuned",null,[]]'
}

@test "an adapter against a fine-tune: changed weights it does not cover are listed" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	mktuned --plant q_proj=4,2,1 --plant layers.1.self_attn.v_proj=1 base tuned
	lora-svd -q -m base --tuned tuned -t q_proj -r 3 --method exact -o r3.lora
	run -1 lora-diff --tol 1e-5 -m base --tuned tuned r3.lora
	assert_line 'changed in tuned, not in r3.lora: model.layers.1.self_attn.v_proj.weight'
	assert_line '2 layers, 0 differ (*, tolerance 1e-05), 1 changed tensors not in r3.lora'
	run -0 lora-diff -q --tol 1e-5 -m base --tuned tuned -t q_proj r3.lora
}

@test "an adapter against a fine-tune: layers without their weight are trouble" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	mktuned --plant q_proj=4,2,1 base tuned
	run -2 --separate-stderr lora-diff -m base --tuned tuned a.lora
	assert_equal "$stderr" "lora-diff: layer 'w' of a.lora: no tensor 'w.weight' in base"
	lora-init --shape model.layers.0.self_attn.q_proj=64x32 -r 2 -o s.lora
	run -2 --separate-stderr lora-diff -m base --tuned tuned s.lora
	assert_equal "$stderr" "lora-diff: layer 'model.layers.0.self_attn.q_proj': shape 64x32 in s.lora but 64x64 in base"
}
