#!/usr/bin/env bats
# C unit tests of the training library: optimizers, schedules, clipping,
# optimizer state files, and the training configuration (YAML and flags).

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "optim: AdamW and SGD steps, clipping, schedules, threads, state files" {
	run test_optim
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}

@test "trainconf: every key, every error message, flags over the file, YAML bounds, JSON" {
	run test_trainconf
	assert_success
	assert_output --regexp '^ok [0-9]+ checks$'
}
