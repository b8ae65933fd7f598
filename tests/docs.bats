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
		grep -qx '.BR lora (7)' "$page" || fail "$t.1 does not refer to lora(7)"
		run -0 man -l "$page"
	done
}

# The kind of value a metavar names: the same long option takes the same
# kind in every tool (a path, a number, a list, a word from a set, ...).
kind() {
	case $1 in
	MODEL | BASE | TUNED | FILE | DIR | OUT | CKPT) echo path ;;
	N | K | R | A | B | T | E | P | Q | LR | WD | MU | TOKEN) echo number ;;
	LIST) echo list ;;
	TYPE | FMT | KIND | MODE | METHOD | FORMAT) echo word ;;
	RE) echo regex ;;
	TEXT) echo text ;;
	KEY=VALUE | NAME=OUTxIN) echo pair ;;
	-) echo none ;;
	*) echo "unknown metavar $1" ;;
	esac
}

@test "one vocabulary: a letter or a word means the same in every tool (lora(7))" {
	declare -A long_of kind_of where
	for t in $(tools); do
		while IFS=$'\t' read -r short long meta _; do
			case $short in operands | alias) continue ;; esac
			k=$(kind "$meta")
			[[ $k != unknown* ]] || fail "$t $long: $k (add it to kind() in docs.bats)"
			if [ "$short" != - ]; then
				[ -z "${long_of[$short]:-}" ] || [ "${long_of[$short]}" = "$long" ] ||
					fail "$short is ${long_of[$short]} in ${where[$short]} but $long in $t"
				long_of[$short]=$long where[$short]=$t
			fi
			[ -z "${kind_of[$long]:-}" ] || [ "${kind_of[$long]}" = "$k" ] ||
				fail "$long takes a ${kind_of[$long]} in ${where[$long]} but a $k ($meta) in $t"
			kind_of[$long]=$k where[$long]=$t
		done < <("$t" --list-options)
	done
	# the decisions lora(7) writes down
	assert_equal "${long_of[-j]} ${long_of[-n]} ${long_of[-d]} ${long_of[-b]} ${long_of[-T]} ${long_of[-q]}" \
		'--threads --tokens --data --batch --seq --quiet'
	assert_equal "${kind_of[--layers]} ${kind_of[--data-format]} ${kind_of[--dtype]} ${kind_of[--json]}" 'list word word none'
}

@test "every tool doing numeric work takes -j; every tool showing progress takes -q" {
	for t in lora-train lora-eval lora-generate lora-merge lora-svd lora-diff lora-inspect; do
		"$t" --list-options | grep -q $'^-j\t--threads\tN\t' || fail "$t has no -j N"
	done
	progress=$(grep -l 'lora_cli_progress_start' "$ROOT"/cmd/lora-*.c)
	[ "$(wc -w <<<"$progress")" -ge 6 ]
	for f in $progress; do
		t=$(basename "$f" .c)
		"$t" --list-options | grep -q $'^-q\t--quiet\t-\t' || fail "$t shows progress but has no -q"
	done
}

@test "--help fits 80 columns" {
	for t in $(tools); do
		"$t" --help >help
		[ "$(wc -l <help)" -gt 5 ]
		awk -v t="$t" 'length($0) > 80 { print t ": " $0; bad = 1 } END { exit bad }' help ||
			fail "$t --help has lines over 80 columns"
	done
}

@test "old spellings: parsed, warned about, hidden from --help, documented as deprecated" {
	n=0
	for t in $(tools); do
		while IFS=$'\t' read -r kind old new; do
			[ "$kind" = alias ] || continue
			n=$((n + 1))
			page="$ROOT/man/$t.1"
			grep -A1 -x -- ".B ${old//-/\\\\-}" "$page" | grep -q '^Deprecated spelling of' ||
				fail "$t.1 does not document $old as deprecated"
			grep -q -- "$t  *${old//-/\\\\-} .*${new//-/\\\\-}" "$ROOT/man/lora.7" ||
				fail "lora.7 does not list $t $old -> $new"
			"$t" --help | grep -qw -- "$old" && [ "$old" != -n ] && fail "$t --help shows $old"
			"$t" --list-options | grep -q -- "^[^	]*	$new	" || fail "$t: $old stands for $new, which it lacks"
		done < <("$t" --list-options)
	done
	assert_equal "$n" 6
}

@test "every option appears in --help" {
	for t in $(tools); do
		help=$("$t" --help)
		while IFS=$'\t' read -r short long _; do
			case $short in operands | alias) continue ;; esac
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

@test "lora(7) documents the vocabulary and names every tool" {
	run -0 man -l "$ROOT/man/lora.7"
	for s in OPTIONS INPUTS PROGRESS "EXIT STATUS" "DEPRECATED SPELLINGS" "SEE ALSO"; do
		assert_output --partial "$s"
	done
	for t in $(tools); do
		grep -qx ".BR $t (1)," "$ROOT/man/lora.7" || grep -qx ".BR $t (1)" "$ROOT/man/lora.7" ||
			fail "lora.7 does not refer to $t(1)"
	done
	for o in --model --output --force --data --data-format --dtype --json --quiet --threads --seed --tokens \
		--batch --seq --rank --alpha --targets --target-regex --layers; do
		grep -q -- "${o//-/\\\\-}" "$ROOT/man/lora.7" || fail "lora.7 does not define $o"
	done
}

@test "lora-train(1) documents every configuration key and its default" {
	keys=$(grep -oE '^	K_[A-Z]+\([a-z0-9_]+' "$ROOT/lib/train/trainconf.c" | sed 's/.*(//')
	[ "$(wc -w <<<"$keys")" -ge 20 ]
	for k in $keys; do
		grep -qE "^\.B $k: " "$ROOT/man/lora-train.1" || fail "lora-train.1 does not document '$k'"
	done
	# the defaults the manual states are the ones lora-train applies (its --help
	# prints each flag's key and default from the one table)
	help=$(lora-train --help | tr -s ' \n' ' ')
	documented=$(sed -n 's/^\.B \([a-z_0-9]*\): /\1 /p' "$ROOT/man/lora-train.1" | sed 's/\\-/-/g; s/\[//; s/\]//; s/, /,/g')
	while read -r k d; do
		grep -qx "$k $d" <<<"$documented" || fail "lora-train.1: $k is not documented with default $d"
	done < <(grep -oE '\(([a-z_]+); default [^)]+\)' <<<"$help" | sed -E 's/\(([a-z_]+); default (.*)\)/\1 \2/')
}
