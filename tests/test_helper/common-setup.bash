# Loaded by every suite: assertion libraries, the build under test first on
# PATH, a C locale, and a private HOME and TMPDIR per test.
bats_require_minimum_version 1.5.0

_common_setup() {
	bats_load_library bats-support
	bats_load_library bats-assert
	bats_load_library bats-file
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	: "${LORA_BUILD:=$ROOT/build}"
	PATH="$LORA_BUILD/bin:$LORA_BUILD/tests/tools:$LORA_BUILD/tests/unit:$LORA_BUILD/tests/fuzz:$PATH"
	# make check VALGRIND=1 (tests/run): the same programs, under valgrind
	if [ -n "${LORA_WRAP:-}" ]; then PATH="$LORA_WRAP:$PATH"; fi
	export LC_ALL=C HOME="$BATS_TEST_TMPDIR" TMPDIR="$BATS_TEST_TMPDIR"
	FIX="$ROOT/tests/fixtures"
	cd "$BATS_TEST_TMPDIR" || return 1
}

# avx512: whether the programs under test run on a CPU with AVX-512F, which
# is not the host's under valgrind: it presents a CPU without AVX-512.
avx512() {
	[ "${LORA_VALGRIND:-}" != 1 ] && grep -qw avx512f /proc/cpuinfo
}

# mkst FILE JSON [DATA-BYTES]: write a safetensors file with the given header
# text (no padding) followed by DATA-BYTES zero bytes.
mkst() {
	local n=${#2}
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' \
		$((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) $((n >> 24 & 255)))" >"$1"
	printf '%s' "$2" >>"$1"
	head -c "${3:-0}" /dev/zero >>"$1"
}

# flipbyte FILE OFFSET: invert every bit of one byte in place.
flipbyte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "$(printf '\\%03o' $((b ^ 255)))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
