#!/usr/bin/env bats
# What every tool shares through cmd/cli.c: the progress line, the refusal
# of a terminal on standard input, the old spellings kept for one release,
# and the one rule that tells what an input path holds (lib/io/load.c).

setup() {
	load test_helper/common-setup
	_common_setup
}

# on_tty CMD: run CMD with a terminal on stdin, stdout and stderr (script(1));
# its output, the terminal's, in $output. script exits with CMD's status.
on_tty() { run script -qec "$1" /dev/null; }

# count PATTERN: occurrences of PATTERN in $output
count() { grep -o -- "$1" <<<"$output" | wc -l; }

@test "progress: a fast loop updates at most five times a second, the line cut to the terminal and cleared" {
	on_tty "stty cols 60; test_progress 1.2"
	assert_success
	n=$(count $'\rtest-progress: call')
	# 1.2 s at 0.2 s apart: 6 or 7 updates out of millions of calls
	[ "$n" -ge 3 ] && [ "$n" -le 7 ] || fail "$n updates in 1.2 s"
	calls=$(sed -n 's/.*calls=\([0-9]*\) .*/\1/p' <<<"$output")
	[ "$calls" -gt 1000 ] || fail "only $calls calls"
	# every update fits 59 columns, so '\r' can overwrite it
	tr '\r' '\n' <<<"$output" | sed 's/\x1b\[K.*//' | awk 'length($0) > 59 { bad = 1 } END { exit bad }' ||
		fail "a progress line is wider than the terminal"
	# the note stays on its own line; nothing of the progress line is left
	assert_output --partial $'\rtest-progress: '"$calls calls"$'\x1b[K\r\n'
	assert_line --index 1 --regexp '^calls=[0-9]+ elapsed=1\.[0-9]+'
}

@test "progress: nothing when stderr is not a terminal, nothing with -q" {
	run -0 --separate-stderr test_progress 0.3
	assert_equal "$stderr" ''
	on_tty "test_progress -q 0.3 2>&1"
	assert_success
	assert_equal "$(count $'\r')" 1 # script's own CR of the one stdout line
	refute_output --partial 'test-progress:'
}

@test "progress: an error clears the line before it is printed" {
	on_tty "test_progress --fail 0.3"
	assert_failure 1
	assert_output --regexp $'\r\x1b\\[Ktest-progress: failed after [0-9]+ calls\r?$'
}

@test "progress of a tool: lora-eval on a terminal, bounded; nothing in a file or with -q" {
	mkmodel --hidden 16 --inter 32 --layers 1 --heads 2 --kv-heads 1 --vocab 64 model >/dev/null
	mktokens --vocab 64 --seed 1 40000 >data.u16
	start=$(date +%s.%N)
	on_tty "lora-eval -m model -d data.u16 -b 1 -T 8 --no-shuffle >/dev/null"
	assert_success
	elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
	n=$(count 'lora-eval: batch ')
	[ "$n" -ge 1 ] || fail "no progress on a terminal"
	awk -v n="$n" -v t="$elapsed" 'BEGIN { exit !(n <= 5 * t + 2) }' || fail "$n updates in $elapsed s"
	assert_output --partial 'lora-eval: batch 1/4999, loss '
	assert_output --regexp $'\x1b\\[K$' # cleared at the end
	run -0 --separate-stderr lora-eval -m model -d data.u16 -b 1 -T 8 --batches 50
	assert_equal "$stderr" ''
	on_tty "lora-eval -q -m model -d data.u16 -b 1 -T 8 --batches 50 >/dev/null"
	assert_output ''
}

@test "lora-generate shows progress on a terminal and takes -q" {
	mkmodel --hidden 16 --inter 32 --layers 1 --heads 2 --kv-heads 1 --vocab 64 model >/dev/null
	on_tty "lora-generate -m model -n 20 -o out.u16"
	assert_success
	assert_output --partial 'lora-generate: token 1/20'
	assert_output --regexp $'\x1b\\[K$'
	on_tty "lora-generate -q -m model -n 20 -o out2.u16"
	assert_output ''
	cmp out.u16 out2.u16
}

# refused TOOL ARGS...: with a terminal on stdin, TOOL reading '-' exits 2
# with one line, before opening anything else.
refused() {
	local t=$1
	on_tty "$*; echo status=\$?"
	assert_line --index 0 "$t: standard input is a terminal: give a file, or pipe one in"$'\r'
	assert_line --index 1 $'status=2\r'
	assert_equal "${#lines[@]}" 2
}

@test "a terminal on stdin is refused: lora-convert, lora-inspect, lora-svd (no operand)" {
	refused lora-convert
	refused lora-convert - -o x.lora
	refused lora-inspect
	refused lora-inspect --json -
	refused lora-svd -r 2 -o x.lora
}

@test "a terminal on stdin is refused: lora-merge" {
	refused lora-merge -m model a.lora - -o out
	refused lora-merge --combine cat -o x.lora -- -:0.5
}

@test "a terminal on stdin is refused: lora-eval" {
	refused lora-eval -m model - -d data.u16
}

@test "a terminal on stdin is refused: lora-generate" {
	refused lora-generate -m model -o x.u16 -- -:2
}

@test "a terminal on stdin is refused: lora-diff" {
	refused lora-diff a.lora -
	refused lora-diff -m base --tuned tuned -
}

@test "a terminal on stdin is refused: lora-train" {
	refused lora-train -m model -d data.u16 - -o x.lora
}

@test "a file called -:x is not standard input" {
	mkadapter w=8x8x2:1,2 >./-:x
	on_tty "lora-inspect -- -:x </dev/null >out; echo status=\$?"
	assert_output --partial 'status=0'
}

# same_with OLD NEW ARGS...: the old spelling gives the same output as the
# new one, and one warning line naming both
old_spelling() {
	local tool=$1 old=$2 new=$3
	shift 3
	run -0 --separate-stderr "$tool" "$new" "$@"
	local want=$output
	run -0 --separate-stderr "$tool" "$old" "$@"
	assert_equal "$output" "$want"
	assert_equal "$stderr" "$tool: '$old' is deprecated; use '$new'"
}

# the same for a tool writing a file (-o)
old_spelling_file() {
	local tool=$1 old=$2 new=$3
	shift 3
	run -0 --separate-stderr "$tool" "$new" "$@" -o new.out
	run -0 --separate-stderr "$tool" "$old" "$@" -o old.out
	assert_equal "$stderr" "$tool: '$old' is deprecated; use '$new'"
	cmp new.out old.out
	rm new.out old.out
}

@test "old spellings still work for this release, with a warning" {
	mkmodel --hidden 16 --inter 32 --layers 1 --heads 2 --kv-heads 1 --vocab 64 model >/dev/null
	mktokens --vocab 64 --seed 1 4000 >data.u16
	old_spelling lora-eval -n --batches 2 -m model -d data.u16 -b 2 -T 8 --json
	assert_equal "$(jq .batches <<<"$output")" 2
	lora-generate -m model -n 4 --seed 3 -o p.u16
	old_spelling_file lora-generate --prompt-file --data p.u16 -m model -n 6 --seed 1
	old_spelling_file lora-generate --prompt-format --data-format u16 -m model -d p.u16 -n 6
	old_spelling_file lora-generate --format --output-format u32 -m model -n 6
	printf 'Hello' >h.txt
	old_spelling_file lora-tokenize --format --output-format u32 --tokenizer "$FIX/tokenizers/llama2.json" h.txt
	lora-generate --format u32 -m model -n 6 -o u32.out 2>/dev/null
	assert_equal "$(stat -c %s u32.out)" 28 # 7 u32 tokens
	mkadapter w=8x8x2:1,2 >a.lora
	old_spelling lora-inspect --layers --per-layer a.lora
	assert_output --partial $'\nlayer '
}

@test "one rule for what a path holds: a pipe is a .lora stream (lora-inspect read ahead into it)" {
	mkadapter w=8x8x2:1,2 >a.lora
	run -0 --separate-stderr lora-inspect --json <(cat a.lora)
	assert_equal "$(jq -c '[.kind, .num_layers, .ranks]' <<<"$output")" '["lora",1,[{"rank":2,"layers":1}]]'
	run -0 lora-convert <(cat a.lora) -o b.lora
	cmp <(lora-inspect --json --stats a.lora | jq -c '[.layers[].singular_values]') \
		<(lora-inspect --json --stats b.lora | jq -c '[.layers[].singular_values]')
}

@test "one rule for what a path holds: a .safetensors file or directory without adapter_config.json is a checkpoint" {
	mkmodel --hidden 16 --inter 32 --layers 1 --heads 2 --kv-heads 1 --vocab 64 model >/dev/null
	run -0 lora-inspect --json model/model.safetensors
	assert_equal "$(jq -r .kind <<<"$output")" safetensors
	run -0 lora-inspect --json model
	assert_equal "$(jq -r .kind <<<"$output")" safetensors
	# and no adapter to the tools that want one, each saying what is missing
	run -1 --separate-stderr lora-convert model/model.safetensors -o x.lora
	assert_equal "$stderr" "lora-convert: model/model.safetensors: no adapter_config.json beside it (not a PEFT adapter)"
	run -1 --separate-stderr lora-convert model -o x.lora
	assert_equal "$stderr" "lora-convert: model: no adapter_config.json (not a PEFT adapter directory)"
	run -1 --separate-stderr lora-convert model/config.json -o x.lora
	assert_equal "$stderr" "lora-convert: model/config.json: not a .lora file (bad magic)"
}

@test "one rule for what a path holds: the .lora magic wins over the name, the .lora name over the rest" {
	mkdir p
	mkadapter w=8x8x2:1,2 >p/adapter_model.safetensors
	echo '{"peft_type": "LORA"}' >p/adapter_config.json
	for t in lora-inspect lora-convert; do
		run -0 "$t" p/adapter_model.safetensors $([ $t = lora-convert ] && echo --to lora -o x.lora)
	done
	assert_equal "$(lora-inspect --json p/adapter_model.safetensors | jq -r .kind)" lora
	assert_equal "$(lora-inspect --json x.lora | jq -c '.ranks')" '[{"rank":2,"layers":1}]'
	mkmodel --hidden 16 --inter 32 --layers 1 --heads 2 --kv-heads 1 --vocab 64 model >/dev/null
	cp model/model.safetensors m.lora
	for t in lora-inspect lora-convert; do
		run -1 --separate-stderr "$t" m.lora
		assert_equal "$stderr" "$t: m.lora: not a .lora file (bad magic)"
	done
}

@test "-j N in the tools that factorise or merge: accepted, checked, same results" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 base >/dev/null
	mktuned --plant self_attn.q_proj=4,2,1,0.5 base tuned
	mkplanted w=16x12x3:3,2,1 >a.lora
	mkplanted --seed 2 w=16x12x3:3,2,0.5 >b.lora
	for j in 1 2; do
		lora-svd -j $j -m base --tuned tuned -r 2 --method exact -o s$j.lora
		lora-diff -j $j --json -m base --tuned tuned >d$j.json || true
		lora-inspect -j $j --stats --json a.lora >i$j.json
		lora-merge -j $j --combine svd -r 2 a.lora b.lora:0.5 -o c$j.lora
	done
	# the same to rounding: OpenBLAS may sum in another order on more threads
	run -0 lora-diff --tol 1e-6 s1.lora s2.lora
	run -0 lora-diff --tol 1e-6 c1.lora c2.lora
	ranks() { jq -c '[.tensors[] | [.name, .rank_50, .rank_90, .rank_99]]' "$1"; }
	assert_equal "$(ranks d1.json)" "$(ranks d2.json)"
	[ "$(jq '.tensors | length' d1.json)" -eq 21 ]
	jq -e -n --slurpfile a i1.json --slurpfile b i2.json \
		'[$a[0].layers[0].singular_values, $b[0].layers[0].singular_values] | transpose
		 | map(((.[0] - .[1]) | fabs) <= 1e-9 * .[0]) | all' >/dev/null ||
		fail "--stats differs with -j 2"
	for t in lora-svd lora-diff lora-inspect lora-merge; do
		run -2 --separate-stderr "$t" -j 0
		assert_equal "${stderr_lines[0]}" "$t: --threads: '0' is not an integer in [1, 1024]"
	done
}
