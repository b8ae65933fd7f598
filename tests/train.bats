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

# close A B TOL: A within relative TOL of B
close() {
	awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; if (d > t) { print a " is not within " t " of " b; exit 1 } }'
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
	# a key given twice: the last one stands, as in Python, so a bad first one changes nothing
	sed -i 's/^{/{"step": "x", /' a.lora.ckpt/checkpoint-10/state.json
	lora-train -m model -d train.bin --eval-data val.bin --resume a.lora.ckpt/checkpoint-10 -o d.lora
	cmp a.lora d.lora
	# a damaged state is named, with where it breaks
	printf '{"step": 10, "step": ' >a.lora.ckpt/checkpoint-10/state.json
	run -1 --separate-stderr lora-train -m model -d train.bin --resume a.lora.ckpt/checkpoint-10 -o c.lora
	assert_equal "$stderr" "lora-train: a.lora.ckpt/checkpoint-10/state.json: file is not valid JSON (error near byte 20)"
	assert_file_not_exists c.lora
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
	# first the setup: compute type, the checkpoint's bytes read in place, the activations planned
	assert_equal "$(jq -c -s '.[0] | [.compute, .weight_bytes == '"$(lora-inspect --json model | jq .tensor_bytes)"', .activation_bytes > 0]' run.jsonl)" '["f32",true,true]'
	assert_equal "$(jq -c -s '.[1] | keys' run.jsonl)" '["elapsed","grad_norm","loss","lr","step","tokens_per_s"]'
	run -0 lora-inspect --json a.lora
	assert_equal "$(jq -r '.provenance.compute' <<<"$output")" f32
	assert_equal "$(jq -r '.provenance.tool' <<<"$output")" "lora-train 0.1.0"
	assert_regex "$(jq -r '.provenance.data' <<<"$output")" '^train\.bin:40000:[0-9a-f]{16}$'
	assert_equal "$(jq -r '.base_model.fingerprint' <<<"$output")" "$(lora-inspect --json model | jq -r .fingerprint)"
	assert_equal "$(jq -c '.provenance.config | [.max_steps, .sequence_len, .micro_batch_size, .eval_steps]' <<<"$output")" '[6,32,4,3]'
	# the final step's loss and lr in the log are the provenance's and the schedule's
	awk -v a="$(jq -s 'map(select(.loss)) | last | .loss' run.jsonl)" -v b="$(jq .provenance.train_loss <<<"$output")" \
		'BEGIN { d = a - b; exit !(d < 1e-7 && d > -1e-7) }'
	# cosine without warmup over 6 steps: step 6 runs at s = 5
	jq -s 'map(select(.loss)) | last | .lr' run.jsonl | lr_check cosine 1e-3 0 6 6
}

@test "--json reports the run: steps, losses, ranks, global batch, no exchange for one process; needs -o" {
	lora-train $TR --accum 2 --eval-data val.bin --steps 3 --save-steps 2 --lr 1e-3 --log l.jsonl --json -o a.lora > r.json
	assert_equal "$(jq -c '[.steps, .interrupted, .checkpoint, .ranks, .global_batch, .reduce_s, .reduce_s_max]' r.json)" \
		'[3,false,"a.lora.ckpt/checkpoint-2",1,8,0,0]'
	# the losses are the log's last (9 digits there) and the provenance's
	awk -v a="$(jq .train_loss r.json)" -v b="$(jq -s 'map(select(.loss)) | last | .loss' l.jsonl)" \
		'BEGIN { d = a - b; exit !(d < 1e-8 && d > -1e-8) }'
	assert_equal "$(jq .eval_loss r.json)" "$(lora-inspect --json a.lora | jq .provenance.eval_loss)"
	run -2 --separate-stderr lora-train $TR --steps 1 --json
	assert_equal "${stderr_lines[0]}" "lora-train: --json needs -o FILE: the adapter would share standard output"
}

# lr_check KIND BASE W T STEP: the lr on standard input is the schedule's
# at STEP (counted from 1, so s = STEP - 1) by lora-train(1)'s formulas,
# written out here: warmup s/W, then constant, linear or half a cosine.
lr_check() {
	awk -v k="$1" -v b="$2" -v w="$3" -v t="$4" -v step="$5" '
		{ s = step - 1
		  if (s < w) want = b * s / (w > 1 ? w : 1)
		  else if (k == "constant") want = b
		  else {
			if (s > t) s = t
			span = t - w > 1 ? t - w : 1
			f = k == "linear" ? (t - s) / span : 0.5 * (1 + cos(3.14159265358979324 * (s - w) / span))
			want = b * (f > 0 ? f : 0)
		  }
		  d = $1 - want
		  if (d > 1e-8 * b || d < -1e-8 * b) { printf "step %d: lr %s, want %.9g\n", step, $1, want; bad = 1 }
		  step++ }
		END { exit bad }' || fail "lr of $1 (W $3, T $4) is not the schedule's"
}

@test "the lr in the log at every step is the schedule's: warmup, then cosine, linear or constant" {
	for k in cosine linear constant; do
		lora-train $TR --steps 7 --warmup 3 --scheduler $k --lr 2e-3 --log $k.jsonl -o $k.lora
		assert_equal "$(jq -s 'map(select(.loss)) | map(.step) | join(",")' -r $k.jsonl)" 1,2,3,4,5,6,7
		jq -s -r 'map(select(.loss))[] | .lr' $k.jsonl | lr_check $k 2e-3 3 7 1
	done
	# the planned length comes from the data: 20000 tokens make 156 batches
	# of 4 x 32 (+1), so 0.05 epochs is ceil(7.8) = 8 steps, with --accum 2
	# ceil(0.05 * 78) = 4
	lora-train $TR --epochs 0.05 --warmup 2 --lr 1e-3 --log e.jsonl -o e.lora
	jq -s -r 'map(select(.loss))[] | .lr' e.jsonl | lr_check cosine 1e-3 2 8 1
	assert_equal "$(jq -s 'map(select(.loss)) | length' e.jsonl)" 8
	lora-train $TR --accum 2 --epochs 0.05 --scheduler linear --lr 1e-3 --log a.jsonl -o a.lora
	jq -s -r 'map(select(.loss))[] | .lr' a.jsonl | lr_check linear 1e-3 0 4 1
	assert_equal "$(jq -s 'map(select(.loss)) | length' a.jsonl)" 4
}

@test "epochs: at lr 0 each visits every window once (mean loss = lora-eval's), shuffled anew each time" {
	# 28 windows of 32 (+1) tokens: 7 batches of 4 per epoch, none left out
	mktokens --vocab 256 --seed 3 897 > small.bin
	ev=$(lora-eval -q -m model -d small.bin -b 4 -T 32 --json | jq .loss)
	for order in shuffled in-order; do
		flag=; [ $order = shuffled ] || flag=--no-shuffle
		lora-train -m model -d small.bin --seq 32 --batch 4 --epochs 3 --lr 0 $flag --log $order.jsonl -o $order.lora
		assert_equal "$(jq -s 'map(select(.loss)) | length' $order.jsonl)" 21
		# per epoch: the mean of its 7 losses, and its losses in order
		jq -s -r 'map(select(.loss)) | range(3) as $e | .[7 * $e:7 * $e + 7] | map(.loss) | "\(add / 7) \(map(tostring) | join(","))"' \
			$order.jsonl > $order.epochs
		awk -v want="$ev" '{ d = $1 - want; if (d > 1e-6 || d < -1e-6) { print "epoch " NR ": mean " $1 ", lora-eval " want; exit 1 } }' \
			$order.epochs
	done
	# in file order every epoch repeats the first; shuffled, none does
	assert_equal "$(cut -d' ' -f2 in-order.epochs | sort -u | wc -l)" 1
	assert_equal "$(cut -d' ' -f2 shuffled.epochs | sort -u | wc -l)" 3
}

@test "--batch 4 --accum 2 is --batch 8: per step the same rows, loss, gradient norm and lr; the same adapter" {
	# Each micro-batch's loss is a mean over its tokens, so the accumulated
	# gradient is the mean of the two: equal to the batch of 8 up to
	# rounding (a sum would double the gradient norm). The lr is exactly
	# equal; losses and norms agree to about 1e-7.
	lora-train -m model -d train.bin --seq 32 --batch 8 --steps 5 --lr 1e-2 --log b8.jsonl -o b8.lora
	lora-train -m model -d train.bin --seq 32 --batch 4 --accum 2 --steps 5 --lr 1e-2 --log b4.jsonl -o b4.lora
	assert_equal "$(jq -s -c 'map(select(.loss) | .lr)' b4.jsonl)" "$(jq -s -c 'map(select(.loss) | .lr)' b8.jsonl)"
	assert_equal "$(jq -s 'map(select(.loss)) | length' b4.jsonl)" 5
	paste <(jq -r 'select(.loss) | "\(.loss) \(.grad_norm)"' b8.jsonl) <(jq -r 'select(.loss) | "\(.loss) \(.grad_norm)"' b4.jsonl) |
		awk 'function rel(a, b) { d = (a - b) / b; return d < 0 ? -d : d }
			{ if (rel($3, $1) > 1e-6 || rel($4, $2) > 1e-6) { print "step " NR ": loss " $1 " vs " $3 ", norm " $2 " vs " $4; bad = 1 } }
			END { exit bad }'
	# Adam divides by sqrt(v): for a coordinate whose gradient is near zero,
	# rounding in the last bits moves the step, so the adapters agree to
	# 1e-4, not to the 1e-7 of the gradients (a summed gradient is caught
	# by the norms above, and by SGD below)
	run -0 lora-diff --tol 1e-4 b8.lora b4.lora
	# and with SGD, whose step is proportional to the gradient
	lora-train -m model -d train.bin --seq 32 --batch 8 --steps 3 --optimizer sgd --lr 0.5 -o s8.lora
	lora-train -m model -d train.bin --seq 32 --batch 4 --accum 2 --steps 3 --optimizer sgd --lr 0.5 -o s4.lora
	run -0 lora-diff --tol 1e-5 s8.lora s4.lora
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

@test "--compute bf16 trains like f32: the loss falls alike (final within 1e-2); recorded in log and provenance; refused without bf16" {
	mkmodel --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --init-scale 0.2 --dtype bf16 mb >/dev/null
	# a learnable sequence: a period of 251 bytes, 40 symbols
	awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%c", 48 + (i * 7) % 251 % 40 }' > pat.txt
	P="-m mb -d pat.txt --data-format bytes --seq 32 --batch 4 --steps 30 --lr 1e-2"
	lora-train $P --compute f32 --log f32.jsonl -o f32.lora
	first=$(jq -s '.[1].loss' f32.jsonl) last=$(jq -s '.[-1].loss' f32.jsonl)
	jq -e -n "$last < 0.85 * $first" >/dev/null || fail "f32: loss $first -> $last did not fall"
	if avx512; then
		lora-train $P --log bf16.jsonl -o bf16.lora
		assert_equal "$(jq -r -s '.[0].compute' bf16.jsonl)" bf16
		assert_equal "$(lora-inspect --json bf16.lora | jq -r .provenance.compute)" bf16
		b=$(jq -s '.[-1].loss' bf16.jsonl)
		jq -e -n "(($b - $last) | fabs) < 1e-2 * $last" >/dev/null || fail "bf16 final loss $b, f32 $last"
		[ "$b" != "$last" ] || fail "bf16 gave the f32 loss to the last digit"
	fi
	run -1 --separate-stderr env DNNL_MAX_CPU_ISA=AVX2 lora-train $P --compute bf16 -o x.lora
	assert_equal "$stderr" "lora-train: bf16 compute needs a CPU with AVX-512 (oneDNN multiplies bf16 from avx512_core up; this one runs avx2): use --compute f32"
	assert_file_not_exists x.lora
	DNNL_MAX_CPU_ISA=AVX2 lora-train $P -o avx2.lora --log avx2.jsonl
	assert_equal "$(jq -r -s '.[0].compute' avx2.jsonl)" f32
}

@test "a plan larger than the memory available is refused before the first step, naming --recompute's size" {
	run -1 --separate-stderr lora-train $TR --batch 64 --seq 262144 -o x.lora
	assert_regex "$stderr" '^lora-train: batch 64 x sequence 262144 needs [0-9.]+ GiB of activations, more than the [0-9.]+ GiB available \(with --recompute: [0-9.]+ GiB\)$'
	assert_file_not_exists x.lora
}

@test "a loss mask and documents: one SGD step is PyTorch's, the gradient of the mean over every label of the step" {
	# tests/ref/masked_ref.py: rows a document each, prompts masked, padding
	# without loss; the two micro-batches hold 6 and 8 labels, so a mean per
	# micro-batch (or over padded positions) gives another adapter
	d=$FIX/masked
	lora-train -m "$d" -d "$d/data.tok" "$d/adapter" --seq 6 --batch 2 --accum 2 --steps 1 --optimizer sgd --lr 1 \
		--max-grad-norm 0 --scheduler constant --no-shuffle --compute f32 --log log.jsonl -o out.lora
	close "$(jq -s '.[] | select(.loss) | .loss' log.jsonl)" "$(jq .loss "$d/expect.json")" 1e-6
	run -0 lora-diff --tol 1e-5 out.lora "$d/after"
	run -1 lora-diff --tol 1e-5 out.lora "$d/adapter"
	# sample_packing from the configuration: rows of whole documents, the
	# first batch's loss the one lora-eval gives for it
	printf 'sample_packing: true\n' >p.yaml
	lora-train -m "$d" -d "$d/data.tok" "$d/adapter" -c p.yaml --seq 6 --batch 2 --steps 1 --lr 0 --no-shuffle \
		--compute f32 --log p.jsonl -o p.lora
	run -0 lora-eval -m "$d" "$d/adapter" -d "$d/data.tok" -b 2 -T 6 --batches 1 --sample-packing --no-shuffle \
		--compute f32 --json
	close "$(jq -s '.[] | select(.loss) | .loss' p.jsonl)" "$(jq .loss <<<"$output")" 1e-6
	run -0 lora-eval -m "$d" "$d/adapter" -d "$d/data.tok" -b 2 -T 6 --batches 1 --no-shuffle --compute f32 --json
	run -1 close "$(jq -s '.[] | select(.loss) | .loss' p.jsonl)" "$(jq .loss <<<"$output")" 1e-3
}

@test "-d text or JSONL with the model's tokenizer: the tokens lora-tokenize gives, the same run as from them" {
	mkmodel --vocab 5400 tm >/dev/null
	cp "$FIX/tokenizers/llama2.json" tm/tokenizer.json
	cp "$FIX/jsonl/llama2.config.json" tm/tokenizer_config.json
	cp "$FIX/jsonl/examples.jsonl" ex.jsonl
	lora-tokenize -m tm ex.jsonl -o ex.tok
	lora-train -m tm -d ex.jsonl --seq 16 --batch 2 --steps 3 --lr 1e-2 --log a.jsonl -o a.lora
	lora-train -m tm -d ex.tok --seq 16 --batch 2 --steps 3 --lr 1e-2 --log b.jsonl -o b.lora
	assert_equal "$(jq -c 'select(.loss) | .loss' a.jsonl)" "$(jq -c 'select(.loss) | .loss' b.jsonl)"
	run -0 lora-diff --tol 0 a.lora b.lora
	# text: one stream of ids, as lora-tokenize writes it
	for i in 1 2 3 4 5 6; do cat "$FIX/jsonl/examples.jsonl"; done >book.txt
	lora-tokenize -m tm book.txt -o book.bin
	run -0 lora-eval -m tm -d book.txt -b 2 -T 16 --json
	a=$output
	run -0 lora-eval -m tm -d book.bin -b 2 -T 16 --json
	assert_equal "$(jq -c '[.loss, .tokens, .data_tokens]' <<<"$a")" "$(jq -c '[.loss, .tokens, .data_tokens]' <<<"$output")"
	# nothing is left behind; a model without a tokenizer, a bad line
	assert_equal "$(find "$TMPDIR" -name 'lora-data.*' | wc -l)" 0
	run -1 --separate-stderr lora-train -m model -d ex.jsonl -o c.lora
	assert_equal "$stderr" "lora-train: model: no tokenizer.json in the model directory (--tokenizer FILE names one)"
	run -1 --separate-stderr lora-eval -m model -d book.txt
	assert_equal "$stderr" "lora-eval: model: no tokenizer.json in the model directory (--tokenizer FILE names one)"
	# --tokenizer names one elsewhere (its tokenizer_config.json beside it)
	cp -r tm bare
	mkdir tk
	mv bare/tokenizer.json bare/tokenizer_config.json tk/
	lora-train -m bare --tokenizer tk/tokenizer.json -d ex.jsonl --seq 16 --batch 2 --steps 3 --lr 1e-2 -o d.lora
	run -0 lora-diff --tol 0 a.lora d.lora
	run -0 lora-eval -m bare --tokenizer tk/tokenizer.json -d book.txt -b 2 -T 16 --json
	assert_equal "$(jq -c '[.loss, .tokens, .data_tokens]' <<<"$a")" "$(jq -c '[.loss, .tokens, .data_tokens]' <<<"$output")"
	run -1 --separate-stderr lora-eval -m bare --tokenizer tk/missing.json -d book.txt
	assert_equal "$stderr" "lora-eval: tk/missing.json: No such file or directory"
	printf '{"text": 1}\n' >bad.jsonl
	run -1 --separate-stderr lora-eval -m tm -d bad.jsonl
	assert_equal "$stderr" "lora-eval: bad.jsonl: line 1 (byte 0): 'text' is not a string"
	assert_file_not_exists c.lora
}
