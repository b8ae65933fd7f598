#!/usr/bin/env bats
# Fault injection: an output directory that cannot be written, a full disk,
# a kill at any moment, an input that shrinks under its memory map, an
# output that would replace an input. Whatever happens: one error line,
# the documented exit status, and no half-written or temporary file left.

setup() {
	load test_helper/common-setup
	_common_setup
	M="--hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256"
	mkmodel $M model >/dev/null
	mkadapter model.layers.0.self_attn.q_proj=64x64x2:0.5,-0.25 model.layers.1.self_attn.v_proj=32x64x3:0.3,0.2,0.1 >a.lora
}

# The directory holds exactly these names (hidden ones included, bats' own
# files aside): no output and no temporary file appeared.
assert_only() {
	assert_equal "$(ls -A | grep -v '^separate-stderr-' | sort | tr '\n' ' ')" \
		"$(printf '%s\n' "$@" | sort | tr '\n' ' ')"
}

# Run a command that must not be able to write into a mode 555 directory.
# Root ignores permission bits, so as root drop the capabilities that let
# it (the inputs are root's own files, readable without them).
unprivileged() {
	if [ "$(id -u)" = 0 ]; then
		setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-dac_override,-dac_read_search "$@"
	else
		"$@"
	fi
}

# usec CMD...: run CMD (output discarded); its wall time in microseconds in $US.
usec() {
	local t0=${EPOCHREALTIME/./}
	"$@" >/dev/null 2>&1
	US=$((${EPOCHREALTIME/./} - t0))
}

# kill_within US CMD...: start CMD and SIGKILL it after a random delay up to
# 1.3 times US microseconds (so some kills land after it has finished).
kill_within() {
	local us=$1 d pid
	shift
	d=$((RANDOM * 32768 + RANDOM))
	d=$((d % (us * 13 / 10 + 1)))
	"$@" >/dev/null 2>&1 &
	pid=$!
	sleep "$((d / 1000000)).$(printf '%06d' $((d % 1000000)))"
	kill -KILL $pid 2>/dev/null || true
	wait $pid || true
}

# A model big enough that reading it takes a while: ~80 MB of f32.
big_model() {
	mkmodel --hidden 512 --inter 1408 --layers 4 --heads 8 --vocab 8192 "$1" >/dev/null
}

@test "an output directory that cannot be written: one error line, exit 1, nothing left" {
	mkdir ro && chmod 555 ro
	run -1 --separate-stderr unprivileged lora-init -m model -r 2 -o ro/i.lora
	assert_equal "$stderr" "lora-init: ro/i.lora: cannot create: Permission denied"
	run -1 --separate-stderr unprivileged lora-merge -m model a.lora -o ro/out
	assert_equal "$stderr" "lora-merge: ro/out: cannot create: Permission denied"
	run -1 --separate-stderr unprivileged lora-merge -m model/model.safetensors a.lora -o ro/out.safetensors
	assert_equal "$stderr" "lora-merge: ro/out.safetensors: cannot create: Permission denied"
	run -1 --separate-stderr unprivileged lora-svd -q -r 1 a.lora -o ro/s.lora
	assert_equal "$stderr" "lora-svd: ro/s.lora: cannot create: Permission denied"
	run -1 --separate-stderr unprivileged lora-convert a.lora -o ro/peft
	assert_equal "$stderr" "lora-convert: ro/peft: cannot create: Permission denied"
	run -1 --separate-stderr unprivileged lora-merge --combine cat a.lora a.lora -o ro/c.lora
	assert_equal "$stderr" "lora-merge: ro/c.lora: cannot create: Permission denied"
	assert_equal "$(ls -A ro)" ""
}

@test "a file size limit mid-write (ulimit -f): one error line, exit 1, no partial output" {
	# 64 KiB: the header and the first tensors fit, the model does not
	run -1 --separate-stderr bash -c 'ulimit -f 64; exec lora-merge -m model a.lora -o out'
	assert_equal "$stderr" "lora-merge: out/model.safetensors: write error: File too large"
	run -1 --separate-stderr bash -c 'ulimit -f 64; exec lora-merge -m model/model.safetensors a.lora -o out.safetensors'
	assert_equal "$stderr" "lora-merge: out.safetensors: write error: File too large"
	run -1 --separate-stderr bash -c 'ulimit -f 8; exec lora-init -m model -r 8 -t all-linear -o i.lora'
	assert_equal "$stderr" "lora-init: i.lora: write error: File too large"
	# dense factors, which do not compress
	mkadapter --gaussian 1 w1=256x256x32 w2=256x256x32 >dense.lora
	run -1 --separate-stderr bash -c 'ulimit -f 8; exec lora-svd -q -r 4 dense.lora -o s.lora'
	assert_equal "$stderr" "lora-svd: s.lora: write error: File too large"
	run -1 --separate-stderr bash -c 'ulimit -f 8; exec lora-convert dense.lora -o peft'
	assert_equal "$stderr" "lora-convert: peft/adapter_model.safetensors: write error: File too large"
	run -1 --separate-stderr bash -c 'ulimit -f 8; exec lora-merge --combine cat dense.lora dense.lora -o c.lora'
	assert_equal "$stderr" "lora-merge: c.lora: write error: File too large"
	assert_only a.lora dense.lora model
}

@test "a full disk (a 64 KiB tmpfs): one error line, exit 1, nothing left on it" {
	unshare -rm true 2>/dev/null || skip "no user namespaces here to mount a small tmpfs in"
	mkdir full
	# everything runs inside the namespace that sees the mount; report after
	run -0 --separate-stderr unshare -rm bash -c '
		mount -t tmpfs -o size=64k lora-full full || exit 9
		lora-merge -m model a.lora -o full/out; echo "merge $?"
		lora-merge -m model/model.safetensors a.lora -o full/out.safetensors; echo "file $?"
		lora-init -m model -r 32 -t all-linear -o full/i.lora; echo "init $?"
		lora-init -m model -r 32 -t all-linear | lora-convert - -o full/peft; echo "convert $?"
		echo "left: $(ls -A full)"'
	assert_output "merge 1
file 1
init 1
convert 1
left: "
	assert_equal "${stderr_lines[0]}" "lora-merge: full/out/model.safetensors: write error: No space left on device"
	assert_equal "${stderr_lines[1]}" "lora-merge: full/out.safetensors: write error: No space left on device"
	assert_regex "${stderr_lines[2]}" '^lora-init: full/i\.lora: write error: No space left on device$'
	assert_equal "${stderr_lines[3]}" "lora-convert: full/peft/adapter_model.safetensors: write error: No space left on device"
	assert_equal "${#stderr_lines[@]}" 4
}

@test "standard output on a full device: one error line, exit 1" {
	run -1 --separate-stderr bash -c 'exec lora-init -m model -r 2 >/dev/full'
	assert_equal "$stderr" "lora-init: standard output: write error: No space left on device"
	run -1 --separate-stderr bash -c 'exec lora-svd -q -r 1 a.lora >/dev/full'
	assert_equal "$stderr" "lora-svd: standard output: write error: No space left on device"
	run -1 --separate-stderr bash -c 'exec lora-inspect a.lora >/dev/full'
	assert_equal "$stderr" "lora-inspect: standard output: write error: No space left on device"
}

@test "SIGKILL of lora-merge at any moment: the previous output whole, or the new one" {
	big_model big
	mkadapter model.layers.0.self_attn.q_proj=512x512x2:0.5,-0.25 model.layers.3.mlp.down_proj=512x1408x1:0.1 >p.lora
	lora-merge -m big p.lora:0.5 -o old
	lora-merge -m big p.lora -o new
	run -1 diff -rq old new
	rm -rf out && cp -r old out
	usec lora-merge -f -m big p.lora -o out
	for i in $(seq 10); do
		rm -rf out && cp -r old out
		kill_within $US lora-merge -f -m big p.lora -o out
		diff -r out old >/dev/null || diff -r out new
	done
	# and with no previous output: none, or the whole new one
	for i in $(seq 5); do
		rm -rf out2
		kill_within $US lora-merge -m big p.lora -o out2
		[ ! -e out2 ] || diff -r out2 new
	done
}

@test "SIGKILL of lora-svd at any moment: the previous output whole, or the new one" {
	big_model base
	mktuned --plant q_proj=3,2,1 --plant v_proj=1,0.5 base tuned >/dev/null
	lora-svd -q -m base --tuned tuned -r 2 -o old.lora
	lora-svd -q -m base --tuned tuned -r 3 -o new.lora
	run -1 cmp -s old.lora new.lora
	cp old.lora out.lora
	usec lora-svd -q -f -m base --tuned tuned -r 3 -o out.lora
	for i in $(seq 10); do
		cp old.lora out.lora
		kill_within $US lora-svd -q -f -m base --tuned tuned -r 3 -o out.lora
		cmp -s out.lora old.lora || cmp out.lora new.lora
	done
	for i in $(seq 5); do
		rm -f out2.lora
		kill_within $US lora-svd -q -m base --tuned tuned -r 3 -o out2.lora
		[ ! -e out2.lora ] || cmp out2.lora new.lora
	done
}

# strike PID FILE SIZE: once PID has FILE mapped, stop it, cut FILE to SIZE
# bytes and let it go on: what it has not read yet is gone.
strike() {
	local i
	for i in $(seq 5000); do
		grep -q "/$2\$" /proc/$1/maps 2>/dev/null && break
		sleep 0.002
	done
	kill -STOP $1
	truncate -s $3 $2
	kill -CONT $1
}

@test "a model that shrinks while lora-merge reads it: one error line, exit 1, nothing left" {
	big_model big
	lora-init -m big -r 4 -o b.lora
	lora-merge -m big b.lora -o out 2>err &
	pid=$!
	# strike while the output is being written: once its temporary directory exists
	for i in $(seq 5000); do compgen -G '.out.*' >/dev/null && break; sleep 0.002; done
	kill -STOP $pid
	truncate -s 4096 big/model.safetensors
	kill -CONT $pid
	st=0
	wait $pid || st=$?
	assert_equal "$st" 1
	assert_equal "$(cat err)" "lora-merge: an input file changed or shrank while being read"
	assert_only a.lora b.lora big err model
}

@test "a checkpoint that shrinks while lora-svd reads it: one error line, exit 1, nothing left" {
	big_model base
	mktuned --plant q_proj=3,2,1 base tuned >/dev/null
	lora-svd -q -m base --tuned tuned -r 2 -o s.lora 2>err &
	pid=$!
	strike $pid tuned/model.safetensors 4096
	st=0
	wait $pid || st=$?
	assert_equal "$st" 1
	assert_equal "$(cat err)" "lora-svd: an input file changed or shrank while being read"
	assert_only a.lora base err model tuned
}

@test "token data that shrinks while lora-eval reads it: one error line, exit 1" {
	mktokens 400000 >tokens.u16
	lora-eval -q -m model -d tokens.u16 -b 1 -T 16 --batches 20000 >out 2>err &
	pid=$!
	strike $pid tokens.u16 0
	st=0
	wait $pid || st=$?
	assert_equal "$st" 1
	assert_equal "$(cat err)" "lora-eval: an input file changed or shrank while being read"
	assert_equal "$(cat out)" ""
}

@test "token data that shrinks while lora-train reads it: one error line, exit 1, nothing left" {
	mktokens 400000 >tokens.u16
	lora-train -q -m model -d tokens.u16 --seq 16 --steps 20000 -o t.lora 2>err &
	pid=$!
	strike $pid tokens.u16 0
	st=0
	wait $pid || st=$?
	assert_equal "$st" 1
	assert_equal "$(cat err)" "lora-train: an input file changed or shrank while being read"
	assert_only a.lora err model tokens.u16
}

@test "lora-diff reports a shrinking input as trouble (exit 2), as diff(1) would" {
	big_model base
	mktuned --plant q_proj=3,2,1 base tuned >/dev/null
	lora-diff -q -m base --tuned tuned >/dev/null 2>err &
	pid=$!
	strike $pid tuned/model.safetensors 4096
	st=0
	wait $pid || st=$?
	assert_equal "$st" 2
	assert_equal "$(cat err)" "lora-diff: an input file changed or shrank while being read"
}

@test "no output replaces an input: lora-merge -m X -o X and lora-svd -o onto a checkpoint are refused, even with -f" {
	cp -r model m2
	mkmodel $M --shard-bytes 100000 sharded >/dev/null
	shard=$(ls sharded/model-00002-of-*.safetensors)
	ln -s model link
	for f in "" -f; do
		run -2 --separate-stderr lora-merge $f -m model a.lora -o model
		assert_equal "$stderr" "lora-merge: model: output would overwrite the input model"
		run -2 --separate-stderr lora-merge $f -m link a.lora -o model
		assert_equal "$stderr" "lora-merge: model: output would overwrite the input model"
		run -2 --separate-stderr lora-merge $f -m model/model.safetensors a.lora -o link/model.safetensors
		assert_equal "$stderr" "lora-merge: link/model.safetensors: output would overwrite the input model"
		run -2 --separate-stderr lora-merge $f -m sharded/model.safetensors.index.json a.lora -o sharded
		assert_equal "$stderr" "lora-merge: sharded: output would overwrite the input model"
		run -2 --separate-stderr lora-merge $f -m sharded a.lora -o $shard
		assert_equal "$stderr" "lora-merge: $shard: output would overwrite the input model"
	done
	run -2 --separate-stderr lora-svd -q -f -m model --tuned m2 -r 1 -o m2/model.safetensors
	assert_equal "$stderr" "lora-svd: m2/model.safetensors: output would be written inside the input m2"
	run -2 --separate-stderr lora-svd -q -f -m model --tuned m2 -r 1 -o link/model.safetensors
	assert_equal "$stderr" "lora-svd: link/model.safetensors: output would be written inside the input model"
	diff -r model m2
	run -0 lora-inspect model
}

@test "an existing output needs -f, for every tool that writes one" {
	touch taken.lora && mkdir taken
	run -1 --separate-stderr lora-init -m model -r 2 -o taken.lora
	assert_equal "$stderr" "lora-init: taken.lora: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-svd -q -r 1 a.lora -o taken.lora
	assert_equal "$stderr" "lora-svd: taken.lora: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-convert a.lora -o taken.lora
	assert_equal "$stderr" "lora-convert: taken.lora: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-convert a.lora -o taken
	assert_equal "$stderr" "lora-convert: taken: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-merge --combine cat a.lora -o taken.lora
	assert_equal "$stderr" "lora-merge: taken.lora: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-merge -m model a.lora -o taken
	assert_equal "$stderr" "lora-merge: taken: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-merge -m model/model.safetensors a.lora -o taken.lora
	assert_equal "$stderr" "lora-merge: taken.lora: already exists (use -f to overwrite)"
	assert_equal "$(stat -c %s taken.lora)" 0
	assert_equal "$(ls -A taken)" ""
	# a symbolic link is taken too, even one that points nowhere
	ln -s nowhere.lora link.lora
	run -1 --separate-stderr lora-init -m model -r 2 -o link.lora
	assert_equal "$stderr" "lora-init: link.lora: already exists (use -f to overwrite)"
	run -1 --separate-stderr lora-merge -m model/model.safetensors a.lora -o link.lora
	assert_equal "$stderr" "lora-merge: link.lora: already exists (use -f to overwrite)"
	assert_equal "$(readlink link.lora)" nowhere.lora
	assert_file_not_exists nowhere.lora
	# with -f each replaces it whole, atomically
	lora-merge -f -m model a.lora -o taken
	run -0 checkmerge model taken a.lora
	lora-svd -q -f -r 1 a.lora -o taken.lora
	run -0 lora-inspect taken.lora
}

# ---- durability: modes, fsync before rename, a rename that fails ----

# iotrace LOG CMD...: run CMD under strace, logging every fsync, fdatasync
# and rename with the file behind each descriptor (-y) to LOG; further
# strace options (an injected fault) may come first, before --. strace sees
# the system calls whatever wraps them (libc, ASan or valgrind). A traced
# process cannot run LeakSanitizer (it needs ptrace itself), so leak
# checking is off in these runs; ASan's other checks stay on.
iotrace() {
	local log=$1 opts=()
	shift
	while [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -y -s 4096 -e signal=none \
		-e trace=fsync,fdatasync,rename,renameat,renameat2,link "${opts[@]}" -o "$log" "$@"
}

# synced_renames LOG: every rename of a temporary (a dot name) into place
# comes after an fsync of it; a directory also after an fsync of each file
# it holds now (under its name in the temporary). Prints the places renamed
# into, relative to the current directory; fails naming what was not synced.
synced_renames() {
	awk -v cwd="$(pwd -P)" '
		function abs(p) { return p ~ /^\// ? p : cwd "/" p }
		function base(p) { sub(/.*\//, "", p); return p }
		/ f(data)?sync\([0-9]+</ && / = 0$/ {
			p = $0; sub(/^[^<]*</, "", p); sub(/>\).*$/, "", p); synced[p] = 1; next
		}
		/ rename(at2?)?\(/ && / = 0$/ {
			split($0, q, "\""); src = abs(q[2]); dst = abs(q[4])
			if (base(src) ~ /^\./) {
				if (!(src in synced)) { print "not synced before its rename: " q[4]; bad = 1 }
				cmd = "find \"" dst "\" -mindepth 1 -maxdepth 1 -type f 2>/dev/null"
				while ((cmd | getline f) > 0)
					if (!((src "/" base(f)) in synced)) { print "not synced before its directory was renamed: " f; bad = 1 }
				close(cmd)
				print substr(dst, length(cwd) + 2)
			}
			# what was durable under the old name is under the new one
			if (src in synced) synced[dst] = 1
			for (k in synced) if (index(k, src "/") == 1) synced[dst substr(k, length(src) + 1)] = 1
		}
		END { exit bad }' "$1"
}

# Every tool that writes, into place: files (lib/core/outfile.c) from
# lora-init, lora-svd, lora-generate and combine; a safetensors file
# (lib/io/safetensors.c); a PEFT directory (lib/io/peft.c); a sharded
# checkpoint directory with its index and other files (lib/ops/merge.c);
# lora-train's checkpoints (lib/train/train.c) and its output. Then the
# directory outputs again over existing ones (-f).
WRITERS=(
	"lora-init -m model -r 2 -o out/i.lora"
	"lora-svd -q -r 1 a.lora -o out/s.lora"
	"lora-merge --combine svd -r 1 a.lora a.lora -o out/c.lora"
	"lora-generate -m model --rows 2 -n 4 -o out/g.bin"
	"lora-merge -m model/model.safetensors a.lora -o out/m.safetensors"
	"lora-convert a.lora -o out/peft"
	"lora-merge -m sharded a.lora -o out/merged"
	"lora-train -q -m model -d t.bin --seq 16 --batch 2 --steps 2 --save-steps 2 -o out/t.lora"
	"lora-convert -f a.lora -o out/peft"
	"lora-merge -f -m sharded a.lora -o out/merged"
)

writers_setup() {
	mkmodel $M --shard-bytes 100000 sharded >/dev/null
	mktokens --vocab 256 200 >t.bin
	mkdir out
}

# strace needs ptrace, which some containers forbid.
need_strace() {
	strace -qq -o /dev/null true 2>/dev/null || skip "strace cannot trace here (no ptrace)"
}

@test "every writer fsyncs each file, and each directory it fills, before renaming it into place" {
	need_strace
	writers_setup
	local i=0
	for w in "${WRITERS[@]}"; do
		i=$((i + 1))
		iotrace log$i -- $w
		run synced_renames log$i
		[ "$status" = 0 ] || fail "$w: $output"
		# the final output is among the places renamed into
		out=${w##* }
		assert_line "$out"
	done
	# the checkpoint, its files, and the output
	run -0 synced_renames log8
	assert_equal "$(grep -v '^out/t\.lora\.ckpt/\.checkpoint-2\.' <<<"$output")" "out/t.lora.ckpt/checkpoint-2
out/t.lora"
}

@test "outputs follow the umask: files 0666 and directories 0777 less it, inside directory outputs too" {
	writers_setup
	# what lora-merge copies from a model directory keeps its own mode
	chmod 600 sharded/config.json
	for mask in 002 027; do
		rm -rf out && mkdir out
		for w in "${WRITERS[@]}"; do (umask $mask && $w); done
		want_f=$(printf '%o' $((0666 & ~0$mask))) want_d=$(printf '%o' $((0777 & ~0$mask)))
		run -0 find out -mindepth 1 ! -path out/merged/config.json \( -type f ! -perm $want_f -o -type d ! -perm $want_d \) -printf '%m %p\n'
		assert_output ''
		assert_equal "$(stat -c %a out/merged/config.json)" 600
		# and they are all there
		assert_equal "$(find out -mindepth 1 | wc -l)" 22
	done
}

@test "a rename into place that fails: one error line, exit 1, no temporary left, the old output intact" {
	need_strace
	writers_setup
	# the old outputs that -f replaces
	lora-convert a.lora -o out/peft
	lora-merge -m model a.lora:0.5 -o out/merged
	mv out old
	faults=0
	# Each rename of each writer fails in turn (strace counts calls per
	# system call); then again where the file system cannot exchange two
	# directories (renameat2 RENAME_EXCHANGE refused with EINVAL), which
	# takes the writers' other way of replacing a directory.
	for w in "${WRITERS[@]}"; do
		for noswap in "" -e\ inject=renameat2:error=EINVAL; do
			[ -z "$noswap" ] || [[ $w == *" -f "* ]] || continue
			rm -rf out && cp -r old out
			[[ $w == *" -f "* ]] || rm -rf out/*
			cp -r out before
			iotrace clean.log $noswap -- $w
			rm -rf after && mv out after
			for sc in rename renameat renameat2 link; do
				[ -z "$noswap" ] || [ $sc != renameat2 ] || continue
				for k in $(seq "$(grep -c " $sc(" clean.log)"); do
					rm -rf out && cp -r before out
					st=0
					iotrace fail.log $noswap -e inject=$sc:error=EXDEV:when=$k -- $w 2>err || st=$?
					grep -q INJECTED fail.log || fail "$w: $sc #$k did not fail"
					faults=$((faults + 1))
					run -0 find . -name '.?*'
					assert_output ''
					if [ "$st" = 0 ]; then
						# a way around the failure (lora-merge replaces a
						# directory in two renames when it cannot swap)
						diff -r after out || fail "$w, $sc #$k failing: exit 0 with another output"
						continue
					fi
					[ "$st" = 1 ] || fail "$w, $sc #$k failing ${noswap:+(no exchange)}: exit $st"
					assert_equal "$(wc -l <err)" 1
					assert_regex "$(cat err)" "^lora-[a-z]+: .*: cannot (rename into place|replace): Invalid cross-device link$"
					# whatever was there before is still there, as it was;
					# lora-train keeps the checkpoints it finished
					for c in out/t.lora.ckpt/*; do
						[ ! -e "$c" ] || assert_equal "$(ls "$c" | tr '\n' ' ')" "adapter.lora optimizer.bin state.json "
					done
					rm -rf out/t.lora.ckpt
					diff -r before out || fail "$w, $sc #$k failing ${noswap:+(no exchange)}: the old outputs changed"
				done
			done
			rm -rf before after
		done
	done
	# 5 single files; a PEFT directory 3, 3 over an old one and 4 without
	# exchange (its files published by link(2) where renameat2 fails); the
	# merged directory 7, 7 and 8; lora-train 5
	assert_equal "$faults" 42
}
