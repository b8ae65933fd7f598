#!/usr/bin/env bats
# The layering of lib/ (lib/README.md), kept by tests/check-layout.

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "lib/: layers go one way, third-party headers stay in their module, nothing prints, names carry their module" {
	run -0 "$ROOT/tests/check-layout" "$ROOT" "$LORA_BUILD"
	assert_output ''
}

@test "check-layout names each kind of violation" {
	cp -r "$ROOT/lib" lib
	sed -i '1a #include "train/train.h"' lib/core/err.c
	sed -i '1a #include "ops/merge.h"' lib/model/sample.c
	sed -i '1a #include "io/data.h"' lib/math/blas.h
	sed -i '1a #include "model/llama.h"' lib/text/tokenizer.h
	sed -i '1a #include <utf8proc.h>' lib/text/tokenizer.c
	sed -i '1a #include "text/tokenizer.h"' lib/ops/report.c
	sed -i '1a #include <zlib.h>' lib/io/peft.c
	sed -i '1a #include "err.h"' lib/io/data.c
	sed -i '1a #include "cli.h"' lib/ops/diff.h
	printf 'void bad(void) { fprintf(stderr, "x"); }\n' >>lib/ops/init.c
	{ printf 'int lora_rng_long(void)\n{\n'; for i in $(seq 150); do printf '\tint x%d = 0;\n' "$i"; done; printf '\treturn 0;\n}\n'; } >>lib/core/rng.c
	mkdir -p b/lib/core
	printf 'void err_helper(void) {}\nint lora_err_ok(void) { return 0; }\n' >x.c
	cc -c -o b/lib/core/err.o x.c
	run -1 "$ROOT/tests/check-layout" . b
	assert_line 'lib/core/err.c: includes "train/train.h" of a higher or sibling layer (core may use only its own layer and lower ones)'
	assert_line 'lib/model/sample.c: includes "ops/merge.h" of a higher or sibling layer (model may use only its own layer and lower ones)'
	assert_line 'lib/math/blas.h: includes "io/data.h" of a higher or sibling layer (math may use only its own layer and lower ones)'
	assert_line 'lib/io/peft.c: includes <zlib.h>, which only lib/io/lorafile.[ch] may use'
	assert_line 'lib/text/tokenizer.h: includes "model/llama.h" of a higher or sibling layer (text may use only its own layer and lower ones)'
	assert_line 'lib/text/tokenizer.c: includes <utf8proc.h>, which only lib/core/unicode.[ch] may use'
	refute_line --partial 'lib/ops/report.c'
	assert_line 'lib/io/data.c: includes "err.h": write lib headers as "layer/module.h"'
	assert_line 'lib/ops/diff.h: includes "cli.h": write lib headers as "layer/module.h"'
	assert_line --partial 'lib/ops/init.c:'
	assert_line 'lib/ prints or exits (above): return a LORA_E* code and fill a lora_err instead'
	assert_line --regexp '^lib/core/rng\.c:[0-9]+: function of 153 lines \(over 150\): int lora_rng_long\(void\)$'
	assert_line 'lib/core/err.c: global function err_helper lacks the prefix lora_err_'
	refute_line --partial 'lora_err_ok'
}
