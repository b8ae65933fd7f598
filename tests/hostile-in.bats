#!/usr/bin/env bats
# Hostile inputs: FIFOs where files belong, standard input twice, huge
# headers, memory limits, non-finite numbers, names that are terminal
# escapes, thread counts the system cannot start. Every run is under
# timeout, so that a regression fails instead of hanging the suite: $T
# seconds, ten times more under valgrind, whose runs take that much longer.

setup() {
	load test_helper/common-setup
	_common_setup
	M="--hidden 16 --inter 32 --layers 2 --heads 2 --kv-heads 1 --vocab 64"
	mkmodel $M model >/dev/null
	mktokens --vocab 64 200 >data.u16
	mkadapter model.layers.0.self_attn.q_proj=16x16x2:0.5,0.25 >a.lora
	mkfifo fifo
	T=20
	if [ "${LORA_VALGRIND:-}" = 1 ]; then T=200; fi
}

# refused CODE LINE CMD...: exits CODE within $T seconds, stderr exactly LINE, stdout empty.
refused() {
	local code=$1 line=$2
	shift 2
	run -"$code" --separate-stderr timeout $T "$@"
	assert_equal "$stderr" "$line"
	assert_output ''
}

@test "a FIFO where a regular file belongs is refused by name, never waited on, by every tool" {
	refused 1 'lora-eval: fifo: not a regular file (a FIFO)' lora-eval -m model -d fifo
	refused 1 'lora-generate: fifo: not a regular file (a FIFO)' lora-generate -m model --data fifo -n 2
	refused 1 'lora-train: fifo: not a regular file (a FIFO)' lora-train -m model -d fifo --steps 1 -o t.lora
	refused 2 'lora-diff: fifo: not a regular file (a FIFO)' lora-diff -m model --tuned fifo
	refused 1 'lora-svd: fifo: not a regular file (a FIFO)' lora-svd -m model --tuned fifo -r 1 -o s.lora
	refused 1 'lora-tokenize: fifo: not a regular file (a FIFO)' lora-tokenize --tokenizer fifo
	ln -s fifo x.safetensors
	refused 1 'lora-inspect: x.safetensors: not a regular file (a FIFO)' lora-inspect x.safetensors
	ln -s fifo x.gguf
	refused 1 'lora-convert: x.gguf: not a regular file (a FIFO)' lora-convert x.gguf -o c.lora
	# a shard, the index, config.json of a model directory
	cp -r model m1 && rm m1/model.safetensors && mkfifo m1/model.safetensors
	for t in "lora-inspect m1" "lora-eval -m m1 -d data.u16" "lora-init -m m1 -r 1 -o i.lora" "lora-merge -m m1 a.lora -o out"; do
		refused 1 "${t%% *}: m1/model.safetensors: not a regular file (a FIFO)" $t
	done
	cp -r model m2 && rm m2/config.json && mkfifo m2/config.json
	refused 1 'lora-eval: m2/config.json: not a regular file (a FIFO)' lora-eval -m m2 -d data.u16
	cp -r model m3 && mkfifo m3/model.safetensors.index.json
	refused 1 'lora-inspect: m3/model.safetensors.index.json: not a regular file (a FIFO)' lora-inspect m3
	# both files of a PEFT adapter
	mkpeft p model.layers.0.self_attn.q_proj=16x16x2 >/dev/null
	cp -r p p1 && rm p1/adapter_model.safetensors && mkfifo p1/adapter_model.safetensors
	refused 1 'lora-inspect: p1/adapter_model.safetensors: not a regular file (a FIFO)' lora-inspect p1
	refused 1 'lora-merge: p1/adapter_model.safetensors: not a regular file (a FIFO)' lora-merge -m model p1 -o out
	cp -r p p2 && rm p2/adapter_config.json && mkfifo p2/adapter_config.json
	refused 1 'lora-convert: p2/adapter_config.json: not a regular file (a FIFO)' lora-convert p2 -o c.lora
	assert_file_not_exists out
	assert_file_not_exists c.lora
	# a .lora stream from a pipe is still welcome
	run -0 timeout $T lora-inspect --json <(cat a.lora)
}

@test "standard input named twice is a usage error, not a bad file" {
	refused 2 "lora-merge: '-' given twice: standard input can be read only once
Usage: lora-merge -m MODEL ADAPTER[:SCALE]... -o OUT [options]
   or: lora-merge --combine cat|svd ADAPTER[:SCALE]... [-o OUT] [options]
Try 'lora-merge --help' for more information." lora-merge -m model - - -o out <a.lora
	run -2 --separate-stderr timeout $T lora-eval -m model - - -d data.u16 <a.lora
	assert_equal "${stderr_lines[0]}" "lora-eval: '-' given twice: standard input can be read only once"
	assert_file_not_exists out
}

@test "a header of 50k layers reads in linear memory and time, and under a memory limit says out of memory" {
	mkadapter --many 50000 >many.lora
	run -0 timeout $((3 * T)) lora-inspect --json many.lora
	assert_equal "$(jq .num_layers <<<"$output")" 50000
	# two adapters of 50k layers compared name by name
	run -0 timeout $((3 * T)) lora-diff -q many.lora many.lora
	# a layer named twice in 50k is found
	mkadapter --many 3 model.layers.1.mlp.up_proj=1x1x1:1 >dup.lora
	refused 1 "lora-inspect: dup.lora: header: layer 'model.layers.1.mlp.up_proj' appears twice" lora-inspect dup.lora
	# the same header under a limit too small for it: one line, exit 1, no hang
	if [ "${LORA_SANITIZE:-}" = 1 ] || [ "${LORA_VALGRIND:-}" = 1 ]; then
		skip "the memory limit: sanitizers and valgrind reserve more address space than any limit"
	fi
	run -1 --separate-stderr bash -c 'ulimit -v 150000; exec timeout 60 lora-inspect many.lora'
	assert_regex "${stderr_lines[-1]}" '^lora-inspect: (many\.lora: )?out of memory'
	assert_output ''
}

@test "a config.json claiming 10^9 layers on a 2-layer checkpoint names the missing tensor, in little memory" {
	jq '.num_hidden_layers = 1000000000' model/config.json >c.json && mv c.json model/config.json
	line="model: tensor 'model.layers.2.self_attn.q_proj.weight' is missing"
	# the count sizes nothing before the tensors are found (sanitizers and
	# valgrind reserve more address space than the limit)
	lim=4000000
	[ "${LORA_SANITIZE:-}" = 1 ] || [ "${LORA_VALGRIND:-}" = 1 ] && lim=unlimited
	refused 1 "lora-eval: $line" bash -c "ulimit -v $lim; exec lora-eval -m model -d data.u16 -T 16"
	refused 1 "lora-generate: $line" bash -c "ulimit -v $lim; exec lora-generate -m model -n 2"
	refused 1 "lora-train: $line" bash -c "ulimit -v $lim; exec lora-train -m model -d data.u16 -T 16 --steps 1 -o t.lora"
	assert_file_not_exists t.lora
}

@test "non-finite results are refused naming where they begin: eval, generate, merge --dtype" {
	mkadapter --alpha 1e300 model.layers.1.self_attn.q_proj=16x16x2:0.5,0.25 >huge.lora
	refused 1 "lora-eval: huge.lora: layer 'model.layers.1.self_attn.q_proj': scale 5e+299 (alpha 1e+300, rank 2) is not finite in f32" \
		lora-eval -m model huge.lora -d data.u16 -T 16
	refused 1 "lora-generate: huge.lora: layer 'model.layers.1.self_attn.q_proj': scale 5e+299 (alpha 1e+300, rank 2) is not finite in f32" \
		lora-generate -m model huge.lora -n 2
	# factors that overflow in the product: the block is named
	mkadapter --alpha 2e10 model.layers.1.self_attn.q_proj=16x16x2:1e30,1e30 >over.lora
	refused 1 "lora-eval: model.layers.1: the hidden state is not finite after this block (values overflow; an adapter's scale too large?)" \
		lora-eval -m model over.lora -d data.u16 -T 16
	# one NaN weight in the checkpoint: the tensor and element are named
	cp -r model nanm
	hl=$(od -An -tu8 -N8 nanm/model.safetensors | tr -d ' ')
	off=$(head -c $((8 + hl)) nanm/model.safetensors | tail -c "$hl" | jq '.["model.layers.1.mlp.up_proj.weight"].data_offsets[0]')
	printf '\000\000\300\177' | dd of=nanm/model.safetensors bs=1 seek=$((8 + hl + off + 4 * 17)) conv=notrunc status=none
	refused 1 "lora-eval: tensor 'model.layers.1.mlp.up_proj.weight': element [1,1] is not finite" lora-eval -m nanm -d data.u16 -T 16
	refused 1 "lora-generate: tensor 'model.layers.1.mlp.up_proj.weight': element [1,1] is not finite" \
		lora-generate -m nanm -n 3 --temperature 0
	# merged values the output dtype cannot hold
	mkadapter model.layers.0.self_attn.q_proj=16x16x2:1e5,1 >f16.lora
	refused 1 "lora-merge: tensor 'model.layers.0.self_attn.q_proj.weight': value 100000 at index 15 does not fit f16 (largest 65504)" \
		lora-merge -m model f16.lora -o out --dtype f16
	mkadapter model.layers.0.self_attn.q_proj=16x16x2:3.4e38,1 >bf16.lora
	refused 1 "lora-merge: tensor 'model.layers.0.self_attn.q_proj.weight': value 3.4e+38 at index 15 does not fit bf16 (largest 3.38953e+38)" \
		lora-merge -m model bf16.lora -o out --dtype bf16
	assert_file_not_exists out
}

@test "names from a file reach the terminal escaped; a long path keeps the cause; -j is bounded and probed" {
	mkadapter "$(printf 'evil\033[2Jname')=4x4x1:1" >esc.lora
	run -0 timeout $T lora-inspect --per-layer esc.lora
	assert_line --partial 'evil\x1b[2Jname'
	refute_output --partial $'\033'
	long=$(printf 'd%.0s' $(seq 2000))
	run -1 --separate-stderr timeout $T lora-inspect "$long/x.lora"
	assert_regex "$stderr" '^lora-inspect: d+\.\.\.d+/x\.lora: File name too long$'
	refused 2 "lora-inspect: --threads: '1025' is not an integer in [1, 1024]
Usage: lora-inspect [options] [FILE|DIR|-]
Try 'lora-inspect --help' for more information." lora-inspect -j 1025 a.lora
	if [ "${LORA_SANITIZE:-}" = 1 ] || [ "${LORA_VALGRIND:-}" = 1 ]; then
		skip "-j 1000 under a memory limit: sanitizers and valgrind reserve more address space than any limit"
	fi
	run -1 --separate-stderr bash -c 'ulimit -v 1000000; exec timeout 20 lora-inspect -j 1000 a.lora'
	assert_regex "$stderr" '^lora-inspect: cannot start 1000 threads \([0-9]+ started\): '
	assert_output ''
}

@test "decompressed .lora payloads have a total limit: LORA_MAX_PAYLOAD, checked before inflating" {
	# Honest shapes, 16384 bytes of payloads in all; no tensor is over 1024.
	lora-init -m model -r 8 -t all-linear -o big.lora
	line="big.lora: layer 'model.layers.1.mlp.down_proj' A: the payloads up to here decompress to 9216 bytes, past the limit of 8192; raise it with LORA_MAX_PAYLOAD=SIZE (e.g. 32G)"
	export LORA_MAX_PAYLOAD=8K
	refused 1 "lora-inspect: $line" lora-inspect --check big.lora
	refused 1 "lora-inspect: $line" lora-inspect --stats big.lora
	refused 1 "lora-merge: $line" lora-merge -m model big.lora -o out
	assert_file_not_exists out
	refused 1 "lora-eval: $line" lora-eval -m model -d data.u16 big.lora
	refused 1 "lora-convert: standard input: ${line#big.lora: }" lora-convert - -o p <big.lora
	assert_file_not_exists p
	# the header alone is no payload
	run -0 lora-inspect big.lora
	# at the limit, and in any spelling of it
	for v in 16K 16k 16384; do
		LORA_MAX_PAYLOAD=$v run -0 lora-merge -m model big.lora -o "out$v"
		assert_file_exists "out$v/model.safetensors"
	done
	LORA_MAX_PAYLOAD=16383 refused 1 "lora-inspect: big.lora: layer 'model.layers.1.self_attn.v_proj' B: the payloads up to here decompress to 16384 bytes, past the limit of 16383; raise it with LORA_MAX_PAYLOAD=SIZE (e.g. 32G)" lora-inspect --check big.lora
	# a bad setting is a usage error in every tool, before anything is read
	for v in 1.5G 16GB -1 '' x 18446744073709551616 16777216T; do
		LORA_MAX_PAYLOAD=$v refused 2 "lora-merge: LORA_MAX_PAYLOAD: '$v' is not a size (bytes, or a whole number with K, M, G or T: 16G, 512M)" lora-merge -m model big.lora -o out
	done
	LORA_MAX_PAYLOAD=0 refused 2 "lora-inspect: LORA_MAX_PAYLOAD: '0': the limit must be at least 1 byte" lora-inspect big.lora
	LORA_MAX_PAYLOAD=0G refused 2 "lora-init: LORA_MAX_PAYLOAD: '0G': the limit must be at least 1 byte" lora-init --shape w=2x2 -o n.lora
	assert_file_not_exists out
	assert_file_not_exists n.lora
	# --help and --version do not read it
	LORA_MAX_PAYLOAD=x run -0 lora-merge --help
	LORA_MAX_PAYLOAD=x run -0 lora-inspect --version
}
