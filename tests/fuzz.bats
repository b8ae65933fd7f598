#!/usr/bin/env bats
# The fuzzed readers: every seed and every regression input of
# tests/fuzz/ replayed through its harness (built without libFuzzer, under
# ASan+UBSan with SANITIZE=1), and the resource bounds a hostile file runs
# into: huge claimed sizes, lengths and counts, YAML aliases, deep nesting.

setup() {
	load test_helper/common-setup
	_common_setup
	CORPUS="$ROOT/tests/fuzz/corpus"
	REGRESS="$ROOT/tests/fuzz/regress"
}

# replay NAME: every seed and regression input of fuzz_NAME passes, and
# there are as many as the directories hold (a harness that ran none would
# prove nothing).
replay() {
	local dirs=("$CORPUS/$1") n
	[ -d "$REGRESS/$1" ] && dirs+=("$REGRESS/$1")
	n=$(find "${dirs[@]}" -maxdepth 1 -type f ! -name '.*' ! -name README | wc -l)
	[ "$n" -gt 0 ]
	run -0 --separate-stderr "fuzz_$1" "${dirs[@]}"
	assert_output "fuzz_$1: $n inputs"
	assert_equal "$stderr" ""
}

@test "fuzz corpus replays clean: safetensors header reader" {
	replay safetensors
}

@test "fuzz corpus replays clean: model directories and sharded indexes" {
	replay model
}

@test "fuzz corpus replays clean: .lora reader, with checksums and round trip" {
	replay lora
}

@test "fuzz corpus replays clean: PEFT adapter_config.json and weights, with round trip" {
	replay peft
}

@test "fuzz corpus replays clean: GGUF files and GGUF LoRA adapters, with round trips" {
	replay gguf
}

@test "fuzz corpus replays clean: Hugging Face config.json" {
	replay llama_config
}

@test "fuzz corpus replays clean: lora-train YAML configuration" {
	replay trainconf
}

@test "fuzz corpus replays clean: token files and batches" {
	replay data
}

@test "fuzz corpus replays clean: Python regular expressions through PCRE2" {
	replay pattern
}

@test "fuzz corpus replays clean: tokenizer.json, encoding and decoding" {
	replay tokenizer
}

@test "fuzz corpus replays clean: tokenizer_config.json chat templates and rendering" {
	replay chat
}

@test "fuzz corpus replays clean: JSONL examples (text, prompt/completion, alpaca, chats)" {
	replay jsonl
}

@test "every fuzz dictionary is in libFuzzer's syntax (only \\\\, \\\" and \\xHH escapes)" {
	local f n=0
	for f in "$ROOT"/tests/fuzz/*.dict; do
		n=$((n + 1))
		run grep -n -v -E '^([[:space:]]*(#.*)?|([A-Za-z0-9_]+=)?"([^"\\]|\\\\|\\"|\\x[0-9A-Fa-f]{2})*")$' "$f"
		[ "$status" -eq 1 ] || fail "$f: line not in libFuzzer's dictionary syntax: $output"
	done
	[ "$n" -ge 8 ]
}

@test "names quoted from a hostile file cannot break the one-line error (found by fuzz_llama_config)" {
	cp -r "$FIX/model/llama_gqa" m
	printf '{"model_type": "qw\\nen2\\u001b[31m"}' >m/config.json
	run -1 --separate-stderr lora-eval -m m -d m/tokens.u16
	assert_equal "$stderr" "lora-eval: m/config.json: model_type 'qw\\x0aen2\\x1b[31m' is not supported (llama, mistral, qwen2)"
	mkst nl.safetensors '{"a\nb":{"dtype":"X","shape":[],"data_offsets":[0,0]}}'
	run -1 --separate-stderr lora-inspect nl.safetensors
	assert_equal "$stderr" "lora-inspect: nl.safetensors: tensor 'a\\x0ab': unknown dtype 'X'"
}

# ---- resource bounds, through the tools ----

# le32 N: N as 4 little-endian bytes.
le32() {
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"
}

# crc32 < FILE: the CRC-32 of standard input, in decimal (gzip's trailer).
crc32() {
	gzip -c | tail -c 8 | head -c 4 | od -An -tu4 | tr -d ' '
}

# mklora OUT HEADER PAYLOAD: a .lora with that JSON header (and a right
# header CRC) followed by the payload bytes.
mklora() {
	{
		printf '\211LORA\r\n\032'
		le32 1
		le32 ${#2}
		printf '%s' "$2"
	} >"$1.head"
	{ cat "$1.head"; le32 "$(crc32 <"$1.head")"; printf '%s' "$3"; } >"$1"
	rm "$1.head"
}

# small_memory CMD...: run CMD in at most 150 MB of address space (one
# thread, so that OpenBLAS's per-thread buffers fit). ASan and valgrind
# need far more address space than they use: there CMD runs unlimited.
small_memory() {
	if [ "$LORA_SANITIZE" = 1 ] || [ "$LORA_VALGRIND" = 1 ]; then
		"$@"
	else
		(ulimit -v 150000 && OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 exec "$@")
	fi
}

@test "a 16-byte .lora claiming a 64 MiB header fails at once, in little memory" {
	{ printf '\211LORA\r\n\032'; le32 1; le32 67108863; } >h.lora
	assert_equal "$(stat -c %s h.lora)" 16
	run -1 --separate-stderr small_memory lora-inspect h.lora
	assert_equal "$stderr" "lora-inspect: h.lora: truncated in the header (file ends at byte 16)"
	run -1 --separate-stderr small_memory lora-merge -m "$FIX/model/llama_gqa" - -o out <h.lora
	assert_equal "$stderr" "lora-merge: standard input: truncated in the header (file ends at byte 16)"
	{ printf '\211LORA\r\n\032'; le32 1; le32 4294967295; } >h2.lora
	run -1 --separate-stderr lora-inspect h2.lora
	assert_equal "$stderr" "lora-inspect: h2.lora: header length 4294967295 out of range [1, 67108864]"
}

@test "a .lora claiming a 2^60-element tensor is refused by the payload limit, or fails on its data, never allocating it" {
	x=$(printf x | crc32) y=$(printf y | crc32)
	mklora huge.lora '{"dtype":"f32","layers":[{"name":"w","shape":[2147483648,2147483648],"rank":536870912,"alpha":1,"A":{"zsize":1,"crc32":'"$x"'},"B":{"zsize":1,"crc32":'"$y"'}}]}' xy
	# the default payload limit refuses the claim from the header alone
	run -1 --separate-stderr small_memory lora-inspect --check huge.lora
	assert_equal "$stderr" "lora-inspect: huge.lora: layer 'w' A: the payloads up to here decompress to 4611686018427387904 bytes, past the limit of 17179869184; raise it with LORA_MAX_PAYLOAD=SIZE (e.g. 32G)"
	# and without that limit, the data that arrives decides
	export LORA_MAX_PAYLOAD=16777215T
	run -1 --separate-stderr small_memory lora-inspect --check huge.lora
	assert_equal "$stderr" "lora-inspect: huge.lora: layer 'w' A: invalid compressed data"
	run -1 --separate-stderr small_memory lora-svd -r 1 huge.lora -o s.lora
	assert_equal "$stderr" "lora-svd: huge.lora: layer 'w' A: invalid compressed data"
	run -1 --separate-stderr small_memory lora-convert - -o p <huge.lora
	assert_equal "$stderr" "lora-convert: standard input: layer 'w' A: invalid compressed data"
	# a size past 64 bits is refused from the header alone
	mklora over.lora '{"dtype":"f32","layers":[{"name":"w","shape":[2147483648,2147483648],"rank":2147483648,"alpha":1,"A":{"zsize":1,"crc32":0},"B":{"zsize":1,"crc32":0}}]}' xy
	run -1 --separate-stderr lora-inspect over.lora
	assert_equal "$stderr" "lora-inspect: over.lora: layer 'w': shape 2147483648x2147483648 at rank 2147483648 is too large"
}

@test "safetensors headers claiming huge lengths and shapes are refused before allocation" {
	printf '\001\000\000\000\000\000\000\200{' >len.safetensors
	run -1 --separate-stderr small_memory lora-inspect len.safetensors
	assert_equal "$stderr" "lora-inspect: len.safetensors: header length 9223372036854775809 exceeds the 100000000-byte limit"
	# 2^50 elements: offsets up to 2^53 are exact, the file has 16 bytes
	mkst big.safetensors '{"w":{"dtype":"F32","shape":[1073741824,1048576],"data_offsets":[0,4503599627370496]}}' 16
	run -1 --separate-stderr small_memory lora-inspect big.safetensors
	assert_equal "$stderr" "lora-inspect: big.safetensors: tensor 'w': data_offsets [0,4503599627370496] run past the end of the 16-byte data section"
	mkst far.safetensors '{"w":{"dtype":"F32","shape":[1073741824,1073741824],"data_offsets":[0,4611686018427387904]}}' 16
	run -1 --separate-stderr small_memory lora-inspect far.safetensors
	assert_equal "$stderr" "lora-inspect: far.safetensors: tensor 'w': data_offsets must be [begin, end], non-negative integers"
	mkst wrap.safetensors '{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}'
	run -1 --separate-stderr small_memory lora-inspect wrap.safetensors
	assert_equal "$stderr" "lora-inspect: wrap.safetensors: tensor 'w': F32 4294967296x4294967296x4 overflows"
}

@test "YAML aliases cannot expand: lora-train refuses anchors before reading on" {
	printf 'lora_target_modules: &a [q_proj, q_proj, q_proj]\nlora_dropout: 0.1\nseed: *a\n' >bomb.yaml
	run -1 --separate-stderr lora-train -m "$FIX/model/llama_gqa" -d "$FIX/model/llama_gqa/tokens.u16" -c bomb.yaml -o t.lora
	assert_equal "$stderr" "lora-train: bomb.yaml:1: YAML anchors are not supported"
	{ printf 'lora_target_modules: '; printf '%*s' 100000 '' | tr ' ' '['; echo; } >deep.yaml
	run -1 --separate-stderr lora-train -m "$FIX/model/llama_gqa" -d "$FIX/model/llama_gqa/tokens.u16" -c deep.yaml -o t.lora
	assert_equal "$stderr" "lora-train: deep.yaml:1: 'lora_target_modules' must be a list of module names, got a nested sequence"
}

@test "deeply nested JSON is refused at a bounded depth, in every JSON reader" {
	deep=$(printf '%*s' 100000 '' | tr ' ' '[')
	mkpeft p q=4x4x1 >/dev/null
	printf '%s' "$deep" >p/adapter_config.json
	run -1 --separate-stderr lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: file is not valid JSON (error near byte 1000)"
	cp -r "$FIX/model/llama_gqa" m
	printf '%s' "$deep" >m/config.json
	run -1 --separate-stderr lora-inspect m
	assert_equal "$stderr" "lora-inspect: m/config.json: file is not valid JSON (error near byte 1000)"
	mkdir ix
	printf '{"weight_map":%s' "$deep" >ix/model.safetensors.index.json
	run -1 --separate-stderr lora-inspect ix
	assert_equal "$stderr" "lora-inspect: ix/model.safetensors.index.json: file is not valid JSON (error near byte 1013)"
	mkst deep.safetensors "{\"a\":$deep"
	run -1 --separate-stderr lora-inspect deep.safetensors
	assert_equal "$stderr" "lora-inspect: deep.safetensors: header is not valid JSON (error near byte 1005)"
	mklora deep.lora "{\"layers\":$deep" ''
	run -1 --separate-stderr lora-inspect deep.lora
	assert_equal "$stderr" "lora-inspect: deep.lora: header is not valid JSON (error near byte 1009)"
}

# 27 bytes that cost glibc's regcomp 1.17 GB and 2 s before every PEFT
# pattern went through core/pattern (PCRE2 with bounds).
NESTED='((q{1,100}){1,100}){1,100}'
BOUND='is past the regular expression bounds: its compiled form is over 65536 bytes'

@test "a nested-bound regex is refused at once, in little memory, wherever a pattern comes from" {
	mkpeft p layers.0.q_proj=4x4x1 >/dev/null
	cp p/adapter_config.json config.json
	jq --arg t "$NESTED" '.target_modules = $t' config.json >p/adapter_config.json
	for cmd in "lora-inspect p" "lora-convert p -o a.lora" "lora-convert --to peft p -o q" \
		"lora-merge -m $FIX/model/llama_gqa p -o m"; do
		run -1 --separate-stderr small_memory $cmd
		assert_equal "$stderr" "${cmd%% *}: p/adapter_config.json: target_modules '$NESTED' $BOUND"
	done
	for obj in rank_pattern alpha_pattern; do
		jq --arg k "$NESTED" ".$obj = {(\$k): 2}" config.json >p/adapter_config.json
		run -1 --separate-stderr small_memory lora-inspect p
		assert_equal "$stderr" "lora-inspect: p/adapter_config.json: $obj key '$NESTED' $BOUND"
	done
	# from the command line it is a usage error
	for cmd in "lora-init -m $FIX/model/llama_gqa" "lora-svd -m $FIX/model/llama_gqa --tuned $FIX/model/llama_gqa -r 2"; do
		run -2 --separate-stderr small_memory $cmd --target-regex "$NESTED" -o out.lora
		assert_equal "$stderr" "${cmd%% *}: --target-regex '$NESTED' $BOUND"
	done
	assert_not_exist a.lora
	assert_not_exist out.lora
}

@test "catastrophic backtracking stops at the match limit and is reported, not hung" {
	aaa=$(printf 'a%.0s' $(seq 40))!
	mkpeft --rank-pattern '(a+)+$=2' p "$aaa=4x4x2" >/dev/null
	run -1 --separate-stderr timeout 60 lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: rank_pattern key '(a+)+\$' gave up on '$aaa': over 1000000 backtracking steps"
	# a target_modules string is matched on every module with factors, as PEFT does on loading
	jq '.rank_pattern = {} | .target_modules = "(a+)+$"' p/adapter_config.json >c.json && mv c.json p/adapter_config.json
	for t in "lora-inspect p" "lora-convert p -o q"; do
		run -1 --separate-stderr timeout 60 $t
		assert_equal "$stderr" "${t%% *}: p/adapter_config.json: target_modules '(a+)+\$' gave up on '$aaa': over 1000000 backtracking steps"
	done
	# and so is an exclude_modules string
	jq '.target_modules = ["a"] | .exclude_modules = "(a+)+$"' p/adapter_config.json >c.json && mv c.json p/adapter_config.json
	run -1 --separate-stderr timeout 60 lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: exclude_modules '(a+)+\$' gave up on '$aaa': over 1000000 backtracking steps"
	# the same shape on the model's own names, from the command line
	run -1 --separate-stderr timeout 60 lora-init -m "$FIX/model/llama_gqa" --target-regex '(\w+\.?)+[!?]' -o i.lora
	assert_regex "$stderr" "^lora-init: --target-regex '\(\\\\w\+\\\\\.\?\)\+\[!\?\]' gave up on 'model\.[a-z0-9_.]+': over 1000000 backtracking steps\$"
	assert_not_exist i.lora
}

@test "PEFT pattern keys within the bounds: long, deep, many; real configs' keys work" {
	# r = 2 but the layer has rank 1: the key must select it for the read to succeed
	mkpeft --r 2 --rank-pattern 'KEY=1' p layers.0.q_proj=4x4x1 >/dev/null
	cp p/adapter_config.json config.json
	key() { jq --arg k "$1" '.rank_pattern = {($k): 1}' config.json >p/adapter_config.json; }
	key "$(printf '%*s' 50000 '' | tr ' ' '(')q_proj$(printf '%*s' 50000 '' | tr ' ' ')')"
	run -1 --separate-stderr lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: rank_pattern key '$(printf '%*s' 64 '' | tr ' ' '(')...' is past the regular expression bounds: over 65536 bytes long"
	key "$(printf '%*s' 251 '' | tr ' ' '(')q_proj$(printf '%*s' 251 '' | tr ' ' ')')"
	run -1 --separate-stderr lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: rank_pattern key '$(printf '%*s' 64 '' | tr ' ' '(')...' is past the regular expression bounds: groups nest deeper than 250"
	key 'q_proj{1,65536}'
	run -1 --separate-stderr lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: rank_pattern key 'q_proj{1,65536}' is past the regular expression bounds: a {m,n} bound is over 65535"
	# each key compiles to under 64 KiB, but one config's keys share 32 MiB
	jq '.rank_pattern = ([range(600)] | map({key: "(ab){1,3000}x\(.)", value: 1}) | from_entries)' \
		config.json >p/adapter_config.json
	run -1 --separate-stderr small_memory lora-inspect p
	assert_equal "$stderr" "lora-inspect: p/adapter_config.json: the patterns take over 32 MiB compiled"
	# what real configs hold still works: classes, alternatives, wildcards, small bounds, \d
	for k in '.*[.](q|v)_proj' 'layers[.][0-9]{1,3}[.](q_proj|v_proj)' '(q|v)_proj{1,2}' '(layers[.][0-9]+)*[.]q_proj' \
		'layers\.\d+\.q_proj' "$(printf '(a*)*%.0s' $(seq 40))q_proj"; do
		key "$k"
		run -0 lora-inspect --json p
		assert_equal "$(jq -c '[.layers[] | .rank]' <<<"$output")" '[1]'
	done
}
