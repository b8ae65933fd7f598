#!/usr/bin/env bats
# lora-tokenize: every promise of lora-tokenize(1). Expected ids and texts
# are the Hugging Face tokenizers library's, from the golden files of
# tests/fixtures/tokenizers (tests/ref/tokenizer_ref.js).

setup() {
	load test_helper/common-setup
	_common_setup
	TOK=$FIX/tokenizers
	mkdir m
	cp "$TOK/llama2.json" m/tokenizer.json
}

# u16 FILE / u32 FILE: the ids of a token file, one per line
u16() { od -An -v -tu2 "$1" | tr -s ' ' '\n' | grep -v '^$' || true; }
u32() { od -An -v -tu4 "$1" | tr -s ' ' '\n' | grep -v '^$' || true; }

# put32 ID...: the ids as little-endian u32 on standard output
put32() { echo "/dev/stdout $*" | put32s; }

# put32s: for each input line "FILE ID...", FILE made of the ids as
# little-endian u32 (one awk for many files: no shell loop per id)
put32s() {
	LC_ALL=C awk '{ printf "" > $1
		for (i = 2; i <= NF; i++) printf "%c%c%c%c", $i % 256, int($i / 256) % 256, int($i / 65536) % 256, int($i / 16777216) % 256 > $1
		close($1) }'
}

# texts NAME FILTER: one file per golden text the jq FILTER keeps, named
# in corpus order t000.txt, t001.txt, ...
texts() {
	local i=0 t
	while IFS= read -r -d '' t; do
		printf '%s' "$t" >"$(printf 't%03d.txt' $i)"
		i=$((i + 1))
	done < <(jq -j ".cases[] | select($2) | .text + \"\\u0000\"" "$TOK/$1.golden.json")
}

# hello: the library's ids of "Hello world" with the trimmed Llama 2 (m/)
hello() { jq -r '.cases[] | select(.text == "Hello world") | .ids | join(" ")' "$TOK/llama2.golden.json"; }

# the golden texts that are one line: no line break in them, not empty
ONE_LINE='.text != "" and (.text | test("[\r\n]") | not)'

@test "lora-tokenize -h, --version, unknown option, usage errors" {
	run -0 lora-tokenize -h
	assert_line --index 0 'Usage: lora-tokenize -m MODEL [options] [FILE...] [-o OUT]'
	assert_output --partial 'Examples:'
	run -0 lora-tokenize --version
	assert_output 'lora-tokenize 0.1.0'
	run -2 --separate-stderr lora-tokenize --bogus
	assert_equal "${stderr_lines[0]}" "lora-tokenize: unknown option '--bogus'"
	run -2 --separate-stderr lora-tokenize a.txt
	assert_equal "${stderr_lines[0]}" "lora-tokenize: need -m MODEL or --tokenizer FILE"
	run -2 --separate-stderr lora-tokenize -m m --tokenizer m/tokenizer.json a.txt
	assert_equal "${stderr_lines[0]}" "lora-tokenize: -m and --tokenizer name the same thing: give one"
	run -2 --separate-stderr lora-tokenize -m m --decode --lines x.bin
	assert_equal "${stderr_lines[0]}" "lora-tokenize: --lines is for encoding, not --decode"
	run -2 --separate-stderr lora-tokenize -m m --decode --output-format u16 x.bin
	assert_equal "${stderr_lines[0]}" "lora-tokenize: --output-format is for encoding, not --decode"
	run -2 --separate-stderr lora-tokenize -m m --decode --train-on-inputs x.bin
	assert_equal "${stderr_lines[0]}" "lora-tokenize: --train-on-inputs is for encoding, not --decode"
	run -2 --separate-stderr lora-tokenize -m m --data-format u16 a.txt
	assert_equal "${stderr_lines[0]}" "lora-tokenize: --data-format is for --decode"
	run -2 --separate-stderr lora-tokenize -m m --output-format llmc a.txt
	assert_equal "${stderr_lines[0]}" "lora-tokenize: --output-format: 'llmc' is not tok, u16 or u32"
}

@test "each file is one document: the library's ids, BOS/EOS per document, for all eight tokenizers" {
	for name in llama3 qwen gpt2 smollm llama2 mistral metaspace features; do
		rm -f t*.txt
		texts $name '.text != ""'
		lora-tokenize --tokenizer "$TOK/$name.json" --output-format u32 t*.txt -f -o ids.u32
		jq '.cases[] | select(.text != "") | .ids[]' "$TOK/$name.golden.json" >want
		u32 ids.u32 >got
		cmp want got || fail "$name: ids differ from the library's"
		lora-tokenize --tokenizer "$TOK/$name.json" --no-special t*.txt >plain.u16
		jq '.cases[] | select(.text != "") | .plain[]' "$TOK/$name.golden.json" >want
		u16 plain.u16 >got
		cmp want got || fail "$name: ids without special tokens differ from the library's"
	done
	# Llama 3: "Hello world" is <|begin_of_text|> Hello world; Llama 2 <s> ▁Hello ▁world
	printf 'Hello world' | lora-tokenize --tokenizer "$TOK/llama3.json" >a
	assert_equal "$(u16 a | tr '\n' ' ')" "$(jq -r '.cases[] | select(.text == "Hello world") | .ids | join(" ")' "$TOK/llama3.golden.json") "
	assert_equal "$(u16 a | head -1)" "$(jq '.added_tokens[] | select(.content == "<|begin_of_text|>") | .id' "$TOK/llama3.json")"
}

@test "--lines: each line a document; CRLF and a last line without newline; empty lines skipped" {
	texts llama2 "$ONE_LINE"
	n=$(ls t*.txt | wc -l)
	[ "$n" -ge 40 ]
	# line 1 ends CRLF, an empty line and an empty CRLF line after line 2,
	# no newline after the last; U+0085 and U+2028 inside lines stay text
	: >lines.txt
	i=0
	for f in t*.txt; do
		cat "$f" >>lines.txt
		i=$((i + 1))
		case $i in 1) printf '\r\n' >>lines.txt ;; 2) printf '\n\n\r\n' >>lines.txt ;; "$n") ;; *) printf '\n' >>lines.txt ;; esac
	done
	grep -q $'\xc2\x85' lines.txt
	lora-tokenize -m m --lines lines.txt -o lines.bin
	jq ".cases[] | select($ONE_LINE) | .ids[]" "$TOK/llama2.golden.json" >want
	u16 lines.bin >got
	cmp want got
	# the same file as one document has one BOS, not one per line (and
	# the <s> some texts spell out)
	lora-tokenize -m m lines.txt -o doc.bin
	assert_equal "$(u16 doc.bin | head -1) $(($(u16 lines.bin | grep -cx 1) - $(u16 doc.bin | grep -cx 1)))" "1 $((n - 1))"
}

@test "-j: batches of many documents give the same bytes at any thread count" {
	texts llama3 "$ONE_LINE"
	jq -r ".cases[] | select($ONE_LINE) | .text" "$TOK/llama3.golden.json" >once.txt
	jq ".cases[] | select($ONE_LINE) | .ids[]" "$TOK/llama3.golden.json" >once.ids
	# past one batch (65536 documents or 4 MiB) and one read (1 MiB)
	lines=$(wc -l <once.txt)
	reps=$((72000 / lines + 1))
	[ $((reps * $(stat -c %s once.txt))) -gt $((4 << 20)) ] || reps=$(((4 << 20) / $(stat -c %s once.txt) + 1))
	rep() { awk -v r="$1" '{ a[NR] = $0 } END { for (k = 0; k < r; k++) for (i = 1; i <= NR; i++) print a[i] }' "$2"; }
	rep $reps once.txt >many.txt
	rep $reps once.ids >want
	[ "$(wc -l <many.txt)" -gt 65536 ] && [ "$(stat -c %s many.txt)" -gt $((4 << 20)) ]
	for j in 1 2 3; do
		lora-tokenize --tokenizer "$TOK/llama3.json" --lines -j $j many.txt -o j$j.u32
	done
	u32 j1.u32 >got
	cmp want got
	cmp j1.u32 j2.u32
	cmp j1.u32 j3.u32
	# whole files on several threads, in input order
	lora-tokenize --tokenizer "$TOK/llama3.json" -j 2 t*.txt t*.txt -o f2.u32
	lora-tokenize --tokenizer "$TOK/llama3.json" -j 1 t*.txt t*.txt -o f1.u32
	cmp f1.u32 f2.u32
	cat once.ids once.ids >want2
	u32 f1.u32 >got2
	cmp want2 got2
}

@test "standard input: by default and as '-' among files" {
	printf 'Hello world' >a.txt
	printf 'Привет, мир!' >b.txt
	printf 'Hello world' | lora-tokenize -m m >x
	lora-tokenize -m m a.txt >y
	cmp x y
	lora-tokenize -m m a.txt - a.txt <b.txt -o z
	g=$TOK/llama2.golden.json
	hello=$(jq -r '.cases[] | select(.text == "Hello world") | .ids | join(" ")' "$g")
	privet=$(jq -r '.cases[] | select(.text == "Привет, мир!") | .ids | join(" ")' "$g")
	assert_equal "$(u16 z | tr '\n' ' ')" "$hello $privet $hello "
	run -0 script -qec "lora-tokenize -m m >/dev/null; echo status=\$?" /dev/null
	assert_output --partial "lora-tokenize: standard input is a terminal: give a file, or pipe one in"
	assert_output --partial "status=2"
}

@test "--output-format: u16 by default for text, u32 for -o *.u32; u16 refused when the vocabulary does not fit" {
	printf 'Hello world' >a.txt
	lora-tokenize -m m a.txt -o a.bin
	lora-tokenize -m m a.txt -o a.u32
	lora-tokenize -m m a.txt --output-format u32 -o b.bin
	n=$(hello | wc -w)
	assert_equal "$(stat -c %s a.bin) $(stat -c %s a.u32) $(stat -c %s b.bin)" "$((2 * n)) $((4 * n)) $((4 * n))"
	cmp a.u32 b.bin
	assert_equal "$(u16 a.bin | tr '\n' ' ')" "$(u32 a.u32 | tr '\n' ' ')"
	# ids up to 70000: 70001 do not fit u16 (an added token takes the id
	# the vocabulary gives it)
	jq -c '.model.vocab["<big>"] = 70000 | .added_tokens += [{"id": 70000, "content": "<big>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}]' \
		"$TOK/qwen.json" >big.json
	run -2 --separate-stderr lora-tokenize --tokenizer big.json a.txt -o big.bin
	assert_equal "$stderr" "lora-tokenize: big.json: 70001 token ids do not fit --output-format u16; use u32"
	assert_file_not_exists big.bin
	printf 'x<big>' >big.txt
	lora-tokenize --tokenizer big.json big.txt -o big.u32
	assert_equal "$(u32 big.u32 | tail -1)" 70000
}

@test "-o: atomic, an existing file kept without -f; binary never to a terminal" {
	printf 'Hello world' >a.txt
	printf 'bad \xff' >bad.txt
	echo old >out.bin
	run -1 --separate-stderr lora-tokenize -m m a.txt -o out.bin
	assert_regex "$stderr" '^lora-tokenize: out.bin: .*exists'
	assert_equal "$(cat out.bin)" old
	lora-tokenize -m m -f a.txt -o out.bin
	assert_equal "$(u16 out.bin | tr '\n' ' ')" "$(hello) "
	# an error in the second file: nothing written, nothing left behind
	mkdir o
	run -1 --separate-stderr lora-tokenize -m m a.txt bad.txt -o o/new.bin
	assert_equal "$stderr" "lora-tokenize: bad.txt: invalid UTF-8 at byte 4 (line 1)"
	assert_equal "$(ls -A o)" ""
	run -0 script -qec "lora-tokenize -m m a.txt; echo status=\$?" /dev/null
	assert_output --partial "lora-tokenize: refusing to write binary data to a terminal; use -o FILE or a pipe"
	assert_output --partial "status=2"
	# text is fine on a terminal
	lora-tokenize -m m a.txt -o a.bin
	run -0 script -qec "lora-tokenize -m m --decode a.bin" /dev/null
	assert_output "<s> Hello world"
}

@test "errors: one line naming the file (bad UTF-8 with its byte and line, missing files, unsupported parts)" {
	printf 'line one\nline two \xe2\x82\n' >bad.txt
	run -1 --separate-stderr lora-tokenize -m m bad.txt -o x
	assert_equal "$stderr" "lora-tokenize: bad.txt: invalid UTF-8 at byte 18 (line 2)"
	run -1 --separate-stderr lora-tokenize -m m --lines bad.txt -o x
	assert_equal "$stderr" "lora-tokenize: bad.txt: invalid UTF-8 at byte 18 (line 2)"
	# far into a long file, past reads and a batch: the file's own offset
	yes 'a line of some text' | head -n 150000 >long.txt
	size=$(stat -c %s long.txt)
	printf 'ok \xc3(\n' >>long.txt
	run -1 --separate-stderr lora-tokenize -m m --lines long.txt -o x
	assert_equal "$stderr" "lora-tokenize: long.txt: invalid UTF-8 at byte $((size + 3)) (line 150001)"
	# the same after another file's lines, still waiting in the batch
	run -1 --separate-stderr lora-tokenize -m m --lines bad.txt long.txt -o x
	assert_equal "$stderr" "lora-tokenize: bad.txt: invalid UTF-8 at byte 18 (line 2)"
	printf 'a\nb\n' >ok.txt
	run -1 --separate-stderr lora-tokenize -m m --lines ok.txt long.txt -o x
	assert_equal "$stderr" "lora-tokenize: long.txt: invalid UTF-8 at byte $((size + 3)) (line 150001)"
	run -1 --separate-stderr lora-tokenize -m m - -o x <bad.txt
	assert_equal "$stderr" "lora-tokenize: standard input: invalid UTF-8 at byte 18 (line 2)"
	# overlong, surrogate
	printf '\xc0\xaf' >overlong.txt
	printf 'a\xed\xa0\x80' >surrogate.txt
	run -1 --separate-stderr lora-tokenize -m m overlong.txt surrogate.txt -o x
	assert_equal "$stderr" "lora-tokenize: overlong.txt: invalid UTF-8 at byte 0 (line 1)"
	run -1 --separate-stderr lora-tokenize -m m surrogate.txt -o x
	assert_equal "$stderr" "lora-tokenize: surrogate.txt: invalid UTF-8 at byte 1 (line 1)"
	run -1 --separate-stderr lora-tokenize -m m nope.txt -o x
	assert_equal "$stderr" "lora-tokenize: nope.txt: No such file or directory"
	mkdir empty
	run -1 --separate-stderr lora-tokenize -m empty bad.txt -o x
	assert_equal "$stderr" "lora-tokenize: empty: no tokenizer.json in the model directory (--tokenizer FILE names one)"
	run -1 --separate-stderr lora-tokenize -m nodir bad.txt -o x
	assert_equal "$stderr" "lora-tokenize: nodir: No such file or directory"
	run -1 --separate-stderr lora-tokenize --tokenizer none.json bad.txt -o x
	assert_equal "$stderr" "lora-tokenize: none.json: No such file or directory"
	jq -c '.pre_tokenizer = {"type": "Whitespace"}' "$TOK/llama2.json" >ws.json
	run -1 --separate-stderr lora-tokenize --tokenizer ws.json bad.txt -o x
	assert_equal "$stderr" "lora-tokenize: ws.json: pre_tokenizer type 'Whitespace' is not supported"
	head -c 1000 "$TOK/llama2.json" >cut.json
	run -1 --separate-stderr lora-tokenize --tokenizer cut.json bad.txt -o x
	assert_regex "$stderr" '^lora-tokenize: cut.json: '
	assert_file_not_exists x
	# a model given by a file in its directory finds tokenizer.json beside it
	echo '{}' >m/config.json
	printf 'Hello world' | lora-tokenize -m m/config.json >a
	assert_equal "$(u16 a | tr '\n' ' ')" "$(hello) "
}

@test "--decode: the library's texts, special tokens kept or left out, cut characters, every tokenizer" {
	for name in llama3 qwen gpt2 smollm llama2 mistral metaspace features; do
		rm -f d*.u32
		g=$TOK/$name.golden.json
		jq -r '[.cases[] | select(.text != "")] | to_entries[] | "d\("00\(.key)"[-3:]).u32 \(.value.ids | join(" "))"' "$g" | put32s
		jq -j '[.cases[] | select(.text != "") | .decoded] | add' "$g" >want
		lora-tokenize --tokenizer "$TOK/$name.json" --decode d*.u32 -f -o got
		cmp want got || fail "$name: decoded texts differ from the library's"
		jq -j '[.cases[] | select(.text != "") | .skipped] | add' "$g" >want
		lora-tokenize --tokenizer "$TOK/$name.json" --decode --no-special d*.u32 -f -o got
		cmp want got || fail "$name: texts without special tokens differ from the library's"
		# id sequences cut inside a character (byte-level and byte-fallback)
		rm -f d*.u32
		jq -r '.decodes | to_entries[] | "d\("00\(.key)"[-3:]).u32 \(.value.ids | join(" "))"' "$g" | put32s
		jq -j '[.decodes[] | .text] | add' "$g" >want
		lora-tokenize --tokenizer "$TOK/$name.json" --decode d*.u32 -f -o got
		cmp want got || fail "$name: decodings of cut sequences differ from the library's"
	done
}

@test "encode then decode gives the text back (SentencePiece: the leading space stripped)" {
	printf 'Hello world' >a.txt
	lora-tokenize -m m a.txt | lora-tokenize -m m --decode --data-format u16 --no-special - >b.txt
	assert_equal "$(cat b.txt)" "Hello world"
	# the library's decodings of '    leading', with and without <s>
	g=$TOK/llama2.golden.json
	printf '    leading' | lora-tokenize -m m | lora-tokenize -m m --decode --data-format u16 - >c.txt
	assert_equal "$(cat c.txt)" "$(jq -j '.cases[] | select(.text == "    leading") | .decoded' "$g")"
	printf '    leading' | lora-tokenize -m m | lora-tokenize -m m --decode --data-format u16 --no-special - >d.txt
	assert_equal "$(cat d.txt)" "$(jq -j '.cases[] | select(.text == "    leading") | .skipped' "$g")"
}

@test "--decode: token formats as lora-eval reads them; ids outside the vocabulary; bad files" {
	# shellcheck disable=SC2046
	put32 $(hello) >a.u32
	printf 'Hello world' | lora-tokenize -m m >a.bin
	run -0 lora-tokenize -m m --decode --data-format u16 <a.bin
	assert_output "<s> Hello world"
	# llm.c's header, recognised whatever the name
	set -- $(hello)
	args=() i=0
	for v; do args+=(--set "$i=$v"); i=$((i + 1)); done
	mktokens --format llmc --vocab 1 "${args[@]}" $# >a.tok
	run -0 lora-tokenize -m m --decode a.tok
	assert_output "<s> Hello world"
	run -0 lora-tokenize -m m --decode --data-format llmc a.tok
	assert_output "<s> Hello world"
	run -0 lora-tokenize -m m --decode a.u32
	assert_output "<s> Hello world"
	run -0 lora-tokenize -m m --decode --data-format u32 a.u32
	assert_output "<s> Hello world"
	cp a.u32 a.dat
	run -2 --separate-stderr lora-tokenize -m m --decode a.dat
	assert_equal "$stderr" "lora-tokenize: a.dat: cannot tell the token format from the name (.bin, .u16, .u32, .tok) or a header: give --data-format"
	run -2 --separate-stderr lora-tokenize -m m --decode - <a.u32
	assert_equal "$stderr" "lora-tokenize: standard input: cannot tell the token format from the name (.bin, .u16, .u32, .tok) or a header: give --data-format"
	put32 1 40000 >big.u32
	[ "$(jq '.model.vocab | length' m/tokenizer.json)" -lt 40000 ]
	run -1 --separate-stderr lora-tokenize -m m --decode big.u32 -o out.txt
	assert_equal "$stderr" "lora-tokenize: big.u32: token 40000 at position 1 is >= vocab_size $(jq '.model.vocab | length' m/tokenizer.json)"
	assert_file_not_exists out.txt
	printf '\001\000\002' >odd.bin
	run -1 --separate-stderr lora-tokenize -m m --decode odd.bin
	assert_equal "$stderr" "lora-tokenize: odd.bin: 3 bytes is not a whole number of 2-byte tokens"
	run -1 --separate-stderr lora-tokenize -m m --decode missing.bin
	assert_equal "$stderr" "lora-tokenize: missing.bin: No such file or directory"
}

@test "progress on a terminal: the totals at the end; nothing with -q or when stderr is a file" {
	printf 'Hello world' >a.txt
	n=$(hello | wc -w)
	run -0 script -qec "lora-tokenize -m m a.txt a.txt -o x.bin" /dev/null
	assert_output --partial "lora-tokenize: $((2 * n)) tokens from 2 documents"
	run -0 script -qec "lora-tokenize -q -m m a.txt -o y.bin" /dev/null
	assert_output ''
	run -0 --separate-stderr lora-tokenize -m m a.txt -o z.bin
	assert_equal "$stderr" ''
	cmp y.bin z.bin
}

# model DIR TOKENIZER CONFIG: a model directory of fixture files
model() { mkdir -p "$1" && cp "$TOK/$2.json" "$1/tokenizer.json" && cp "$3" "$1/tokenizer_config.json"; }

# golden NAME ARG...: lora-tokenize ARG... -o out.NAME is the golden
# tests/fixtures/jsonl/NAME byte for byte
golden() { local g=$1; shift; lora-tokenize "$@" -o "out.$g" && cmp "out.$g" "$FIX/jsonl/$g"; }

# tokcount FILE: the token and document counts of a tok file's trailer
tokcount() { tail -c 24 "$1" | od -An -v -tu8 -N16 | tr -s ' ' | sed 's/^ //'; }

@test "JSONL: text, prompt/completion and alpaca examples as axolotl tokenizes them; chats through the template; the library's ids" {
	J=$FIX/jsonl
	model l2 llama2 "$J/llama2.config.json"
	model q qwen "$FIX/chat/qwen2.5.json"
	golden llama2.examples.tok -m l2 "$J/examples.jsonl"
	golden llama2.examples.inputs.tok -m l2 --train-on-inputs "$J/examples.jsonl"
	golden qwen.examples.tok -m q "$J/examples.jsonl"
	golden qwen.chats.tok -m q "$J/chats.jsonl"
	golden qwen.chats.inputs.tok -m q --train-on-inputs "$J/chats.jsonl"
	# standard input needs --jsonl; JSONL goes out as tok whatever the name
	lora-tokenize -m q --jsonl <"$J/chats.jsonl" >f.out
	cmp f.out "$J/qwen.chats.tok"
	# bare ids: the same ids, boundaries and mask dropped
	lora-tokenize -m l2 "$J/examples.jsonl" -o g.bin
	read -r n docs < <(tokcount out.llama2.examples.tok)
	assert_equal "$docs" 9
	tail -c +25 out.llama2.examples.tok | head -c $((2 * n)) | cmp - g.bin
	# decoding reads tok files
	lora-tokenize -m q --decode out.qwen.chats.tok -o d.txt
	run -0 grep -c '<|im_start|>assistant' d.txt
	assert_output 3
}

@test "JSONL: Llama 3 examples and chats (its template named), Mistral [INST] chats; the library's ids and masks" {
	J=$FIX/jsonl
	model l3 llama3 "$FIX/chat/llama-tokens.json"
	model mi llama2 "$FIX/chat/mistral.json"
	golden llama3.examples.tok -m l3 "$J/examples.jsonl"
	golden llama3.examples.inputs.tok -m l3 --train-on-inputs "$J/examples.jsonl"
	# --no-special: no BOS, no EOS appended
	golden llama3.examples.plain.tok -m l3 --no-special "$J/examples.jsonl"
	golden llama3.chats.tok -m l3 --chat-format llama3 "$J/chats.jsonl"
	golden llama3.chats.inputs.tok -m l3 --chat-format llama3 --train-on-inputs "$J/chats.jsonl"
	golden llama2.turns.tok -m mi "$J/turns.jsonl"
	golden llama2.turns.inputs.tok -m mi --train-on-inputs "$J/turns.jsonl"
	# llama-tokens.json holds no template: the format must be named
	run -1 --separate-stderr lora-tokenize -m l3 "$J/chats.jsonl" -o g.tok
	assert_regex "$stderr" '^lora-tokenize: .*chats\.jsonl: line 1 \(byte 0\): l3/tokenizer_config\.json: no chat_template '
	assert_file_not_exists g.tok
}

@test "JSONL chats: special tokens in messages match by default, stay text with --literal-content; a template's refusal" {
	J=$FIX/jsonl
	model q qwen "$FIX/chat/qwen2.5.json"
	model l3 llama3 "$FIX/chat/llama-tokens.json"
	model mi llama2 "$FIX/chat/mistral.json"
	# by default, as apply_chat_template: text that spells a special token is it
	golden qwen.specials.tok -m q "$J/specials.jsonl"
	golden llama3.specials.tok -m l3 --chat-format llama3 "$J/specials.jsonl"
	# literal: special tokens only where the template put them (the
	# library's encode_special_tokens on the stretches between them)
	golden qwen.specials.literal.tok -m q --literal-content "$J/specials.jsonl"
	golden llama3.specials.literal.tok -m l3 --chat-format llama3 --literal-content "$J/specials.jsonl"
	golden llama2.turns.literal.tok -m mi --literal-content "$J/turns.jsonl"
	# and nothing else changes: chats with no special token of the model's
	# in their messages give the default's ids
	golden llama3.chats.tok -m l3 --chat-format llama3 --literal-content "$J/chats.jsonl"
	printf '%s\n' '{"messages": [{"role": "user", "content": "\n\nhi"}, {"role": "assistant", "content": "\n4"}]}' >w.jsonl
	lora-tokenize -m q w.jsonl -o g.tok
	lora-tokenize -m q --literal-content w.jsonl -o h.tok
	cmp g.tok h.tok
	# a message's text that is one special token
	printf '%s\n' '{"messages": [{"role": "user", "content": "a<|im_end|>b"}, {"role": "assistant", "content": "ok"}]}' >c.jsonl
	end=$(jq '.added_tokens[] | select(.content == "<|im_end|>") | .id' q/tokenizer.json)
	lora-tokenize -m q c.jsonl --output-format u16 -o a.bin
	lora-tokenize -m q c.jsonl --literal-content --output-format u16 -o b.bin
	# the default system turn, the user's, the assistant's: 3; and one inside
	assert_equal "$(u16 a.bin | grep -cx "$end")" 4
	assert_equal "$(u16 b.bin | grep -cx "$end")" 3
	# Mistral's template takes no system message
	model mi llama2 "$FIX/chat/mistral.json"
	printf '%s\n' '{"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}' >s.jsonl
	run -1 --separate-stderr lora-tokenize -m mi s.jsonl -o s.tok
	assert_regex "$stderr" '^lora-tokenize: s\.jsonl: line 1 \(byte 0\): message .*alternate user/assistant'
	assert_file_not_exists s.tok
}

@test "JSONL errors: one line with the file, line and byte offset; nothing written" {
	model q qwen "$FIX/chat/qwen2.5.json"
	good='{"text": "fine"}'
	check() {
		printf '%s\n%s\n' "$good" "$1" >bad.jsonl
		run -1 --separate-stderr lora-tokenize -m q bad.jsonl -o out.tok
		assert_equal "$stderr" "lora-tokenize: bad.jsonl: $2"
		assert_file_not_exists out.tok
	}
	check '[1, 2]' "line 2 (byte 17): the line is not a JSON object"
	check '{"text": "a"' "line 2 (byte 17): the line is not valid JSON (error near byte 11)"
	check '{"prompt": "p"}' "line 2 (byte 17): a prompt/completion example without 'completion'"
	check '{"completion": 3, "prompt": "p"}' "line 2 (byte 17): 'completion' is not a string"
	check '{"instruction": "i", "input": "x"}' "line 2 (byte 17): an instruction example without 'output'"
	check '{"title": "t"}' "line 2 (byte 17): none of the keys text, prompt/completion, instruction/output, messages"
	check '{"messages": [{"role": "robot", "content": "x"}]}' \
		"line 2 (byte 17): message 1: unknown role 'robot' (system, user or assistant)"
	check '{"messages": [{"role": "user"}]}' "line 2 (byte 17): message 1 needs string 'role' and 'content'"
	check '{"messages": []}' "line 2 (byte 17): 'messages' is empty"
	check '{"messages": [{"role": "user", "content": "a"}, 7]}' "line 2 (byte 17): message 2 is not an object"
	check $'{"text": "caf\xe9"}' "invalid UTF-8 at byte 30 (line 2)"
	# a line past 16 MiB, the bound, is refused before it is all read
	{ printf '%s\n{"text": "' "$good"; head -c $((16 << 20)) /dev/zero | tr '\0' a; printf '"}\n'; } >long.jsonl
	run -1 --separate-stderr lora-tokenize -m q long.jsonl -o out.tok
	assert_equal "$stderr" "lora-tokenize: long.jsonl: line 2 (byte 17): longer than the limit (16777216 bytes)"
	# a regular expression's step bound (Llama 3's pattern on a million
	# spaces) names the line, in JSONL and with --lines
	model l3 llama3 "$FIX/chat/llama-tokens.json"
	{ printf '%s\n{"text": "' "$good"; head -c 1000000 /dev/zero | tr '\0' ' '; printf 'x"}\n'; } >spaces.jsonl
	run -1 --separate-stderr lora-tokenize -m l3 spaces.jsonl -o out.tok
	assert_regex "$stderr" "^lora-tokenize: spaces\.jsonl: line 2 \(byte 17\): l3/tokenizer\.json: pre_tokenizer Split pattern '.*' gave up on ' +\.\.\.': over 1000000 backtracking steps\$"
	{ printf 'fine\n'; head -c 1000000 /dev/zero | tr '\0' ' '; printf 'x\n'; } >spaces.txt
	run -1 --separate-stderr lora-tokenize -m l3 --lines spaces.txt -o out.u16
	assert_regex "$stderr" "^lora-tokenize: spaces\.txt: line 2 \(byte 5\): l3/tokenizer\.json: pre_tokenizer Split pattern"
	assert_file_not_exists out.tok
	assert_file_not_exists out.u16
	# examples end with EOS: a model without tokenizer_config.json cannot say it
	run -2 --separate-stderr lora-tokenize --tokenizer "$TOK/qwen.json" <<<"$good" --jsonl -o out.tok
	assert_equal "$stderr" "lora-tokenize: $TOK/tokenizer_config.json: no eos_token (JSONL examples end with it; --no-special adds no special tokens)"
	assert_file_not_exists out.tok
	lora-tokenize --tokenizer "$TOK/qwen.json" --no-special --jsonl <<<"$good" -o plain.tok
	n=$(printf 'fine' | lora-tokenize --tokenizer "$TOK/qwen.json" --no-special | wc -c)
	assert_equal "$(tokcount plain.tok)" "$((n / 2)) 1"
	# a chat without a template in tokenizer_config.json
	model t qwen "$FIX/jsonl/llama2.config.json"
	jq -c '.bos_token = null | .eos_token = "<|im_end|>"' "$FIX/jsonl/llama2.config.json" >t/tokenizer_config.json
	printf '%s\n' '{"messages": [{"role": "user", "content": "y"}]}' >c.jsonl
	run -1 --separate-stderr lora-tokenize -m t c.jsonl -o out.tok
	assert_regex "$stderr" '^lora-tokenize: c\.jsonl: line 1 \(byte 0\): t/tokenizer_config\.json: '
}
