#!/usr/bin/env bats
# C unit tests of lib/: each program prints "ok N checks" or FAIL lines.

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "core helpers: strict JSON (duplicate keys anywhere), UTF-8, paths, shapes" {
	run test_core
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "dtype conversions: f16/bf16 round trips and rounding rules" {
	run test_tensor
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "safetensors reader and writer validate everything" {
	run test_safetensors
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "gguf reader and writer: the bytes of the specification, every value type, every refusal" {
	run test_gguf
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "GGUF LoRA adapters: q/k rows as convert_hf_to_gguf orders them, alpha and folds, upstream's files, refusals" {
	run test_gguflora
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test ".lora codec: round trips, corruption and truncation" {
	run test_lorafile
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "blas: oneDNN products match the naive twin (shapes, transposes, strides, threads, fallback)" {
	run test_blas
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "blas: the same under DNNL_MAX_CPU_ISA=AVX2, on AVX2 kernels" {
	DNNL_MAX_CPU_ISA=AVX2 run test_blas
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "linalg: low-rank singular values match the dense SVD" {
	run test_linalg
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "tokenizer: ids and texts of the Hugging Face tokenizers library on eight tokenizers; errors name what is unsupported" {
	run test_tokenizer "$FIX/tokenizers"
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "chat templates: the renderings of Python's jinja2 under transformers' environment for seven families; spans, refusals" {
	run test_chat "$FIX/chat"
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "pattern: Python's re through PCRE2, its rewrites, refusals and bounds" {
	run test_pattern
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "cli option parser: bundles, --opt=v, --, operands" {
	run test_cli -qf -o out --rank=3 -- -x
	assert_success
	assert_output "q f o=out r=3 operand=-x"
}

@test "a product oneDNN could not do is right, and the tool says so on exit" {
	run -0 --separate-stderr test_cli --fail-product
	assert_output "y=6,15"
	assert_equal "$stderr" "test-cli: warning: matrix product 2x1x3: oneDNN primitive creation failed (status 3); computed with OpenBLAS instead (slower)"
	run -0 --separate-stderr test_cli -q
	assert_equal "$stderr" ""
}

@test "sampler: temperature, top-k and top-p frequencies match exact probabilities" {
	run test_sample
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "init: kaiming and gaussian A follow PEFT's distributions, B is zero, streams are per layer" {
	run test_init
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "data: exact batches of token files on and beside multiples of B x T, the shuffled order and its uniformity, the file identity" {
	run test_data "$BATS_TEST_TMPDIR"
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}
