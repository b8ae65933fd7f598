#!/usr/bin/env bats
# Help, man pages and completions agree with the option tables in the code.

setup() {
	load test_helper/common-setup
	_common_setup
}

tools() { ls "$LORA_BUILD/bin"; }

@test "every binary has a man page that documents each of its options" {
	for t in $(tools); do
		page="$ROOT/man/$t.1"
		assert_file_exists "$page"
		for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES "SEE ALSO"; do
			grep -q "^\.SH $s\$" "$page" || fail "$t.1 lacks section $s"
		done
		# sections in the order STYLE.md gives
		order=$(grep '^\.SH ' "$page" | grep -E 'NAME|SYNOPSIS|DESCRIPTION|OPTIONS|EXIT STATUS|EXAMPLES|SEE ALSO' | tr '\n' '|')
		assert_equal "$order" '.SH NAME|.SH SYNOPSIS|.SH DESCRIPTION|.SH OPTIONS|.SH EXIT STATUS|.SH EXAMPLES|.SH SEE ALSO|'
		while IFS=$'\t' read -r short long _; do
			[ "$short" = operands ] && continue
			grep -q -- "${long//-/\\\\-}" "$page" || fail "$t.1 does not document $long"
		done < <("$t" --list-options)
		run -0 man -l "$page"
	done
}

@test "every option appears in --help" {
	for t in $(tools); do
		help=$("$t" --help)
		while IFS=$'\t' read -r short long _; do
			[ "$short" = operands ] && continue
			grep -q -- "$long" <<<"$help" || fail "$t --help lacks $long"
		done < <("$t" --list-options)
	done
}

@test "completions are generated from the current option tables" {
	run "$ROOT/tests/gen-completions" --check "$LORA_BUILD/bin"
	assert_success
	for t in $(tools); do
		assert_file_exists "$ROOT/completions/bash/$t"
		assert_file_exists "$ROOT/completions/zsh/_$t"
		assert_file_exists "$ROOT/completions/fish/$t.fish"
	done
}

@test "bash completion completes options and their values" {
	source "$ROOT/completions/bash/lora-init"
	COMP_WORDS=(lora-init --in); COMP_CWORD=1
	_lora_init
	assert_equal "${COMPREPLY[*]}" "--init"
	COMP_WORDS=(lora-init --dtype b); COMP_CWORD=2
	_lora_init
	assert_equal "${COMPREPLY[*]}" "bf16"
}

@test "the format man page exists" {
	run -0 man -l "$ROOT/man/lora.5"
	assert_output --partial 'DETECTED ERRORS'
}

@test "lora-train(1) documents every configuration key" {
	keys=$(grep -oE '^	K_[A-Z]+\([a-z0-9_]+' "$ROOT/lib/train/trainconf.c" | sed 's/.*(//')
	[ "$(wc -w <<<"$keys")" -ge 20 ]
	for k in $keys; do
		grep -qE "^\.B $k: " "$ROOT/man/lora-train.1" || fail "lora-train.1 does not document '$k'"
	done
}
