#!/usr/bin/env bats
# make install / uninstall honour PREFIX and DESTDIR.

setup() {
	load test_helper/common-setup
	_common_setup
}

@test "make install puts binaries, man pages and completions under DESTDIR/PREFIX; uninstall removes them" {
	run -0 make -s -C "$ROOT" install BUILD="$LORA_BUILD" SANITIZE="${LORA_SANITIZE:-}" DESTDIR="$PWD/stage" PREFIX=/opt/lora
	for t in $(ls "$LORA_BUILD/bin"); do
		assert_file_executable "stage/opt/lora/bin/$t"
		assert_file_exists "stage/opt/lora/share/man/man1/$t.1"
		assert_file_exists "stage/opt/lora/share/bash-completion/completions/$t"
		assert_file_exists "stage/opt/lora/share/zsh/site-functions/_$t"
		assert_file_exists "stage/opt/lora/share/fish/vendor_completions.d/$t.fish"
	done
	assert_file_exists stage/opt/lora/share/man/man5/lora.5
	assert_file_exists stage/opt/lora/share/man/man7/lora.7
	run -0 man -l stage/opt/lora/share/man/man7/lora.7
	assert_output --partial 'DEPRECATED SPELLINGS'
	run -0 stage/opt/lora/bin/lora-init --version
	run -0 make -s -C "$ROOT" uninstall BUILD="$LORA_BUILD" SANITIZE="${LORA_SANITIZE:-}" DESTDIR="$PWD/stage" PREFIX=/opt/lora
	assert_equal "$(find stage -type f | wc -l)" 0
}
