#!/usr/bin/env bats
# lora-svd: every promise of lora-svd(1), against planted spectra.

setup() {
	load test_helper/common-setup
	_common_setup
	# q 64x64, k/v 32x64, mlp 128; the difference is planted on every q_proj
	# (4, 2, 1, 0.5) and on layer 1's down_proj (64x128: 3 ... 0.5); the other
	# eleven linear weights are copied bit for bit.
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	mktuned --plant self_attn.q_proj=4,2,1,0.5 --plant layers.1.mlp.down_proj=3,2.5,2,1.5,1,0.5 base tuned
}

# approx GOT WANT TOL: |GOT - WANT| <= TOL
approx() {
	awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }' ||
		fail "got $1, want $2 (+- $3)"
}

# calc EXPR: awk arithmetic, printed to 17 digits
calc() { awk "BEGIN { printf \"%.17g\", $1 }"; }

Q0=model.layers.0.self_attn.q_proj
D1=model.layers.1.mlp.down_proj
Q1=model.layers.1.self_attn.q_proj

@test "lora-svd -h and --version" {
	run -0 --separate-stderr lora-svd -h
	assert_line --index 0 'Usage: lora-svd -m BASE --tuned TUNED (-r R | --energy E) [options] [-o OUT]'
	assert_line --index 1 '   or: lora-svd [ADAPTER|-] (-r R | --energy E) [options] [-o OUT]'
	assert_output --partial '--power-iters Q'
	assert_equal "$stderr" ''
	run -0 lora-svd --version
	assert_output 'lora-svd 0.1.0'
}

@test "an unknown option is a usage error, exit 2" {
	run -2 --separate-stderr lora-svd --bogus
	assert_output ''
	assert_equal "${stderr_lines[0]}" "lora-svd: unknown option '--bogus'"
}

@test "usage errors name the problem, exit 2, nothing written" {
	mkplanted w=8x8x2:1,1 > a.lora
	check() {
		local want=$1; shift
		run -2 --separate-stderr lora-svd "$@" -o out.lora
		assert_equal "${stderr_lines[0]}" "lora-svd: $want"
		assert_file_not_exists out.lora
	}
	check 'need -r R or --energy E' -m base --tuned tuned
	check '-r and --energy are exclusive' -m base --tuned tuned -r 2 --energy 0.5
	check "--energy: '1.5' is not in (0, 1]" a.lora --energy 1.5
	check "--energy: '0' is not in (0, 1]" a.lora --energy 0
	check "--rank: '0' is not an integer in [1, 1073741824]" a.lora -r 0
	check '-m BASE needs --tuned TUNED' -m base -r 2
	check '--tuned TUNED needs -m BASE' --tuned tuned -r 2
	check "unexpected operand 'a.lora' with -m and --tuned" -m base --tuned tuned -r 2 a.lora
	check '--max-rank goes with --energy, not -r' a.lora -r 2 --max-rank 4
	check "--method: 'qr' is not randomized or exact" -m base --tuned tuned -r 2 --method qr
	check '--oversample, --power-iters and --seed go with --method randomized' -m base --tuned tuned -r 2 --method exact --seed 3
	check '--method goes with -m and --tuned (re-ranking is always exact)' a.lora -r 2 --method exact
	check '-t goes with -m and --tuned (re-ranking is always exact)' a.lora -r 2 -t q_proj
	check "one adapter at a time (got 'a.lora' and 'b.lora')" a.lora b.lora -r 2
	check "--dtype: 'f64' is not f32, f16 or bf16" a.lora -r 2 --dtype f64
	# the JSON report goes to standard output, so the adapter cannot
	run -2 --separate-stderr lora-svd a.lora -r 1 --json
	assert_equal "${stderr_lines[0]}" "lora-svd: --json writes the report to standard output: give -o FILE for the adapter"
	run -2 --separate-stderr lora-svd a.lora -r 1 --json -o -
	assert_equal "${stderr_lines[0]}" "lora-svd: --json writes the report to standard output: give -o FILE for the adapter"
	assert_output ''
}

@test "exact extraction stores the planted truncation: values, energy, error" {
	run -0 --separate-stderr lora-svd -m base --tuned tuned -r 2 --method exact --json -o x.lora
	assert_equal "$stderr" ''
	rep=$output
	assert_equal "$(jq -c '[.mode, .method, .dtype, .parameters, [.layers[].name], [.layers[].rank]]' <<<"$rep")" \
		"[\"extract\",\"exact\",\"f32\",$((2 * (64 + 64) * 2 + 2 * (64 + 128))),[\"$Q0\",\"$D1\",\"$Q1\"],[2,2,2]]"
	# q: 16+4+1+0.25 = 21.25; down: 9+6.25+4+2.25+1+0.25 = 22.75
	approx "$(jq '.layers[0].energy' <<<"$rep")" "$(calc '20 / 21.25')" 1e-6
	approx "$(jq '.layers[0].rel_error' <<<"$rep")" "$(calc 'sqrt(1.25 / 21.25)')" 1e-6
	approx "$(jq '.layers[0].norm' <<<"$rep")" "$(calc 'sqrt(21.25)')" 1e-5
	approx "$(jq '.layers[1].energy' <<<"$rep")" "$(calc '15.25 / 22.75')" 1e-6
	approx "$(jq '.layers[1].rel_error' <<<"$rep")" "$(calc 'sqrt(7.5 / 22.75)')" 1e-6
	assert_equal "$(jq '.skipped | length' <<<"$rep")" 11
	assert_equal "$(jq -r '.skipped[0]' <<<"$rep")" model.layers.0.mlp.down_proj
	# the adapter: singular values 4, 2 and 3, 2.5 at scale 1 (alpha = rank)
	run -0 lora-inspect --json --stats x.lora
	for i in 0 2; do
		approx "$(jq ".layers[$i].singular_values[0]" <<<"$output")" 4 2e-5
		approx "$(jq ".layers[$i].singular_values[1]" <<<"$output")" 2 2e-5
	done
	approx "$(jq '.layers[1].singular_values[0]' <<<"$output")" 3 2e-5
	approx "$(jq '.layers[1].singular_values[1]' <<<"$output")" 2.5 2e-5
	assert_equal "$(jq -c '[.scales, .alphas, .targets, .base_model.name, .provenance.method]' <<<"$output")" \
		'[[{"scale":1,"layers":3}],[{"alpha":2,"layers":3}],["all-linear"],"tiny-llama","exact"]'
	assert_equal "$(jq -r .base_model.fingerprint <<<"$output")" "$(lora-inspect --json base | jq -r .fingerprint)"
}

@test "the text report: one row per layer, skipped tensors, a summary" {
	run -0 --separate-stderr lora-svd -m base --tuned tuned -r 2 --method exact -o x.lora
	assert_equal "${stderr_lines[0]}" 'layer                              out x in rank    energy  rel.error'
	assert_regex "${stderr_lines[1]}" '^model\.layers\.0\.self_attn\.q_proj +64x64 +2  0\.94117[67]  2\.425e-01$'
	assert_regex "${stderr_lines[2]}" '^model\.layers\.1\.mlp\.down_proj +64x128 +2  0\.6703(29|3[01])  5\.742e-01$'
	assert_regex "${stderr_lines[4]}" '^skipped \(no difference\): model\.layers\.0\.mlp\.down_proj model\.layers\.0\.mlp\.gate_proj .* model\.layers\.1\.self_attn\.v_proj$'
	assert_equal "${stderr_lines[5]}" '3 layers, 896 parameters, f32, exact SVD, 11 skipped'
	run -0 --separate-stderr lora-svd -q -m base --tuned tuned -r 2 -o y.lora
	assert_equal "$stderr" ''
}

@test "randomized extraction equals exact on a low-rank difference" {
	lora-svd -q -m base --tuned tuned -r 3 --method exact -o e.lora
	lora-svd -q -m base --tuned tuned -r 3 -o r.lora
	run -0 lora-diff --tol 2e-6 e.lora r.lora
	# without oversampling or power iterations a sketch of the exact rank still suffices
	lora-svd -q -m base --tuned tuned -r 4 -t q_proj --method exact -o e4.lora
	lora-svd -q -m base --tuned tuned -r 4 -t q_proj --power-iters 0 --oversample 0 -o r0.lora
	run -0 lora-diff --tol 1e-5 e4.lora r0.lora
}

@test "randomized error is within 1% of the optimal truncation error at the defaults" {
	# full-rank noise under the planted spectrum: the tail is no longer zero
	mktuned --plant self_attn.q_proj=4,2,1,0.5 --plant layers.1.mlp.down_proj=3,2.5,2,1.5,1,0.5 --noise 0.02 base noisy
	lora-svd -m base --tuned noisy -r 3 --method exact --json -o e.lora >e.json
	lora-svd -m base --tuned noisy -r 3 --json -o r.lora >r.json
	for i in 0 1 2; do
		e=$(jq ".layers[$i].rel_error" e.json) r=$(jq ".layers[$i].rel_error" r.json)
		awk -v e="$e" -v r="$r" 'BEGIN { exit !(e > 0.05 && r <= 1.01 * e && r >= e * (1 - 1e-6)) }' ||
			fail "layer $i: randomized $r vs exact $e"
	done
}

@test "the same seed gives the same bytes; the seed is recorded" {
	mktuned --plant q_proj=4,2,1 --noise 0.01 base noisy
	lora-svd -q -m base --tuned noisy -r 4 --seed 7 -o a.lora
	lora-svd -q -m base --tuned noisy -r 4 --seed 7 > b.lora
	cmp a.lora b.lora
	assert_equal "$(lora-inspect --json a.lora | jq -c '.provenance | [.seed, .oversample, .power_iters]')" '[7,10,2]'
}

@test "--energy chooses the rank per layer; --max-rank caps it" {
	for m in exact randomized; do
		run -0 --separate-stderr lora-svd -m base --tuned tuned --energy 0.9 --method $m --json -o e-$m.lora
		# q: 20/21.25 = 0.941 at 2; down: 21.5/22.75 = 0.945 at 4 (19.25/22.75 = 0.846 at 3)
		assert_equal "$(jq -c '[.layers[].rank]' <<<"$output")" '[2,4,2]'
		approx "$(jq '.layers[1].energy' <<<"$output")" "$(calc '21.5 / 22.75')" 1e-6
		assert_equal "$(lora-inspect --json e-$m.lora | jq -c '.ranks')" '[{"rank":2,"layers":2},{"rank":4,"layers":1}]'
	done
	run -0 --separate-stderr lora-svd -m base --tuned tuned --energy 0.9 --max-rank 3 --json -o c.lora
	assert_equal "$(jq -c '[.layers[].rank]' <<<"$output")" '[2,3,2]'
	run -0 --separate-stderr lora-svd -m base --tuned tuned --energy 1 --method exact --json -o all.lora
	assert_equal "$(jq -c '[.layers[].rank] | map(. >= 4)' <<<"$output")" '[true,true,true]'
}

@test "--energy grows the randomized sketch past 32 directions" {
	mktuned --plant layers.0.mlp.up_proj=$(printf '1,%.0s' $(seq 39))1 base flat
	run -0 --separate-stderr lora-svd -m base --tuned flat --energy 0.999 --json -o f.lora
	assert_equal "$(jq -c '[.layers[] | [.name, .rank]]' <<<"$output")" '[["model.layers.0.mlp.up_proj",40]]'
	approx "$(jq '.layers[0].rel_error' <<<"$output")" 0 1e-5
}

@test "targets: suffixes, regex and block selection" {
	run -0 --separate-stderr lora-svd -m base --tuned tuned -r 1 -t q_proj --json -o a.lora
	assert_equal "$(jq -c '[[.layers[].name], .skipped]' <<<"$output")" "[[\"$Q0\",\"$Q1\"],[]]"
	assert_equal "$(lora-inspect --json a.lora | jq -c .targets)" '["q_proj"]'
	run -0 --separate-stderr lora-svd -m base --tuned tuned -r 1 --layers 1 --json -o b.lora
	assert_equal "$(jq -c '[.layers[].name]' <<<"$output")" "[\"$D1\",\"$Q1\"]"
	run -0 --separate-stderr lora-svd -m base --tuned tuned -r 1 --target-regex '.*\.mlp\..*' --json -o c.lora
	assert_equal "$(jq -c '[[.layers[].name], (.skipped | length)]' <<<"$output")" "[[\"$D1\"],5]"
}

@test "a rank above min(out, in) is clamped: the layer is then exact" {
	mktuned --plant k_proj=$(seq -s, 32 -1 1) base wide
	run -0 --separate-stderr lora-svd -m base --tuned wide -r 40 -t k_proj --method exact --json -o k.lora
	assert_equal "$(jq -c '[.layers[].rank]' <<<"$output")" '[32,32]'
	approx "$(jq '.layers[0].rel_error' <<<"$output")" 0 1e-6
}

@test "sharded and single-file checkpoints give the same adapter" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --shard-bytes 60000 sbase >/dev/null
	mktuned --plant self_attn.q_proj=4,2,1,0.5 --plant layers.1.mlp.down_proj=3,2.5,2,1.5,1,0.5 --shard-bytes 50000 sbase stuned
	assert_file_exists stuned/model.safetensors.index.json
	lora-svd -q -m base --tuned tuned -r 3 -o a.lora
	lora-svd -q -m sbase/model.safetensors.index.json --tuned stuned -r 3 -o b.lora
	run -0 lora-diff --tol 0 a.lora b.lora
}

@test "bf16 and f32 checkpoints mix; --dtype rounds the factors and the report says so" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --dtype bf16 b16 >/dev/null
	mktuned --plant q_proj=4,2 --dtype f32 b16 t32
	run -0 --separate-stderr lora-svd -m b16 --tuned t32 -r 2 --json -o x.lora
	approx "$(jq '.layers[0].rel_error' <<<"$output")" 0 1e-5
	run -0 lora-inspect --json --stats x.lora
	approx "$(jq '.layers[0].singular_values[0]' <<<"$output")" 4 2e-5
	run -0 --separate-stderr lora-svd -m b16 --tuned t32 -r 2 --dtype bf16 --json -o y.lora
	awk -v e="$(jq '.layers[0].rel_error' <<<"$output")" 'BEGIN { exit !(e > 1e-4 && e < 1e-2) }'
	assert_equal "$(lora-inspect --json y.lora | jq -r .dtype)" bf16
}

@test "missing, truncated and mismatched checkpoints: one line naming file and tensor, exit 1" {
	run -1 --separate-stderr lora-svd -m nope --tuned tuned -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: nope: No such file or directory"
	run -1 --separate-stderr lora-svd -m base --tuned nope/ -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: nope/: No such file or directory"
	head -c 5000 tuned/model.safetensors > cut.safetensors
	run -1 --separate-stderr lora-svd -m base --tuned cut.safetensors -r 2 -o x.lora
	assert_regex "$stderr" "^lora-svd: cut\.safetensors: tensor '.*': data_offsets .* run past the end of the [0-9]+-byte data section$"
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 1 --vocab 256 other >/dev/null
	run -1 --separate-stderr lora-svd -m base --tuned other -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: tensor 'model.layers.0.self_attn.k_proj.weight': shape 32x64 in base but 16x64 in other"
	mktuned --drop model.layers.1.self_attn.q_proj.weight base dropped
	run -1 --separate-stderr lora-svd -m base --tuned dropped -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: dropped: no tensor 'model.layers.1.self_attn.q_proj.weight' (it is in base)"
	assert_file_not_exists x.lora
}

@test "nothing selected, nothing different, a 1-D target, an infinite difference" {
	run -1 --separate-stderr lora-svd -m base --tuned tuned -r 2 -t nothing -o x.lora
	assert_equal "$stderr" "lora-svd: base: no tensor matches the targets"
	run -1 --separate-stderr lora-svd -m base --tuned base -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: base and base do not differ in any target tensor"
	run -1 --separate-stderr lora-svd -m base --tuned tuned -r 2 -t input_layernorm -o x.lora
	assert_equal "$stderr" "lora-svd: base: tensor 'model.layers.0.input_layernorm.weight' is 1-D; only 2-D linear weights can be adapted"
	mktuned --plant layers.1.self_attn.q_proj=1e42 base inf
	run -1 --separate-stderr lora-svd -m base --tuned inf -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: tensor 'model.layers.1.self_attn.q_proj.weight': the difference of inf and base is not finite"
	assert_file_not_exists x.lora
}

@test "an existing output needs -f; a terminal is refused before any work" {
	touch x.lora
	run -1 --separate-stderr lora-svd -m base --tuned tuned -r 2 -o x.lora
	assert_equal "$stderr" "lora-svd: x.lora: already exists (use -f to overwrite)"
	run -0 lora-svd -q -m base --tuned tuned -r 2 -f -o x.lora
	run -0 script -qec "lora-svd -m base --tuned tuned -r 2; echo status=\$?" /dev/null
	assert_output --partial "lora-svd: refusing to write binary data to a terminal; use -o FILE or a pipe"
	assert_output --partial "status=2"
	refute_output --partial "layer"
}

# ---- re-ranking ----

@test "re-rank lower: the optimal truncation, scale folded in" {
	# s B A with s = 6/4 = 1.5 and singular values 4, 3, 2, 1 in a random basis
	mkplanted --alpha 6 w=20x30x4:4,3,2,1 > p.lora
	run -0 --separate-stderr lora-svd -r 2 p.lora --json -o r.lora
	assert_equal "$(jq -c '[.mode, .layers[0].old_rank, .layers[0].rank]' <<<"$output")" '["rerank",4,2]'
	# (1.5 s)^2 = 36, 20.25, 9, 2.25 of 67.5
	approx "$(jq '.layers[0].energy' <<<"$output")" "$(calc '56.25 / 67.5')" 1e-7
	approx "$(jq '.layers[0].rel_error' <<<"$output")" "$(calc 'sqrt(11.25 / 67.5)')" 1e-7
	approx "$(jq '.layers[0].norm' <<<"$output")" "$(calc 'sqrt(67.5)')" 1e-5
	run -0 lora-inspect --json --stats r.lora
	assert_equal "$(jq -c '[.layers[0].rank, .layers[0].alpha, .layers[0].scale]' <<<"$output")" '[2,2,1]'
	approx "$(jq '.layers[0].singular_values[0]' <<<"$output")" 6 1e-5
	approx "$(jq '.layers[0].singular_values[1]' <<<"$output")" 4.5 1e-5
	# the measured difference to the original is the truncation error
	run -1 lora-diff --json p.lora r.lora
	approx "$(jq '.layers[0].rel_diff' <<<"$output")" "$(calc 'sqrt(11.25 / 67.5)')" 1e-6
}

@test "re-rank at equal or higher rank preserves the update" {
	mkplanted --alpha 6 w=20x30x4:4,3,2,1 u=16x8x3:1,0.5,0.25 > p.lora
	for r in 4 6 50; do
		run -0 --separate-stderr lora-svd -r $r p.lora --json -o r$r.lora
		approx "$(jq '.layers[0].rel_error' <<<"$output")" 0 1e-6
		run -0 lora-diff p.lora r$r.lora
	done
	# the smaller side bounds the rank: 20 for w, 8 for u
	assert_equal "$(lora-inspect --json r50.lora | jq -c '[.layers[].rank]')" '[20,8]'
	assert_equal "$(lora-inspect --json r6.lora | jq -c '[.layers[].rank]')" '[6,6]'
}

@test "re-rank folds rsLoRA and negative scales" {
	mkplanted --rslora --alpha -8 w=20x30x4:4,3,2,1 > p.lora
	lora-svd -q -r 4 p.lora -o r.lora
	run -0 lora-diff --json p.lora r.lora
	approx "$(jq '.layers[0].cosine' <<<"$output")" 1 1e-9
	assert_equal "$(lora-inspect --json r.lora | jq -c '[.scaling, .scales]')" '["standard",[{"scale":1,"layers":1}]]'
}

@test "re-rank by energy; a zero update keeps rank 1" {
	mkplanted --alpha 6 w=20x30x4:4,3,2,1 > p.lora
	run -0 --separate-stderr lora-svd --energy 0.8 p.lora --json -o a.lora
	assert_equal "$(jq '.layers[0].rank' <<<"$output")" 2
	run -0 --separate-stderr lora-svd --energy 0.9 p.lora --json -o b.lora
	assert_equal "$(jq '.layers[0].rank' <<<"$output")" 3
	lora-init --shape w=16x16 --shape v=8x16 -r 4 -o z.lora
	run -0 --separate-stderr lora-svd --energy 0.5 z.lora --json -o zz.lora
	assert_equal "$(jq -c '[.layers[] | [.rank, .energy, .rel_error, .norm]]' <<<"$output")" '[[1,1,0,0],[1,1,0,0]]'
}

@test "--energy at an exact tie keeps the smallest rank that reaches E, as lora-svd(1) says" {
	# singular values 4, 2, 2, 2, 2: energies 16, 4, 4, 4, 4 of 32, exact in binary
	mkadapter w=9x7x5:4,2,-2,2,2 > t.lora
	for e in 0.5:1 0.625:2 0.75:3 0.875:4 1:5; do
		lora-svd -q -f --energy ${e%:*} t.lora -o r.lora
		assert_equal "$(lora-inspect --json r.lora | jq '.layers[0].rank')" "${e#*:}"
		lora-merge -f --combine svd --energy ${e%:*} t.lora -o c.lora
		assert_equal "$(lora-inspect --json c.lora | jq '.layers[0].rank')" "${e#*:}"
	done
}

@test "re-ranking an extraction equals extracting at the lower rank" {
	lora-svd -q -m base --tuned tuned -r 4 --method exact -o r4.lora
	lora-svd -q -m base --tuned tuned -r 2 --method exact -o r2.lora
	lora-svd -q -r 2 r4.lora -o rr2.lora
	run -0 lora-diff --tol 1e-5 r2.lora rr2.lora
}

@test "re-rank reads standard input; the dtype follows the input unless asked" {
	mkplanted --dtype f16 w=20x30x4:4,3,2,1 > p.lora
	lora-svd -q -r 2 < p.lora > a.lora
	cat p.lora | lora-svd -q -r 2 - -o b.lora
	cmp a.lora b.lora
	assert_equal "$(lora-inspect --json a.lora | jq -r '[.dtype, .provenance.input] | join(" ")')" 'f16 -'
	lora-svd -q -r 2 --dtype f32 p.lora -o c.lora
	assert_equal "$(lora-inspect --json c.lora | jq -r .dtype)" f32
	# bf16 rounding is measured on the stored factors, even at full rank
	run -0 --separate-stderr lora-svd -r 4 --dtype bf16 --json p.lora -o d.lora
	awk -v e="$(jq '.layers[0].rel_error' <<<"$output")" 'BEGIN { exit !(e > 1e-4 && e < 1e-2) }'
}

@test "re-rank keeps the base model and targets, records where it came from" {
	lora-svd -q -m base --tuned tuned -r 3 -t q_proj -o x.lora
	lora-svd -q -r 1 x.lora -o y.lora
	run -0 lora-inspect --json y.lora
	assert_equal "$(jq -c '[.targets, .base_model.name, .provenance.input, .provenance.rank, .provenance.from.tuned]' <<<"$output")" \
		'[["q_proj"],"tiny-llama","x.lora",1,"tuned"]'
	run -0 --separate-stderr lora-svd -r 1 x.lora -o z.lora
	assert_equal "${stderr_lines[0]}" 'layer                              out x in      rank    energy  rel.error'
	assert_regex "${stderr_lines[1]}" '^model\.layers\.0\.self_attn\.q_proj +64x64 +3->1  0\.76190[0-9]  4\.8[78][0-9]e-01$'
	assert_equal "${stderr_lines[3]}" '2 layers, 256 parameters, f32'
}

@test "re-rank: missing, truncated and non-.lora inputs" {
	run -1 --separate-stderr lora-svd -r 2 nope.lora -o x.lora
	assert_equal "$stderr" "lora-svd: nope.lora: No such file or directory"
	mkplanted w=20x30x4:4,3,2,1 > p.lora
	size=$(stat -c %s p.lora)
	head -c $((size - 1)) p.lora > t.lora
	run -1 --separate-stderr lora-svd -r 2 t.lora -o x.lora
	assert_equal "$stderr" "lora-svd: t.lora: truncated: header promises $size bytes, file has $((size - 1))"
	run -1 --separate-stderr lora-svd -r 2 - -o x.lora < <(head -c 100 p.lora)
	assert_regex "$stderr" '^lora-svd: standard input: truncated'
	run -1 --separate-stderr lora-svd -r 2 - -o x.lora </dev/null
	assert_equal "$stderr" "lora-svd: standard input: not a .lora file (bad magic)"
	assert_file_not_exists x.lora
}

@test "re-rank a PEFT directory: DoRA magnitudes and biases are kept, the update too" {
	mkpeft --dora --lora-bias --rslora --alpha 16 p q=16x12x4:4,3,2,1
	run -0 --separate-stderr lora-svd -r 4 p --json -o r.lora
	assert_equal "$(jq -c '[.layers[0].old_rank, .layers[0].rank, .layers[0].rel_error]' <<<"$output")" '[4,4,0]'
	run -0 lora-diff p r.lora
	assert_equal "$(lora-inspect --json r.lora | jq -c '[.dora_layers, .bias_layers, .scaling, .provenance.input]')" \
		'[1,1,"standard","p"]'
}
