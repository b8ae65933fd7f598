#!/usr/bin/env bats
# lora-train: every promise of lora-train(1).

setup() {
	load test_helper/common-setup
	_common_setup
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --init-scale 0.2 model >/dev/null
	mktokens --vocab 256 --seed 1 20000 > train.bin
	mktokens --vocab 256 --seed 2 2000 > val.bin
	TR="-m model -d train.bin --seq 32 --batch 4"
}

@test "lora-train -h, --version, unknown option, usage errors" {
	run -0 lora-train -h
	assert_line --index 0 'Usage: lora-train -m MODEL -d DATA [ADAPTER|-] [-c CONFIG] [options] [-o OUT]'
	run -0 lora-train --version
	assert_output 'lora-train 0.1.0'
	run -2 --separate-stderr lora-train --bogus
	assert_equal "${stderr_lines[0]}" "lora-train: unknown option '--bogus'"
	run -2 --separate-stderr lora-train -m model -o x.lora
	assert_equal "${stderr_lines[0]}" "lora-train: need -m MODEL and -d DATA"
	run -2 --separate-stderr lora-train $TR --batch four -o x.lora
	assert_equal "$stderr" "lora-train: 'micro_batch_size' must be a positive integer, got 'four'"
	run -2 --separate-stderr lora-train $TR --set learning_rat=1 -o x.lora
	assert_equal "$stderr" "lora-train: unknown key 'learning_rat' (did you mean 'learning_rate'?)"
	run -2 --separate-stderr lora-train $TR --resume ck -r 4 -o x.lora
	assert_regex "${stderr_lines[0]}" "^lora-train: --resume continues with the checkpoint's adapter and configuration"
	assert_file_not_exists x.lora
}

@test "missing model, data, adapter; truncated adapter; wrong-shaped adapter" {
	run -1 --separate-stderr lora-train -m nope -d train.bin -o x.lora
	assert_equal "$stderr" "lora-train: nope: No such file or directory"
	run -1 --separate-stderr lora-train -m model -d nope.bin -o x.lora
	assert_equal "$stderr" "lora-train: nope.bin: No such file or directory"
	run -1 --separate-stderr lora-train $TR nope.lora -o x.lora
	assert_equal "$stderr" "lora-train: nope.lora: No such file or directory"
	lora-init -m model -o a.lora
	head -c 300 a.lora > t.lora
	run -1 --separate-stderr lora-train $TR t.lora -o x.lora
	assert_regex "$stderr" "^lora-train: t\.lora: truncated"
	lora-init --shape model.layers.0.self_attn.q_proj=64x32 -o w.lora
	run -1 --separate-stderr lora-train $TR w.lora -o x.lora
	assert_equal "$stderr" "lora-train: w.lora: layer 'model.layers.0.self_attn.q_proj': adapter shape 64x32 does not match the model's 64x64"
	assert_file_not_exists x.lora
}

@test "YAML configuration: keys, errors with line numbers, flags override the file" {
	printf 'lora_r: 4\nlora_alpha: 8\nlearning_rate: 0.001\nmax_steps: 3\n' > run.yaml
	lora-train $TR -c run.yaml -r 2 -o a.lora
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -c '[.ranks[0].rank, .alphas[0].alpha, .provenance.config.lora_r, .provenance.config.learning_rate, .provenance.steps]' <<<"$output")" '[2,8,2,0.001,3]'
	printf 'lora_r: 4\nlearning_rat: 0.1\n' > bad.yaml
	run -1 --separate-stderr lora-train $TR -c bad.yaml -o b.lora
	assert_equal "$stderr" "lora-train: bad.yaml:2: unknown key 'learning_rat' (did you mean 'learning_rate'?)"
	printf 'lora_r: &a 4\nlora_alpha: *a\n' > alias.yaml
	run -1 --separate-stderr lora-train $TR -c alias.yaml -o b.lora
	assert_equal "$stderr" "lora-train: alias.yaml:1: YAML anchors are not supported"
	printf 'micro_batch_size: four\n' > typed.yaml
	run -1 --separate-stderr lora-train $TR -c typed.yaml -o b.lora
	assert_equal "$stderr" "lora-train: typed.yaml:1: 'micro_batch_size' must be a positive integer, got 'four'"
	assert_file_not_exists b.lora
}

@test "training on a teacher's samples closes most of the gap to the teacher's loss" {
	mkplanted --seed 7 model.layers.0.self_attn.q_proj=64x64x4:8,6,4,2 model.layers.0.self_attn.v_proj=32x64x4:8,6,4,2 \
		model.layers.1.self_attn.q_proj=64x64x4:8,6,4,2 model.layers.1.self_attn.v_proj=32x64x4:8,6,4,2 > true.lora
	lora-merge -q -m model true.lora -o teacher
	lora-generate -m teacher --rows 1024 -n 31 --seed 1 -o t.bin
	lora-generate -m teacher --rows 32 -n 31 --seed 2 -o v.bin
	lora-init -m model -r 8 -a 16 | lora-train -m model -d t.bin --eval-data v.bin - --seq 32 --batch 16 \
		--steps 300 --lr 1e-2 --warmup 10 -o learned.lora
	ev() { lora-eval -m "$1" "${@:2}" -d v.bin --seq 32 --batch 8 --json | jq .loss; }
	base=$(ev model) trained=$(ev model learned.lora) teacher=$(ev teacher)
	# at least 80% of the way from the base to the floor
	awk -v b="$base" -v t="$trained" -v f="$teacher" 'BEGIN { exit !(b - f > 0.3 && (b - t) >= 0.8 * (b - f)) }'
	# the eval loss recorded in the provenance is lora-eval's on the same batches (in file order)
	same=$(lora-eval -m model learned.lora -d v.bin --seq 32 --batch 16 --no-shuffle --json | jq .loss)
	awk -v a="$(lora-inspect --json learned.lora | jq .provenance.eval_loss)" -v b="$same" 'BEGIN { exit !(a - b < 1e-6 && b - a < 1e-6) }'
}

@test "20 steps straight and 10 + resume + 10 give byte-identical adapters" {
	lora-train $TR --eval-data val.bin --steps 20 --save-steps 10 --lr 1e-3 --dropout 0.1 -o a.lora
	assert_file_exists a.lora.ckpt/checkpoint-10/adapter.lora
	assert_file_exists a.lora.ckpt/checkpoint-10/optimizer.bin
	lora-train -m model -d train.bin --eval-data val.bin --resume a.lora.ckpt/checkpoint-10 -o b.lora
	cmp a.lora b.lora
	cmp a.lora.ckpt/checkpoint-20/adapter.lora b.lora.ckpt/checkpoint-20/adapter.lora
	# other data is refused
	run -1 --separate-stderr lora-train -m model -d val.bin --resume a.lora.ckpt/checkpoint-10 -o c.lora
	assert_regex "$stderr" "^lora-train: a\.lora\.ckpt/checkpoint-10: the checkpoint was trained on train\.bin:40000:[0-9a-f]{16}, not val\.bin:4000:[0-9a-f]{16}$"
}

@test "results do not depend on the thread count beyond rounding, and recomputation changes nothing" {
	lora-train -j 1 $TR --steps 3 --lr 1e-3 --log l1.jsonl -o a.lora
	lora-train -j 2 $TR --steps 3 --lr 1e-3 --log l2.jsonl -o b.lora
	lora-train -j 2 $TR --steps 3 --lr 1e-3 --recompute -o c.lora
	cmp b.lora c.lora
	paste <(jq .grad_norm l1.jsonl) <(jq .grad_norm l2.jsonl) |
		awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) { print "grad norm " $1 " vs " $2; exit 1 } }'
}

@test "a non-finite loss stops training naming the step; no output, the last checkpoint kept" {
	# AdamW moves every trained value by about lr on the first step: 1e38 is near f32's limit
	run -1 --separate-stderr lora-train $TR --steps 50 --lr 1e38 --max-grad-norm 0 --save-steps 1 -o x.lora
	assert_output ''
	assert_regex "$stderr" "^lora-train: step [0-9]+: (the loss is (NaN|infinite)|the gradient is not finite|a parameter became non-finite); stopping \(the last checkpoint is kept\)$"
	assert_file_not_exists x.lora
	assert_file_exists x.lora.ckpt/checkpoint-1/state.json
}

@test "SIGTERM finishes the step, writes a checkpoint and the adapter, exits 143" {
	lora-train $TR --steps 100000 --lr 1e-4 --log l.jsonl -o x.lora &
	pid=$!
	for i in $(seq 3000); do [ -s l.jsonl ] && break; sleep 0.01; done
	kill -TERM $pid
	st=0
	wait $pid || st=$?
	assert_equal "$st" 143
	assert_file_exists x.lora
	run -0 lora-inspect --json x.lora
	assert_equal "$(jq .provenance.interrupted <<<"$output")" true
	steps=$(jq .provenance.steps <<<"$output")
	assert_file_exists "x.lora.ckpt/checkpoint-$steps/adapter.lora"
	assert_equal "$(ls -A | grep -c '^\.')" 0
}

@test "the log has one JSON object per step and per eval; provenance records the run" {
	lora-train $TR --eval-data val.bin --steps 6 --eval-steps 3 --lr 1e-3 --log run.jsonl -o a.lora
	assert_equal "$(jq -s 'map(select(.loss)) | length' run.jsonl)" 6
	assert_equal "$(jq -s 'map(select(.eval_loss)) | length' run.jsonl)" 2
	assert_equal "$(jq -c -s '.[0] | keys' run.jsonl)" '["elapsed","grad_norm","loss","lr","step","tokens_per_s"]'
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -r '.provenance.tool' <<<"$output")" "lora-train 0.1.0"
	assert_regex "$(jq -r '.provenance.data' <<<"$output")" '^train\.bin:40000:[0-9a-f]{16}$'
	assert_equal "$(jq -r '.base_model.fingerprint' <<<"$output")" "$(lora-inspect --json model | jq -r .fingerprint)"
	assert_equal "$(jq -c '.provenance.config | [.max_steps, .sequence_len, .micro_batch_size, .eval_steps]' <<<"$output")" '[6,32,4,3]'
	# the final step's loss and lr in the log are the provenance's and the schedule's
	awk -v a="$(jq -s 'map(select(.loss)) | last | .loss' run.jsonl)" -v b="$(jq .provenance.train_loss <<<"$output")" \
		'BEGIN { d = a - b; exit !(d < 1e-7 && d > -1e-7) }'
}

@test "an existing output is refused before training; a PEFT adapter trains too" {
	touch x.lora
	run -1 --separate-stderr lora-train $TR --steps 2 -o x.lora
	assert_equal "$stderr" "lora-train: x.lora: already exists (use -f to overwrite)"
	mkpeft peft model.layers.0.self_attn.q_proj=64x64x4 >/dev/null
	lora-train $TR peft --steps 2 -o p.lora
	assert_equal "$(lora-inspect --json p.lora | jq -c '[.num_layers, .ranks[0].rank]')" '[1,4]'
}

@test "without an adapter, lora-train starts from the one lora-init makes: one set of defaults" {
	lora-init -m model | lora-train $TR - --steps 2 -o a.lora
	lora-train $TR --steps 2 -o b.lora
	cmp a.lora b.lora
	# PEFT's r and lora_alpha, the paper's targets, seed 42
	run -0 lora-inspect --json b.lora
	assert_equal "$(jq -c '[.ranks, .alphas, .targets, .provenance.config.seed]' <<<"$output")" \
		'[[{"rank":8,"layers":4}],[{"alpha":8,"layers":4}],["q_proj","v_proj"],42]'
	assert_equal "$(lora-init -m model | lora-inspect --json - | jq -c .provenance.seed)" 42
	# the same with options (the recorded configurations differ: the
	# factors are compared), all-linear recorded as such
	lora-init -m model -r 2 -a 4 -t all-linear --seed 7 | lora-train $TR - --seed 7 --steps 2 -o c.lora
	lora-train $TR -r 2 -a 4 -t all-linear --seed 7 --steps 2 -o d.lora
	run -0 lora-diff --tol 0 c.lora d.lora
	assert_equal "$(lora-inspect --json d.lora | jq -c '[.targets, .num_layers, .alphas]')" \
		'[["all-linear"],14,[{"alpha":4,"layers":14}]]'
}
