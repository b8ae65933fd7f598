#!/usr/bin/env bats
# C unit tests of the SVD, diff and combine numerics: each program prints
# "ok N checks" or FAIL lines.

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "linalg and svd: BLAS kernels against naive twins, planted spectra, re-ranking" {
	run test_svd
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "diff and combine: subspace similarity, comparisons, cat and SVD combination" {
	run test_diff
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}
