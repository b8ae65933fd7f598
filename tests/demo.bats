#!/usr/bin/env bats
# make demo's text step (tests/demo text): an instruction dataset the demo
# writes, tokenized with loss masks, trained, and an answer generated as text.

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "demo, text step: JSONL chats with masks, trained, the answer printed as text" {
	run -0 --separate-stderr "$ROOT/tests/demo" text
	assert_line --index 0 'text (lora-tokenize, lora-train, lora-generate --chat)'
	assert_line --index 3 '  What is the capital of Kenya?  Nairobi.'
	# the tokens with loss are the answers and their </s>: the ids of each
	# chat as Mistral's template renders it, less those of the text before
	# the answer (the text path of lora-tokenize, not the chat path)
	mkdir m
	cp "$FIX/tokenizers/llama2.json" m/tokenizer.json
	want=0 all=0
	for qa in France:Paris Italy:Rome Spain:Madrid Germany:Berlin Japan:Tokyo Egypt:Cairo Peru:Lima \
		Kenya:Nairobi Norway:Oslo Chile:Santiago; do
		p="<s>[INST] What is the capital of ${qa%:*}? [/INST]"
		n=$(printf '%s' "$p${qa#*:}.</s>" | lora-tokenize -m m --no-special | wc -c)
		k=$(printf '%s' "$p" | lora-tokenize -m m --no-special | wc -c)
		want=$((want + (n - k) / 2)) all=$((all + n / 2))
	done
	assert_regex "${lines[1]}" "^  data +10 chats in $all tokens \(Mistral's \[INST\] template\), $want of them answer tokens with loss\$"
	# training brought the loss on the answers down
	read -r base trained < <(sed -n 's/^  loss on the answers  base \([0-9.]*\), trained \([0-9.]*\) .*/\1 \2/p' <<<"$output")
	awk -v b="$base" -v t="$trained" 'BEGIN { exit !(t < b / 2) }'
}
