#!/usr/bin/env bats
# The transformer (lib/model), its matrix products (lib/blas) and token
# data (lib/data): C test programs, each printing "ok N checks".

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "products, config.json, token files, batches and model invariants" {
	run test_model
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "kernels: every forward matches its naive twin, every backward central differences of it; bf16 attention and SwiGLU match f32 to their rounding; 1 and 2 threads agree" {
	run test_kernels
	assert_success
	assert_line --regexp '^ok [0-9]+ checks$'
	# rmsnorm, rope, swiglu and cross-entropy at two row lengths, six
	# attention shapes, lora; and two bf16 attention shapes where oneDNN
	# multiplies bf16
	assert_equal "$(grep -v '^# attn bf16 ' <<<"$output" | grep -c '^# .* of the tolerance$')" 15
	if has_bf16; then
		assert_equal "$(grep -c '^# attn bf16 .* of the tolerance$' <<<"$output")" 2
	fi
}

@test "gradient check: finite differences agree with backward within 1% and an absolute floor (GQA, head_dim, tied, biases, rsLoRA, every module)" {
	run test_model_grad
	assert_success
	assert_line --regexp '^ok [0-9]+ checks$'
	# every configuration ran
	assert_equal "$(grep -c '^# ' <<<"$output")" 9
}

@test "loss and every LoRA gradient match PyTorch's (fixtures from tests/ref/llama_ref.py), 1e-4; bf16 compute within 1e-2, cosine 0.99" {
	run test_model_ref "$FIX/model"
	assert_success
	assert_line --regexp '^ok [0-9]+ checks$'
	local cases=$(wc -l < "$FIX/model/cases")
	assert_equal "$(grep -c '^# .* base loss rel' <<<"$output")" "$cases"
	if avx512; then
		assert_equal "$(grep -c '^# .* bf16: loss rel' <<<"$output")" "$cases"
	fi
}

@test "on AVX2 kernels (DNNL_MAX_CPU_ISA=AVX2): the f32 fixtures pass and bf16 compute is refused with a clear error" {
	DNNL_MAX_CPU_ISA=AVX2 run test_model_ref "$FIX/model"
	assert_success
	assert_line --regexp '^ok [0-9]+ checks$'
	assert_equal "$(grep -c 'bf16:' <<<"$output")" 0
	DNNL_MAX_CPU_ISA=AVX2 run test_model_grad
	assert_success
}

@test "the same checks on one thread" {
	OMP_NUM_THREADS=1 run test_model_grad
	assert_success
	OMP_NUM_THREADS=1 run test_model_ref "$FIX/model"
	assert_success
}

@test "the fixtures are small" {
	run du -sk "$FIX/model"
	assert_success
	[ "${output%%[[:space:]]*}" -lt 1024 ] || fail "fixtures take ${output%%[[:space:]]*} KiB"
}
