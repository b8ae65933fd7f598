#!/usr/bin/env bats
# Outputs on hostile paths (lora(7), OUTPUTS): devices, FIFOs and symbolic
# links as outputs, two writers at once, outputs that would destroy an
# input, the leftovers of killed writers, and what lora-merge copies from a
# model directory. Devices are made with mknod in the test's own directory,
# never in /dev.

setup() {
	load test_helper/common-setup
	_common_setup
	M="--hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256"
	mkmodel $M model >/dev/null
	mkadapter model.layers.0.self_attn.q_proj=64x64x2:0.5,-0.25 model.layers.1.self_attn.v_proj=32x64x3:0.3,0.2,0.1 >a.lora
	mktokens --vocab 256 200 >t.bin
	cp "$FIX/tokenizers/llama2.json" tok.json
	printf 'Hello world\n' >text.txt
}

# Every tool's file output, OUT standing for the path.
WRITERS=(
	"lora-init -m model -r 2 -o OUT"
	"lora-svd -q -r 1 a.lora -o OUT"
	"lora-convert a.lora --to gguf -m model -o OUT"
	"lora-merge --combine cat a.lora a.lora -o OUT"
	"lora-merge -m model/model.safetensors a.lora -o OUT"
	"lora-generate -m model --rows 2 -n 4 -o OUT"
	"lora-tokenize --tokenizer tok.json text.txt -o OUT"
	"lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 -o OUT"
)

# with W OUT: the writer W with OUT in place.
with() { echo "${1//OUT/$2}"; }

tool() { echo "${1%% *}"; }

# mknod in the test's directory; as root in CI it works, elsewhere skip.
need_mknod() {
	mknod probe c 1 3 2>/dev/null || skip "mknod is not permitted here (needs CAP_MKNOD)"
	rm probe
}

# The directory holds no temporary (no dot name), bats' own files aside.
assert_no_temporaries() {
	run -0 find "${1:-.}" -name '.?*' ! -name '.bats*'
	assert_output ''
}

@test "a character device is written into, without -f, and stays a device; /dev/full's error is reported, through a link too" {
	need_mknod
	mkdir dev
	mknod dev/null c 1 3 && mknod dev/full c 1 7
	ln -s dev/full full-link
	for w in "${WRITERS[@]}"; do
		run -0 --separate-stderr $(with "$w" dev/null)
		[ -c dev/null ] || fail "$w replaced the device"
		t=$(tool "$w")
		run -1 --separate-stderr $(with "$w" dev/full)
		assert_equal "$stderr" "$t: dev/full: write error: No space left on device"
		run -1 --separate-stderr $(with "$w" full-link)
		assert_equal "$stderr" "$t: full-link: write error: No space left on device"
		[ -L full-link ] && [ -c dev/full ] || fail "$w replaced the link or the device"
	done
	# lora-train's log on devices: written into; the full one stops the run
	run -0 lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --log dev/null -o t1.lora
	run -1 --separate-stderr lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --log full-link -o t2.lora
	assert_equal "$stderr" "lora-train: full-link: write error: No space left on device"
	assert_file_not_exists t2.lora
	[ -c dev/null ] && [ -c dev/full ] && [ -L full-link ]
	assert_no_temporaries
}

@test "a block device, a directory: refused as file outputs, even with -f; devices are no directory outputs" {
	need_mknod
	mknod blk b 7 0
	mkdir d
	for w in "${WRITERS[@]}"; do
		t=$(tool "$w")
		run -1 --separate-stderr $(with "$w" blk) -f
		assert_equal "$stderr" "$t: blk: is not a regular file, character device or FIFO; not replacing it"
		run -1 --separate-stderr $(with "$w" d) -f
		assert_equal "$stderr" "$t: d: is a directory"
	done
	mknod null c 1 3
	run -1 --separate-stderr lora-merge -m model a.lora -o null
	assert_equal "$stderr" "lora-merge: null: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-merge -f -m model a.lora -o null
	assert_equal "$stderr" "lora-merge: null: exists and is not a directory"
	run -1 --separate-stderr lora-convert -f a.lora --to peft -o null
	assert_equal "$stderr" "lora-convert: null: exists and is not a directory"
	[ -b blk ] && [ -c null ]
	assert_no_temporaries
}

@test "a FIFO is streamed into, without -f, the same bytes as a file gets; a link to one too" {
	mkfifo fifo
	ln -s fifo fifo-link
	n=0
	for w in "${WRITERS[@]}"; do
		n=$((n + 1))
		$(with "$w" want$n)
		rm -rf want$n.ckpt
		for out in fifo fifo-link; do
			cat fifo >got &
			reader=$!
			run -0 $(with "$w" $out)
			wait $reader
			cmp want$n got || fail "$w -o $out: other bytes"
			rm -rf $out.ckpt
		done
		[ -p fifo ] && [ -L fifo-link ] || fail "$w replaced the FIFO or its link"
		# /dev/stdout on a pipe: a link of /proc's that names no path
		$(with "$w" /dev/stdout) | cmp want$n - || fail "$w -o /dev/stdout: other bytes"
		rm -rf lora-train.ckpt
	done
	assert_no_temporaries
}

@test "a link is written through: its target replaced (with -f) beside the target, the link kept" {
	mkdir elsewhere
	n=0
	for w in "${WRITERS[@]}"; do
		n=$((n + 1))
		$(with "$w" want$n)
		rm -rf want$n.ckpt
		echo old >elsewhere/target$n
		ln -s elsewhere/target$n link$n
		t=$(tool "$w")
		run -1 --separate-stderr $(with "$w" link$n)
		assert_equal "$stderr" "$t: link$n: already exists (use -f to overwrite)"
		run -0 $(with "$w" link$n) -f
		[ -L link$n ] || fail "$w replaced the link"
		cmp want$n elsewhere/target$n || fail "$w: the target does not hold the output"
		# a link to nowhere: taken without -f, its target made with -f
		ln -s elsewhere/new$n dangling$n
		run -1 $(with "$w" dangling$n)
		assert_file_not_exists elsewhere/new$n
		run -0 $(with "$w" dangling$n) -f
		cmp want$n elsewhere/new$n
		rm -rf *.ckpt
	done
	# directory outputs: the directory a link names is replaced, not the link
	lora-merge -m model a.lora -o want
	mkdir elsewhere/merged && touch elsewhere/merged/stale
	ln -s elsewhere/merged merged-link
	run -1 --separate-stderr lora-merge -m model a.lora -o merged-link
	assert_equal "$stderr" "lora-merge: merged-link: already exists (use -f to overwrite)"
	lora-merge -f -m model a.lora -o merged-link
	[ -L merged-link ]
	diff -r want elsewhere/merged
	assert_no_temporaries
}

@test "two writers at once: exactly one wins, the other says the output exists and leaves nothing" {
	mkmodel --hidden 256 --inter 512 --layers 2 --heads 4 --vocab 1024 big >/dev/null
	lora-init -m big -r 4 -o big.lora
	for w in "lora-init -m big -r 8 -o OUT" "lora-merge -m big big.lora -o OUT" "lora-convert big.lora --to peft -o OUT" \
		"lora-merge -m big/model.safetensors big.lora -o OUT"; do
		for k in 1 2 3; do
			rm -rf out
			$(with "$w" out) 2>err1 &
			p1=$!
			$(with "$w" out) 2>err2 &
			p2=$!
			s1=0 s2=0
			wait $p1 || s1=$?
			wait $p2 || s2=$?
			assert_equal "$((s1 + s2))" 1
			assert_equal "$(cat err1 err2)" "$(tool "$w"): out: already exists (use -f to overwrite)"
			assert_no_temporaries
		done
	done
}

@test "no output is, holds or lies inside an input, even with -f: one line naming both" {
	mkdir D P && cp a.lora D/A.lora && cp -r model P/model
	run -2 --separate-stderr lora-merge -m model D/A.lora -o D -f
	assert_equal "$stderr" "lora-merge: D: output would replace a directory holding the input D/A.lora"
	run -2 --separate-stderr lora-merge -m P/model a.lora -o P -f
	assert_equal "$stderr" "lora-merge: P: output would replace a directory holding the input P/model"
	run -2 --separate-stderr lora-merge -m model a.lora -o model/merged
	assert_equal "$stderr" "lora-merge: model/merged: output would be written inside the input model"
	# lora-init and lora-generate -f and their own model or configuration
	run -2 --separate-stderr lora-init -f -m model/model.safetensors -r 2 -o model/model.safetensors
	assert_equal "$stderr" "lora-init: model/model.safetensors: output would overwrite the input model/model.safetensors"
	run -2 --separate-stderr lora-init -f -m model -r 2 -o model/config.json
	assert_equal "$stderr" "lora-init: model/config.json: output would be written inside the input model"
	run -2 --separate-stderr lora-generate -f -m model -n 2 -o model/config.json
	assert_equal "$stderr" "lora-generate: model/config.json: output would be written inside the input model"
	run -2 --separate-stderr lora-generate -f -m model -d t.bin -n 2 -o t.bin
	assert_equal "$stderr" "lora-generate: t.bin: output would overwrite the input t.bin"
	# a hard link and a symbolic link to an input are the input
	ln a.lora hard.lora && ln -s a.lora soft.lora
	run -2 --separate-stderr lora-svd -q -f -r 1 a.lora -o hard.lora
	assert_equal "$stderr" "lora-svd: hard.lora: output would overwrite the input a.lora"
	run -2 --separate-stderr lora-merge -f --combine cat a.lora -o soft.lora
	assert_equal "$stderr" "lora-merge: soft.lora: output would overwrite the input a.lora"
	run -2 --separate-stderr lora-convert -f a.lora --to gguf -m model -o hard.lora
	assert_equal "$stderr" "lora-convert: hard.lora: output would overwrite the input a.lora"
	run -2 --separate-stderr lora-tokenize -f --tokenizer tok.json text.txt -o text.txt
	assert_equal "$stderr" "lora-tokenize: text.txt: output would overwrite the input text.txt"
	run -2 --separate-stderr lora-train -q -f -m model -d t.bin --seq 16 --batch 2 --steps 2 -o t.bin
	assert_equal "$stderr" "lora-train: t.bin: output would overwrite the input t.bin"
	# lora-train's checkpoints go nowhere near an input either, refused before training
	run -2 --separate-stderr lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --checkpoint-dir model -o t.lora
	assert_equal "$stderr" "lora-train: model: output would overwrite the input model"
	run -2 --separate-stderr lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --checkpoint-dir model/ck -o t.lora
	assert_equal "$stderr" "lora-train: model/ck: output would be written inside the input model"
	# nor a file that is no directory
	touch plain
	run -1 --separate-stderr lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --checkpoint-dir plain -o t.lora
	assert_equal "$stderr" "lora-train: plain: exists and is not a directory"
	assert_file_not_exists t.lora
	cmp a.lora D/A.lora && cmp a.lora hard.lora && printf 'Hello world\n' | cmp - text.txt
	diff -r model P/model
	run -0 lora-inspect model
	assert_no_temporaries
}

@test "lora-train --log appends only to a lora-train log; another file needs -f, an input never; a refused run leaves no log" {
	T="-q -m model -d t.bin --seq 16 --batch 2 --steps 2"
	# appended to a log of its own kind
	lora-train $T --log run.log -o r1.lora
	n=$(wc -l <run.log)
	lora-train $T --log run.log -o r2.lora
	assert_equal "$(wc -l <run.log)" $((n * 2))
	# another file: not without -f, replaced with it
	echo "notes" >notes.txt
	run -1 --separate-stderr lora-train $T --log notes.txt -o r3.lora
	assert_equal "$stderr" "lora-train: notes.txt: exists and is not a lora-train log; not appending to it (use -f to replace it)"
	assert_equal "$(cat notes.txt)" notes
	assert_file_not_exists r3.lora
	lora-train $T -f --log notes.txt -o r3.lora
	assert_equal "$(head -c 12 notes.txt)" '{"compute":"'
	assert_equal "$(wc -l <notes.txt)" "$n"
	# an input, never: the token data, the adapter
	cp t.bin t0.bin
	for f in "" -f; do
		run -2 --separate-stderr lora-train $T $f --log t.bin -o r4.lora
		assert_equal "$stderr" "lora-train: t.bin: output would overwrite the input t.bin"
		run -2 --separate-stderr lora-train $T $f a.lora --log a.lora -o r4.lora
		assert_equal "$stderr" "lora-train: a.lora: output would overwrite the input a.lora"
	done
	cmp t.bin t0.bin
	# --log and -o one file: refused, nothing left behind
	run -2 --separate-stderr lora-train $T --log same -o same
	assert_equal "$stderr" "lora-train: same: -o and --log name the same file"
	assert_file_not_exists same
	# an output that exists: refused before the log is made
	run -1 --separate-stderr lora-train $T --log new.log -o r1.lora
	assert_equal "$stderr" "lora-train: r1.lora: already exists (use -f to overwrite)"
	assert_file_not_exists new.log
	assert_file_not_exists r4.lora
	assert_no_temporaries
}

@test "a killed writer's temporaries are removed by the next run for the same output; a live writer's are kept" {
	mkmodel --hidden 1024 --inter 2816 --layers 4 --heads 8 --vocab 8192 big >/dev/null
	lora-init -m big -r 16 -o big.lora
	for k in 1 2 3; do
		lora-merge -m big big.lora -o out &
		pid=$!
		for j in $(seq 2000); do compgen -G ".out.lora-tmp.$pid.*" >/dev/null && break; sleep 0.002; done
		kill -KILL $pid
		wait $pid || true
		# only the last killed one's: each run removed the one before
		run -0 bash -c "ls -A | grep '^\.out'"
		assert_output --regexp "^\.out\.lora-tmp\.$pid\.[A-Za-z0-9]{6}$"
	done
	# one of a writer still running (this shell) is not touched
	mkdir ".out.lora-tmp.$$.XXXXXX"
	lora-merge -m big big.lora -o out
	assert_equal "$(ls -A | grep '^\.out\.')" ".out.lora-tmp.$$.XXXXXX"
	rmdir ".out.lora-tmp.$$.XXXXXX"
	# and a file output's
	sleep 0 &
	dead=$!
	wait $dead
	touch ".one.lora.lora-tmp.$dead.abcdef"
	lora-init -m model -r 2 -o one.lora
	assert_no_temporaries
}

@test "a full disk while writing the first checkpoint leaves no checkpoint directory" {
	unshare -rm true 2>/dev/null || skip "no user namespaces here to mount a small tmpfs in"
	mkdir full
	run -0 --separate-stderr unshare -rm bash -c '
		mount -t tmpfs -o size=64k lora-full full || exit 9
		lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --save-steps 1 -r 32 -t all-linear -o full/t.lora
		echo "train $?"
		echo "left: $(ls -A full)"'
	assert_output "train 1
left: "
	assert_regex "$stderr" '^lora-train: full/t\.lora\.ckpt/checkpoint-1/adapter\.lora: write error: No space left on device$'
}

@test "lora-merge copies a model directory's other files: subdirectories, modes kept, links only within it" {
	cp -r model m
	mkdir -p m/tok/deep && echo v >m/tok/deep/vocab.txt && echo secret >m/private.txt
	chmod 600 m/private.txt && chmod 700 m/tok && chmod 755 m/tok/deep/vocab.txt
	ln -s tok/deep/vocab.txt m/vocab-link.txt
	ln -s tok m/tok-link
	lora-merge -m m a.lora -o out
	run -0 checkmerge m out a.lora
	assert_equal "$(cat out/tok/deep/vocab.txt out/vocab-link.txt out/tok-link/deep/vocab.txt out/private.txt)" "v
v
v
secret"
	assert_equal "$(stat -c '%a %F' out/private.txt out/tok out/tok/deep/vocab.txt out/vocab-link.txt out/tok-link)" "600 regular file
700 directory
755 regular file
755 regular file
700 directory"
	# a link leading out of the model directory: an error naming it, nothing written
	rm m/tok-link && ln -s /etc/hostname m/tok/escape
	run -1 --separate-stderr lora-merge -m m a.lora -o out2
	assert_equal "$stderr" "lora-merge: m/tok/escape: symbolic link leads outside the model directory; not copying it"
	rm m/tok/escape && ln -s ../../model/config.json m/tok/escape
	run -1 --separate-stderr lora-merge -m m a.lora -o out2
	assert_equal "$stderr" "lora-merge: m/tok/escape: symbolic link leads outside the model directory; not copying it"
	# a link back up to a directory it sits in
	rm m/tok/escape && ln -s .. m/tok/up
	run -1 --separate-stderr lora-merge -m m a.lora -o out2
	assert_equal "$stderr" "lora-merge: m/tok/up: symbolic link leads back to a directory it is in; not copying it"
	# neither a file nor a directory: an error naming it
	rm m/tok/up && mkfifo m/tok/pipe
	run -1 --separate-stderr lora-merge -m m a.lora -o out2
	assert_equal "$stderr" "lora-merge: m/tok/pipe: not a regular file or directory; not copying it"
	assert_file_not_exists out2
	assert_no_temporaries
}
