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
	avx512 && types="f32 bf16"
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

# ---- text: --prompt, --chat, --stop ----

# textmodel DIR TOKENIZER [CONFIG]: a model with the fixture tokenizer's
# vocabulary, with it as tokenizer.json (and a tokenizer_config.json)
textmodel() {
	local v
	case $2 in qwen) v=2782 ;; llama3) v=2766 ;; llama2) v=5308 ;; mistral) v=5310 ;; esac
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab $v --init-scale 0.2 "$1" >/dev/null
	cp "$FIX/tokenizers/$2.json" "$1/tokenizer.json"
	[ -z "${3:-}" ] || cp "$FIX/chat/$3.json" "$1/tokenizer_config.json"
}

# ids FILE: the u32 ids of FILE, one a line
ids() { od -An -v -tu4 "$1" | tr -s ' ' '\n' | grep -v '^$'; }

# u32 ID...: the ids as u32 token data on standard output
u32() {
	local i
	for i in "$@"; do
		printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((i & 255)) $((i >> 8 & 255)) $((i >> 16 & 255)) $((i >> 24 & 255)))"
	done
}

# continuation MODEL PROMPT_IDS ALL_IDS: the text of ALL_IDS past that of
# its first PROMPT_IDS ids, both decoded whole by lora-tokenize
continuation() {
	local head all
	head=$(head -c $((4 * $2)) "$3" | lora-tokenize -m "$1" --decode --data-format u32; printf x)
	all=$(lora-tokenize -m "$1" --decode --data-format u32 "$3"; printf x)
	head=${head%x} all=${all%x}
	[ "${all:0:${#head}}" = "$head" ] || fail "the prompt's text is not a prefix of the whole text"
	printf '%s' "${all:${#head}}"
}

@test "--prompt: the text of the ids sampled, as the whole sequence decodes past the prompt (byte-level and SentencePiece); the prompt as lora-tokenize encodes it" {
	for tk in qwen llama2; do
		textmodel m $tk
		printf 'Hello world, caf\xc3\xa9' > p.txt
		lora-tokenize -m m p.txt --output-format u32 -o p.u32
		np=$(($(stat -c %s p.u32) / 4))
		lora-generate -m m --prompt "$(cat p.txt)" -n 60 --temperature 0 --output-format u32 -o all.u32
		cmp -n $((4 * np)) p.u32 all.u32
		assert_equal "$(stat -c %s all.u32)" $((4 * (np + 60)))
		run -0 --separate-stderr lora-generate -m m --prompt "$(cat p.txt)" -n 60 --temperature 0
		want=$(continuation m "$np" all.u32; printf x)
		assert_equal "$output" "${want%x}"
		[ ${#output} -gt 20 ]
		# whole characters: the output is UTF-8
		printf '%s' "$output" | iconv -f UTF-8 -t UTF-8 >/dev/null
		# a file gets the same text
		lora-generate -m m --prompt "$(cat p.txt)" -n 60 --temperature 0 -o out.txt
		assert_equal "$(cat out.txt; printf x)" "${want%x}x"
		rm -rf m p.u32 all.u32 out.txt
	done
}

@test "--chat: one user message through the chat template with the generation prompt, special tokens as the template wrote them" {
	textmodel m qwen qwen3
	lora-generate -m m --chat 'Hi <there>' -n 5 --temperature 0 --output-format u32 -o all.u32
	printf '<|im_start|>user\nHi <there><|im_end|>\n<|im_start|>assistant\n' |
		lora-tokenize -m m --no-special --output-format u32 -o p.u32
	np=$(($(stat -c %s p.u32) / 4))
	cmp -n $((4 * np)) p.u32 all.u32
	assert_equal "$(stat -c %s all.u32)" $((4 * (np + 5)))
	# the first ids: <|im_start|> and, last before the reply, a newline
	assert_equal "$(ids p.u32 | head -1)" 2757
	# Qwen3 without thinking: the generation prompt holds an empty think block
	lora-generate -m m --chat 'Hi <there>' --no-thinking -n 5 --temperature 0 --output-format u32 -o nt.u32
	printf '<|im_start|>user\nHi <there><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n' |
		lora-tokenize -m m --no-special --output-format u32 -o q.u32
	cmp -n "$(stat -c %s q.u32)" q.u32 nt.u32
	# the reply as text
	run -0 --separate-stderr lora-generate -m m --chat 'Hi <there>' -n 5 --temperature 0
	want=$(continuation m "$np" all.u32; printf x)
	assert_equal "$output" "${want%x}"
	# Mistral's [INST] from the template in tokenizer_config.json, its BOS written by it
	textmodel mi mistral mistral
	lora-generate -m mi --chat 'Hi' -n 3 --temperature 0 --output-format u32 -o mi.u32
	printf '<s>[INST] Hi [/INST]' | lora-tokenize -m mi --no-special --output-format u32 -o mp.u32
	cmp -n "$(stat -c %s mp.u32)" mp.u32 mi.u32
	assert_equal "$(ids mp.u32 | head -2 | tr '\n' ' ')" '1 5308 '
	# a format named: Llama 3's, on a config without a template
	textmodel l3 llama3 llama-tokens
	lora-generate -m l3 --chat 'Hi' --chat-format llama3 -n 3 --temperature 0 --output-format u32 -o l3.u32
	printf '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n' |
		lora-tokenize -m l3 --no-special --output-format u32 -o l3p.u32
	cmp -n "$(stat -c %s l3p.u32)" l3p.u32 l3.u32
}

@test "text stops at the EOS of tokenizer_config.json and of generation_config.json, which are not printed" {
	textmodel m qwen
	lora-generate -m m --prompt 'Hello world' -n 40 --temperature 0 --output-format u32 -o all.u32
	np=$(($(printf 'Hello world' | lora-tokenize -m m --output-format u32 | wc -c) / 4))
	mapfile -t gen < <(ids all.u32 | tail -n +$((np + 1)))
	# generation_config.json's eos_token_id (a list): the 6th sampled id stops
	stop=${gen[5]}
	k=5
	for i in 0 1 2 3 4; do [ "${gen[$i]}" != "$stop" ] || k=$i; done
	printf '{"eos_token_id": [7, %d]}' "$stop" > m/generation_config.json
	run -0 --separate-stderr lora-generate -m m --prompt 'Hello world' -n 40 --temperature 0
	head -c $((4 * (np + k))) all.u32 > cut.u32
	want=$(continuation m "$np" cut.u32; printf x)
	assert_equal "$output" "${want%x}"
	rm m/generation_config.json
	# tokenizer_config.json's eos_token: the first sampled token that is a plain word
	for ((k = 0; k < 40; k++)); do
		w=$(u32 "${gen[$k]}" | lora-tokenize -m m --decode --data-format u32)
		[[ $w =~ ^[a-z]+$ ]] && break
	done
	[ "$k" -lt 40 ]
	for ((i = 0; i < k; i++)); do [ "${gen[$i]}" != "${gen[$k]}" ] || fail "not the first"; done
	printf '{"eos_token": {"content": "%s", "special": true}}' "$w" > m/tokenizer_config.json
	run -0 --separate-stderr lora-generate -m m --prompt 'Hello world' -n 40 --temperature 0
	head -c $((4 * (np + k))) all.u32 > cut.u32
	want=$(continuation m "$np" cut.u32; printf x)
	assert_equal "$output" "${want%x}"
}

@test "--stop: the text ends before the first stop string, which is not printed" {
	textmodel m qwen
	full=$(lora-generate -m m --prompt 'Hello world' -n 60 --temperature 0; printf x)
	full=${full%x}
	[ ${#full} -gt 30 ]
	s1=${full:20:4} s2=${full:12:3}
	run -0 --separate-stderr lora-generate -m m --prompt 'Hello world' -n 60 --temperature 0 --stop "$s1"
	assert_equal "$output" "${full%%"$s1"*}"
	# the earliest of several
	run -0 --separate-stderr lora-generate -m m --prompt 'Hello world' -n 60 --temperature 0 --stop "$s1" --stop "$s2"
	assert_equal "$output" "${full%%"$s2"*}"
	# a stop string that never comes holds nothing back at the end
	run -0 --separate-stderr lora-generate -m m --prompt 'Hello world' -n 60 --temperature 0 --stop "${full: -2}QQ"
	assert_equal "$output" "$full"
}

@test "text: errors and usage" {
	run -1 --separate-stderr lora-generate -m model --prompt hi -n 3
	assert_equal "$stderr" "lora-generate: model: no tokenizer.json in the model directory (--tokenizer FILE names one)"
	assert_output ''
	# --tokenizer names one; ids the model does not have are named
	run -1 --separate-stderr lora-generate -m model --tokenizer "$FIX/tokenizers/qwen.json" --prompt '<|im_end|>' -n 3
	assert_equal "$stderr" "lora-generate: --prompt: token 2758 of the text is not below vocab_size 300 of model"
	cp "$FIX/tokenizers/qwen.json" model/tokenizer.json
	run -1 --separate-stderr lora-generate -m model --chat hi -n 3
	assert_equal "$stderr" "lora-generate: model/tokenizer_config.json: No such file or directory"
	printf '{"chat_template": "{{ messages }}"}' > model/tokenizer_config.json
	run -1 --separate-stderr lora-generate -m model --chat hi -n 3
	assert_equal "$stderr" "lora-generate: model/tokenizer_config.json: chat_template: not a template of a known family (llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, mistral); name a chat format to render it as one of them"
	run -2 --separate-stderr lora-generate -m model --chat hi --chat-format llama4 -n 3
	assert_equal "$stderr" "lora-generate: unknown chat format 'llama4' (llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, mistral)"
	run -1 --separate-stderr lora-generate -m model --chat hi --chat-format mistral -n 3
	assert_equal "$stderr" "lora-generate: model/tokenizer_config.json: no bos_token, which the mistral template writes"
	run -2 --separate-stderr lora-generate -m model --prompt a --chat b
	assert_equal "${stderr_lines[0]}" "lora-generate: --prompt and --chat: one or the other"
	run -2 --separate-stderr lora-generate -m model --prompt a -d x.u16
	assert_equal "${stderr_lines[0]}" "lora-generate: --prompt: the prompt is text, not -d or --start"
	run -2 --separate-stderr lora-generate -m model --stop x
	assert_equal "${stderr_lines[0]}" "lora-generate: --stop: needs --prompt or --chat"
	run -2 --separate-stderr lora-generate -m model --prompt a --stop ''
	assert_equal "${stderr_lines[0]}" "lora-generate: --stop: the text is empty"
	run -2 --separate-stderr lora-generate -m model --prompt a --stop x --output-format u16
	assert_equal "${stderr_lines[0]}" "lora-generate: --stop: text only, not with --output-format"
	run -2 --separate-stderr lora-generate -m model --prompt a --rows 2
	assert_equal "${stderr_lines[0]}" "lora-generate: --rows: text is one row (--output-format writes rows of ids)"
	run -2 --separate-stderr lora-generate -m model --no-thinking --prompt a
	assert_equal "${stderr_lines[0]}" "lora-generate: --no-thinking: needs --chat"
}

@test "text goes to a terminal, as it comes" {
	textmodel m qwen
	want=$(lora-generate -m m --prompt 'Hello world' -n 20 --temperature 0 | od -An -c)
	run -0 script -qec "lora-generate -m m --prompt 'Hello world' -n 20 --temperature 0 | od -An -c" /dev/null
	[ -n "$want" ]
	# a pipe after the terminal's stdout: the same bytes
	run -0 script -qec "lora-generate -m m --prompt 'Hello world' -n 20 --temperature 0; echo status=\$?" /dev/null
	assert_output --partial "status=0"
}
