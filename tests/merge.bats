#!/usr/bin/env bats
# lora-merge: every promise of lora-merge(1), checked by recomputing each
# merged tensor independently (tests/tools/checkmerge.c).

setup() {
	load test_helper/common-setup
	_common_setup
	M="--hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256"
	mkmodel $M model >/dev/null
	mkadapter model.layers.0.self_attn.q_proj=64x64x2:0.5,-0.25 \
		model.layers.1.mlp.down_proj=64x128x1:0.1 model.layers.1.self_attn.v_proj=32x64x3:0.3,0.2,0.1 > a.lora
	mkadapter --alpha 4 model.layers.0.self_attn.q_proj=64x64x1:0.7 > b.lora
}

@test "lora-merge -h, --version, unknown option" {
	run -0 lora-merge -h
	assert_line --index 0 'Usage: lora-merge -m MODEL ADAPTER[:SCALE]... -o OUT [options]'
	assert_line --index 1 '   or: lora-merge --combine cat|svd ADAPTER[:SCALE]... [-o OUT] [options]'
	run -0 lora-merge --version
	assert_output 'lora-merge 0.1.0'
	run -2 --separate-stderr lora-merge --bogus
	assert_equal "${stderr_lines[0]}" "lora-merge: unknown option '--bogus'"
}

@test "usage errors: no model, no adapter, no output" {
	run -2 --separate-stderr lora-merge a.lora -o out
	assert_equal "${stderr_lines[0]}" "lora-merge: need -m MODEL (or --combine cat|svd)"
	run -2 --separate-stderr lora-merge -m model -o out
	assert_equal "${stderr_lines[0]}" "lora-merge: need at least one ADAPTER"
	run -2 --separate-stderr lora-merge -m model a.lora
	assert_equal "${stderr_lines[0]}" "lora-merge: need -o OUT"
	run -2 --separate-stderr lora-merge -m model a.lora -o out --dtype f8
	assert_equal "${stderr_lines[0]}" "lora-merge: --dtype: 'f8' is not keep, f32, f16, bf16 or q8_0"
}

@test "f32 model directory: adapted tensors equal W + s*B*A, the rest byte for byte" {
	run -0 lora-merge -m model a.lora -o out
	assert_output ''
	run -0 checkmerge model out a.lora
	assert_output --regexp '^ok 21 tensors, 3 adapted'
	cmp model/config.json out/config.json
	# the checker notices a wrong scale, a missing adapter, and an untouched base
	run -1 checkmerge model out a.lora:0.999
	run -1 checkmerge model out a.lora b.lora
	run -1 checkmerge model model a.lora
}

@test "f16 and bf16 single files: the sum in f32, rounded once" {
	for t in f16 bf16; do
		mkmodel $M --dtype $t m$t >/dev/null
		lora-merge -m m$t/model.safetensors a.lora:0.5 b.lora:-2 -o $t.safetensors
		run -0 checkmerge m$t/model.safetensors $t.safetensors a.lora:0.5 b.lora:-2
		assert_output --regexp '^ok 21 tensors, 3 adapted, max ulp 0\.[0-9]+$'
		assert_equal "$(lora-inspect --json $t.safetensors | jq -c '.dtypes | keys')" "[\"$t\"]"
	done
}

@test "a sharded bf16 checkpoint keeps its layout, index, metadata and other files" {
	mkmodel $M --dtype bf16 --shard-bytes 40000 sh >/dev/null
	echo '{"bos_token_id": 1}' > sh/generation_config.json
	echo tokenizer > sh/tokenizer.model
	run -0 lora-merge -m sh a.lora:2 -o out
	assert_equal "$(ls out)" "$(ls sh)"
	run -0 checkmerge sh out a.lora:2
	assert_output --regexp '^ok 21 tensors, 3 adapted'
	assert_equal "$(jq -S . out/model.safetensors.index.json)" "$(jq -S . sh/model.safetensors.index.json)"
	cmp sh/tokenizer.model out/tokenizer.model
	cmp sh/generation_config.json out/generation_config.json
	# shard metadata is kept
	for f in sh/model-*.safetensors; do
		assert_equal "$(head -c 200 "out/${f#sh/}" | grep -o '"__metadata__":{[^}]*}')" \
			"$(head -c 200 "$f" | grep -o '"__metadata__":{[^}]*}')"
	done
}

@test "--dtype converts every float tensor and updates the index total_size" {
	mkmodel $M --dtype f32 --shard-bytes 60000 sh >/dev/null
	run -0 lora-merge -m sh a.lora --dtype bf16 -o out
	run -0 checkmerge sh out a.lora
	assert_output --regexp '^ok 21 tensors'
	assert_equal "$(lora-inspect --json out | jq -c '.dtypes | keys')" '["bf16"]'
	half=$(( $(jq .metadata.total_size sh/model.safetensors.index.json) / 2 ))
	assert_equal "$(jq .metadata.total_size out/model.safetensors.index.json)" "$half"
	assert_equal "$(jq -c .weight_map out/model.safetensors.index.json)" "$(jq -c .weight_map sh/model.safetensors.index.json)"
}

@test "merge then --subtract gives back the base within one rounding step" {
	mkmodel $M --dtype bf16 b16 >/dev/null
	lora-merge -m b16 a.lora:0.5 b.lora -o merged
	lora-merge -m merged a.lora:0.5 b.lora --subtract -o back
	run -0 checkmerge --subtract merged back a.lora:0.5 b.lora
	run -0 checkmerge --restored b16 back merged
	lora-merge -m model a.lora -o m32
	lora-merge -m m32 a.lora --subtract -o b32
	run -0 checkmerge --restored model b32 m32
}

@test "a shape mismatch names adapter, tensor and both shapes; nothing is written" {
	mkadapter model.layers.0.self_attn.k_proj=64x64x1:1 > bad.lora
	run -1 --separate-stderr lora-merge -m model a.lora bad.lora -o out
	assert_output ''
	assert_equal "$stderr" "lora-merge: bad.lora: tensor 'model.layers.0.self_attn.k_proj.weight': shape 32x64 in model does not match the adapter (64x64)"
	assert_file_not_exists out
	assert_equal "$(ls -A | grep -c '^\.')" 0
}

@test "an adapter layer with no tensor in the model is an error" {
	mkadapter model.layers.9.self_attn.q_proj=64x64x1:1 > far.lora
	run -1 --separate-stderr lora-merge -m model far.lora -o out
	assert_equal "$stderr" "lora-merge: far.lora: layer 'model.layers.9.self_attn.q_proj': no tensor 'model.layers.9.self_attn.q_proj.weight' in model"
	assert_file_not_exists out
}

@test "missing model, missing and truncated adapters" {
	run -1 --separate-stderr lora-merge -m nope a.lora -o out
	assert_equal "$stderr" "lora-merge: nope: No such file or directory"
	run -1 --separate-stderr lora-merge -m model nope.lora -o out
	assert_equal "$stderr" "lora-merge: nope.lora: No such file or directory"
	head -c 100 a.lora > t.lora
	run -1 --separate-stderr lora-merge -m model t.lora -o out
	assert_regex "$stderr" "^lora-merge: t\.lora: truncated"
	assert_file_not_exists out
}

@test "an adapter can come from a pipe, and PATH:SCALE parses the last colon" {
	cp a.lora 'odd:name.lora'
	lora-merge -m model - 'odd:name.lora:-1' -o out < a.lora
	run -0 checkmerge model out a.lora:0
	assert_output --regexp '^ok 21 tensors'
}

@test "an existing output needs -f; -f replaces it whole" {
	mkdir out && touch out/stale
	run -1 --separate-stderr lora-merge -m model a.lora -o out
	assert_equal "$stderr" "lora-merge: out: already exists (use -f to overwrite)"
	lora-merge -f -m model a.lora -o out
	assert_file_not_exists out/stale
	run -0 checkmerge model out a.lora
	lora-merge -m model/model.safetensors a.lora -o one.safetensors
	run -1 --separate-stderr lora-merge -m model/model.safetensors a.lora -o one.safetensors
	assert_equal "$stderr" "lora-merge: one.safetensors: already exists (use -f to overwrite)"
}

@test "-f never replaces what it cannot put back: a link, a file where a directory goes; subdirectories go whole" {
	mkdir -p out/keep && touch out/stale out/keep/x && ln -s /etc/hostname out/keep/link
	run -1 --separate-stderr lora-merge -f -m model a.lora -o out
	assert_equal "$stderr" "lora-merge: out/keep: holds 'link', which is not a regular file and would be lost; not replacing it"
	assert_file_exists out/keep/x
	assert_file_exists out/stale
	rm out/keep/link && ln -s /etc/hostname out/link
	run -1 --separate-stderr lora-merge -f -m model a.lora -o out
	assert_equal "$stderr" "lora-merge: out: holds 'link', which is not a regular file and would be lost; not replacing it"
	touch plain
	run -1 --separate-stderr lora-merge -f -m model a.lora -o plain
	assert_equal "$stderr" "lora-merge: plain: exists and is not a directory"
	assert_equal "$(ls -A | grep -v '^separate-stderr-')" "$(printf 'a.lora\nb.lora\nmodel\nout\nplain')"
	# a directory of regular files and directories (what a merge writes) is
	# replaced whole: nothing of it stays, hidden or not
	rm out/link
	lora-merge -f -m model a.lora -o out
	run -0 checkmerge model out a.lora
	assert_file_not_exists out/keep
	assert_equal "$(ls -A | grep -v '^separate-stderr-')" "$(printf 'a.lora\nb.lora\nmodel\nout\nplain')"
}

@test "the output never overwrites the input" {
	run -2 --separate-stderr lora-merge -f -m model a.lora -o model
	assert_equal "$stderr" "lora-merge: model: output would overwrite the input model"
	run -2 --separate-stderr lora-merge -f -m model/model.safetensors a.lora -o model/model.safetensors
	assert_equal "$stderr" "lora-merge: model/model.safetensors: output would overwrite the input model"
	run -0 lora-inspect model
}

@test "an interrupted merge leaves no output and no temporary files" {
	mkmodel --hidden 1024 --inter 2816 --layers 4 --heads 8 --vocab 8192 big >/dev/null
	lora-init -m big -r 16 -o big.lora
	for sig in TERM INT HUP KILL; do
		lora-merge -m big big.lora -o out &
		pid=$!
		# strike while the output is being written: once its temporary directory exists
		for i in $(seq 2000); do compgen -G '.out.*' >/dev/null && break; sleep 0.002; done
		kill -$sig $pid
		st=0
		wait $pid || st=$?
		assert_equal "$st" "$((128 + $(kill -l $sig)))"
		assert_file_not_exists out
		# SIGKILL cannot be caught: its temporary directory stays, hidden, never at OUT
		[ $sig = KILL ] || assert_equal "$(ls -A | grep -c '^\.out\.')" 0
	done
}

@test "progress goes to stderr only on a terminal" {
	run -0 script -qec "lora-merge -m model a.lora -o out" /dev/null
	assert_output --partial "lora-merge: 3 tensors merged into out"
	run -0 --separate-stderr lora-merge -m model a.lora -o out2
	assert_equal "$stderr" ''
	run -0 script -qec "lora-merge -q -m model a.lora -o out3" /dev/null
	assert_output ''
}

@test "PEFT adapters: rsLoRA, rank_pattern and alpha_pattern scale each layer as PEFT does" {
	mkpeft --rslora --r 4 --alpha 8 --rank-pattern q_proj=2 --alpha-pattern 'layers.1.self_attn.v_proj=3' peft \
		model.layers.0.self_attn.q_proj=64x64x2 model.layers.1.self_attn.v_proj=32x64x4 >/dev/null
	lora-merge -m model peft:0.5 -o out
	run -0 checkmerge model out peft:0.5
	assert_output --regexp '^ok 21 tensors, 2 adapted'
	# the scales checkmerge used: alpha/sqrt(r) per layer
	assert_equal "$(lora-inspect --json peft | jq -c '[.layers[] | .scale * 1e6 | round]')" \
		"[$(awk 'BEGIN { printf "%.0f,%.0f", 8 / sqrt(2) * 1e6, 3 / sqrt(4) * 1e6 }')]"
}

@test "PEFT fan_in_fan_out: the update is transposed" {
	# GPT-2 Conv1D layout: the adapter's out x in is 64x32, the stored weight [in, out] = 32x64
	mkpeft --fan-in-fan-out peft model.layers.0.self_attn.v_proj=64x32x2 >/dev/null
	lora-merge -m model peft -o out
	run -0 checkmerge model out peft
	assert_output --regexp '^ok 21 tensors, 1 adapted'
}

@test "PEFT DoRA: rows rescaled to the magnitude vector; it cannot be subtracted" {
	mkpeft --dora peft model.layers.0.self_attn.q_proj=64x64x2 model.layers.1.mlp.up_proj=128x64x2 >/dev/null
	lora-merge -m model peft -o out
	run -0 checkmerge model out peft
	assert_output --regexp '^ok 21 tensors, 2 adapted'
	run -1 --separate-stderr lora-merge -m out peft --subtract -o back
	assert_equal "$stderr" "lora-merge: peft: layer 'model.layers.0.self_attn.q_proj' is DoRA: its merge rescales rows and cannot be subtracted"
}

@test "PEFT lora_bias: the module's bias gains scale * B.bias" {
	mkmodel $M --qkv-bias qb >/dev/null
	mkpeft --lora-bias peft model.layers.1.self_attn.k_proj=32x64x2 >/dev/null
	lora-merge -m qb peft:2 -o out
	run -0 checkmerge qb out peft:2
	assert_output --regexp '^ok 27 tensors, 2 adapted'
	run -1 --separate-stderr lora-merge -m model peft -o out2
	assert_equal "$stderr" "lora-merge: peft: layer 'model.layers.1.self_attn.k_proj' has a lora_B bias but model has no 'model.layers.1.self_attn.k_proj.bias'"
}

@test "tensors that are not linear LoRA factors are named; --ignore-unknown skips them" {
	mkpeft --embedding model.embed_tokens=256x64x2 --extra base_model.model.lm_head.weight=F32:256x64 peft \
		model.layers.0.self_attn.q_proj=64x64x2 >/dev/null
	run -1 --separate-stderr lora-merge -m model peft -o out
	assert_regex "$stderr" "^lora-merge: peft: 3 tensors are not linear LoRA factors and cannot be merged \(--ignore-unknown skips them\): 'base_model\.model\..*'$"
	assert_regex "$stderr" "lm_head\.weight'"
	assert_regex "$stderr" "lora_embedding_A"
	assert_file_not_exists out
	lora-merge --ignore-unknown -m model peft -o out
	run -0 checkmerge model out peft
	assert_output --regexp '^ok 21 tensors, 1 adapted'
}

@test "a PEFT merge equals the merge of its .lora conversion" {
	mkpeft --dtype bf16 --r 4 --rank-pattern down_proj=2 peft model.layers.0.self_attn.q_proj=64x64x4 \
		model.layers.1.mlp.down_proj=64x128x2 >/dev/null
	lora-convert peft -o p.lora
	lora-merge -m model peft -o a
	lora-merge -m model p.lora -o b
	cmp a/model.safetensors b/model.safetensors
}

@test "the merged bytes do not depend on -j, at sizes where products and conversions run in parallel" {
	mkmodel --hidden 256 --inter 768 --layers 1 --heads 4 --vocab 256 --dtype bf16 --shard-bytes 600000 big >/dev/null
	lora-init -m big -t all-linear -r 16 -q -o init.lora
	specs=$(lora-inspect --json init.lora | jq -r '.layers[] | "\(.name)=\(.out)x\(.in)x16"')
	mkadapter --gaussian 3 $specs >dense.lora
	for j in 1 2 4; do lora-merge -j $j -m big dense.lora -o out$j; done
	run -0 checkmerge big out1 dense.lora
	assert_output --regexp '^ok [0-9]+ tensors, 7 adapted'
	diff -r out1 out2
	diff -r out1 out4
}

# nonfinite_model FILE I...: one f32 tensor w.weight, 1024 x 1280 (two
# slots of the output stream, each in pieces of the parallel scan), zeros
# but for infinities at indices I.
nonfinite_model() {
	local f=$1 h='{"w.weight":{"dtype":"F32","shape":[1024,1280],"data_offsets":[0,5242880]}}'
	shift
	while [ $(( ${#h} % 8 )) != 0 ]; do h+=' '; done
	printf "\\x$(printf %02x ${#h})\\x00\\x00\\x00\\x00\\x00\\x00\\x00%s" "$h" >"$f"
	head -c 5242880 /dev/zero >>"$f"
	for i in "$@"; do
		printf '\x00\x00\x80\x7f' | dd of="$f" bs=1 seek=$((8 + ${#h} + 4 * i)) conv=notrunc status=none
	done
}

@test "a merged value that is not finite: the first one is named, whichever thread finds it" {
	mkadapter w=1024x1280x1:0.5 >w.lora
	for c in "5 70000 1100000:5" "1200000 70000:70000" "1300000 1100000:1100000" "1310719:1310719"; do
		nonfinite_model w.safetensors ${c%:*}
		for j in 1 2 4; do
			run -1 --separate-stderr lora-merge -j $j -m w.safetensors w.lora -o out.safetensors
			assert_equal "$stderr" "lora-merge: tensor 'w.weight': merged value at index ${c#*:} is not finite"
			assert_file_not_exists out.safetensors
		done
	done
	# and without the infinities, the merge goes through
	nonfinite_model w.safetensors
	run -0 lora-merge -m w.safetensors w.lora -o out.safetensors
	run -0 checkmerge w.safetensors out.safetensors w.lora
}

@test "--combine cat: one exact adapter for a weighted sum, negative weights included" {
	lora-merge --combine cat a.lora:0.5 b.lora:-2 -o c.lora
	# q_proj had rank 2 + 1; the other layers keep theirs; scaling folded in (alpha = rank)
	assert_equal "$(lora-inspect --json c.lora | jq -c '[.layers[] | [.name, .rank, .scale]]')" \
		'[["model.layers.0.self_attn.q_proj",3,1],["model.layers.1.mlp.down_proj",1,1],["model.layers.1.self_attn.v_proj",3,1]]'
	lora-merge -m model c.lora -o out
	run -0 checkmerge model out a.lora:0.5 b.lora:-2
	lora-merge --combine cat a.lora:0.5 b.lora:-2 > piped.lora
	cmp c.lora piped.lora
}

@test "--combine svd: the exact SVD of the weighted sum, at rank K or by energy" {
	lora-merge --combine cat a.lora b.lora:0.5 -o cat.lora
	lora-merge --combine svd -r 3 a.lora b.lora:0.5 -o full.lora
	run -0 lora-diff cat.lora full.lora
	lora-merge --combine svd -r 1 a.lora b.lora:0.5 -o one.lora
	lora-svd -r 1 cat.lora -o rerank.lora 2>/dev/null
	run -0 lora-diff one.lora rerank.lora
	assert_equal "$(lora-inspect --json one.lora | jq -c '[.ranks[].rank]')" '[1]'
	lora-merge --combine svd --energy 1 a.lora b.lora:0.5 -o e.lora
	run -0 lora-diff cat.lora e.lora
}

@test "--combine usage and shape errors" {
	run -2 --separate-stderr lora-merge --combine svd a.lora b.lora
	assert_equal "${stderr_lines[0]}" "lora-merge: --combine svd needs one of -r R or --energy E"
	run -2 --separate-stderr lora-merge --combine cat -m model a.lora -o x
	assert_equal "${stderr_lines[0]}" "lora-merge: --combine makes an adapter; it does not take -m"
	run -2 --separate-stderr lora-merge --combine avg a.lora
	assert_equal "${stderr_lines[0]}" "lora-merge: --combine: 'avg' is not cat or svd"
	run -2 --separate-stderr lora-merge -r 2 -m model a.lora -o x
	assert_equal "${stderr_lines[0]}" "lora-merge: -r and --energy go with --combine svd"
	mkadapter model.layers.0.self_attn.q_proj=64x32x1:1 > odd.lora
	run -1 --separate-stderr lora-merge --combine cat a.lora odd.lora -o x.lora
	assert_output ''
	assert_regex "$stderr" "^lora-merge: .*model\.layers\.0\.self_attn\.q_proj.*64x64.*64x32"
	assert_file_not_exists x.lora
}
