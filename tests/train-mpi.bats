#!/usr/bin/env bats
# lora-train over MPI (lora-train(1), DATA-PARALLEL RUNS): ranks on this
# machine against one process, resuming under another rank count, a rank
# killed, SIGTERM, bad data on one rank.

setup() {
	load test_helper/common-setup
	_common_setup
	command -v mpirun >/dev/null || skip "no mpirun (Open MPI is in make deps)"
	# the binary itself: under valgrind, lora-train on PATH is a wrapper
	ldd "$LORA_BUILD/bin/lora-train" | grep -q libmpi || skip "lora-train built with MPI=0"
	# Open MPI keeps its start-up allocations until exit
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
	# CI runs as root; two cores run three ranks
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --init-scale 0.2 model >/dev/null
	mktokens --vocab 256 --seed 1 20000 > train.bin
	mktokens --vocab 256 --seed 2 2000 > val.bin
	TR="-j 1 -m model -d train.bin --seq 32 --batch 4 --lr 1e-3 --dropout 0.1"
}

# run_ranks N ARGS...: lora-train on N ranks, Open MPI's notes left out.
run_ranks() { mpirun -q -np "$1" lora-train "${@:2}"; }

@test "2 and 3 ranks write the bytes of one process with the same global batch: adapter, checkpoints; rank 0 alone writes" {
	lora-train $TR --accum 6 --steps 4 --save-steps 2 --eval-data val.bin --eval-steps 2 --log one.jsonl -o one.lora
	run_ranks 2 $TR --accum 3 --steps 4 --save-steps 2 --eval-data val.bin --eval-steps 2 --log two.jsonl -o two.lora
	run_ranks 3 $TR --accum 2 --steps 4 --save-steps 2 --eval-data val.bin --eval-steps 2 --log three.jsonl -o three.lora \
		--json > three.json
	for n in two three; do
		cmp one.lora $n.lora
		for f in adapter.lora optimizer.bin state.json; do
			cmp one.lora.ckpt/checkpoint-2/$f $n.lora.ckpt/checkpoint-2/$f
			cmp one.lora.ckpt/checkpoint-4/$f $n.lora.ckpt/checkpoint-4/$f
		done
		# the same losses, norms and lr in the log, once (no rank but 0 writes it)
		assert_equal "$(jq -c 'select(.loss) | [.step, .loss, .grad_norm, .lr]' $n.jsonl)" \
			"$(jq -c 'select(.loss) | [.step, .loss, .grad_norm, .lr]' one.jsonl)"
		assert_equal "$(jq -c 'select(.eval_loss) | [.step, .eval_loss]' $n.jsonl)" \
			"$(jq -c 'select(.eval_loss) | [.step, .eval_loss]' one.jsonl)"
		assert_equal "$(wc -l < $n.jsonl)" 7
		# every step says how long it waited on the exchange
		assert_equal "$(jq -s 'map(select(.loss) | .reduce_s | select(. >= 0 and . < 60)) | length' $n.jsonl)" 4
	done
	# the set-up line: ranks and the global batch (micro-batch x accumulation x ranks)
	assert_equal "$(jq -c -s '.[0] | [.ranks, .global_batch]' one.jsonl)" '[1,24]'
	assert_equal "$(jq -c -s '.[0] | [.ranks, .global_batch]' two.jsonl)" '[2,24]'
	assert_equal "$(jq -c -s '.[0] | [.ranks, .global_batch]' three.jsonl)" '[3,24]'
	# --json, from rank 0 alone: the global batch, the exchange's seconds
	# (the log's, in all and the longest)
	assert_equal "$(jq -c '[.steps, .ranks, .global_batch, .checkpoint]' three.json)" '[4,3,24,"three.lora.ckpt/checkpoint-4"]'
	jq -e -s --slurpfile r three.json 'map(select(.loss) | .reduce_s) | (add - $r[0].reduce_s | fabs) < 1e-5 and
		(max - $r[0].reduce_s_max | fabs) < 1e-6 and max > 0' three.jsonl
	# one process's log has no exchange
	assert_equal "$(jq -s -c '.[1] | has("reduce_s")' one.jsonl)" false
	# the adapter records the global accumulation
	assert_equal "$(lora-inspect --json three.lora | jq .provenance.config.gradient_accumulation_steps)" 6
	assert_equal "$(ls -A | grep -c '^\.')" 0
}

@test "a checkpoint resumes under another rank count with the same global batch, bit for bit" {
	lora-train $TR --accum 6 --steps 6 --save-steps 3 -o straight.lora
	run_ranks 3 $TR --accum 2 --steps 6 --save-steps 3 -o three.lora
	run_ranks 2 -j 1 -m model -d train.bin --resume three.lora.ckpt/checkpoint-3 -o two.lora
	cmp straight.lora two.lora
	lora-train -j 1 -m model -d train.bin --resume three.lora.ckpt/checkpoint-3 -o one.lora
	cmp straight.lora one.lora
	# a global count the ranks cannot share is refused by rank 0, once
	lora-train $TR --accum 3 --steps 2 --save-steps 1 -o odd.lora
	run -2 --separate-stderr run_ranks 2 -j 1 -m model -d train.bin --resume odd.lora.ckpt/checkpoint-1 -o x.lora
	assert_equal "$stderr" "lora-train: odd.lora.ckpt/checkpoint-1: gradient_accumulation_steps 3 (the global count) does not divide among 2 ranks"
	assert_file_not_exists x.lora
}

@test "SIGTERM to mpirun: every rank finishes the step, rank 0 writes a checkpoint and the adapter, all exit 143" {
	# Open MPI sends SIGTERM this many seconds after its own, SIGKILL as
	# many after: time for a step and the writes (fsync on a busy disk)
	export OMPI_MCA_odls_base_sigkill_timeout=10
	A="$TR --steps 100000 --scheduler constant -o x.lora"
	# ranks 1 and 2 under a shell that records their status (and lets
	# Open MPI's SIGTERM pass to them alone)
	mpirun -np 1 lora-train $A --log l.jsonl : -np 1 sh -c 'trap "" TERM; lora-train "$@"; echo $? > status.1' sh $A : \
		-np 1 sh -c 'trap "" TERM; lora-train "$@"; echo $? > status.2' sh $A 2> err.txt &
	pid=$!
	for i in $(seq 3000); do [ "$(cat l.jsonl 2>/dev/null | wc -l)" -gt 3 ] && break; sleep 0.01; done
	kill -TERM $pid
	wait $pid || true
	assert_equal "$(cat status.1) $(cat status.2)" "143 143"
	run -0 lora-inspect --json x.lora
	assert_equal "$(jq .provenance.interrupted <<<"$output")" true
	steps=$(jq .provenance.steps <<<"$output")
	assert_file_exists "x.lora.ckpt/checkpoint-$steps/adapter.lora"
	assert_equal "$(jq -s 'map(select(.loss)) | last | .step' l.jsonl)" "$steps"
	assert_equal "$(grep -c "^lora-train: interrupted at step $steps; checkpoint in x.lora.ckpt/checkpoint-$steps$" err.txt)" 1
	# the factors are one process's after as many steps (3 ranks x 1)
	lora-train $TR --accum 3 --steps "$steps" --scheduler constant -o one.lora
	run -0 lora-diff --tol 0 one.lora x.lora
	assert_equal "$(ls -A | grep -c '^\.')" 0
}

@test "a rank killed mid-run ends the job: the launcher names rank and host, nothing is written" {
	A="$TR --steps 100000 -o x.lora"
	mpirun -np 1 lora-train $A --log l.jsonl : -np 1 sh -c 'echo $$ > r1.pid; exec lora-train "$@"' sh $A 2> err.txt &
	pid=$!
	for i in $(seq 3000); do [ "$(cat l.jsonl 2>/dev/null | wc -l)" -gt 2 ] && break; sleep 0.01; done
	kill -KILL "$(cat r1.pid)"
	st=0
	wait $pid || st=$?
	assert_equal "$st" 137
	assert_regex "$(cat err.txt)" "mpirun noticed that process rank 1 with PID [0-9]+ on node $(hostname) exited on signal 9 \(Killed\)\."
	assert_file_not_exists x.lora
	assert_file_not_exists x.lora.ckpt
	assert_equal "$(ls -A | grep -c '^\.')" 0
}

@test "bad data on one rank: one line naming the rank, host and file, exit 1 on every rank, nothing written" {
	mkdir h1
	mktokens --vocab 300 --seed 1 20000 > h1/train.bin
	A="-j 1 -m model --seq 32 --batch 4 --steps 3 --log l.jsonl -o x.lora"
	run -1 --separate-stderr mpirun -q -np 1 lora-train $A -d train.bin : -np 1 lora-train $A -d h1/train.bin
	assert_regex "$stderr" "^lora-train: rank 1 \($(hostname)\): h1/train\.bin: token [0-9]+ at position [0-9]+ is >= vocab_size 256$"
	assert_output ''
	# a copy with other tokens would train on other numbers: refused
	mktokens --vocab 256 --seed 5 20000 > h1/train.bin
	run -1 --separate-stderr mpirun -q -np 1 lora-train $A -d train.bin : -np 2 lora-train $A -d h1/train.bin
	assert_regex "$stderr" "^lora-train: rank 1 \($(hostname)\): h1/train\.bin: not rank 0's data \(train\.bin:40000:[0-9a-f]{16}; rank 0 has train\.bin:40000:[0-9a-f]{16}\)$"
	assert_file_not_exists x.lora
	assert_file_not_exists l.jsonl
	assert_file_not_exists x.lora.ckpt
}

@test "under a launcher: a usage error is said once; standard output and input are refused" {
	run -2 --separate-stderr run_ranks 2 --bogus
	assert_equal "${stderr_lines[0]}" "lora-train: unknown option '--bogus'"
	assert_equal "$(grep -c "unknown option" <<<"$stderr")" 1
	run -2 --separate-stderr run_ranks 2 $TR --steps 1
	assert_equal "$stderr" "lora-train: with 2 ranks the adapter needs a file (-o FILE): standard output passes through the launcher"
	lora-init -m model -o a.lora
	run -2 --separate-stderr run_ranks 2 $TR - --steps 1 -o x.lora < a.lora
	assert_equal "$stderr" "lora-train: with 2 ranks the adapter must be a file: standard input reaches rank 0 only"
	assert_file_not_exists x.lora
}
