#!/usr/bin/env bats
# lora-merge -o MODEL.gguf: merged GGUF models, checked against what
# llama.cpp said of them. tests/ref/ggufmerge_check.sh merged the cases of
# tests/ref/ggufmerge_cases.bash to GGUF, ran llama.cpp (node-llama-cpp
# 3.21.1) on them and kept in tests/fixtures/gguf/: its next-token
# log-probabilities (merge-NAME.llamacpp, the first 256 of the vocabulary at
# every position of tokens.u16), the key-value pairs of each file it read
# (merge-NAME.kv) and its ids of a few strings per tokenizer (tok-*.ids).
# Here, offline: our GGUF has those keys, holds the merged checkpoint's
# tensors (tests/tools/ggufcheck: names, ne, q/k rows, values, q8_0 blocks
# recomputed independently), and that checkpoint's log-probabilities are
# llama.cpp's.

setup() {
	load test_helper/common-setup
	_common_setup
	G="$FIX/gguf"
	source "$ROOT/tests/ref/gguf_cases.bash"
	source "$ROOT/tests/ref/ggufmerge_cases.bash"
}

# maxdiff A B: the largest absolute difference between two files of numbers
# laid out alike.
maxdiff() {
	paste -d ' ' "$1" "$2" | awk '{ n = NF / 2; for (i = 1; i <= n; i++) { d = $i - $(i + n); if (d < 0) d = -d; if (d > m) m = d } }
		END { printf "%.3g\n", m }'
}

below() {
	awk -v x="$1" -v l="$2" 'BEGIN { exit !(x < l) }'
}

# heads MODEL: the head counts ggufcheck permutes q/k rows with (llama only).
heads() {
	case $1 in llama*) echo 4 2 ;; esac
}

@test "merged GGUF models: llama.cpp's keys, the merged tensors, and llama.cpp's log-probabilities within 1e-4 (f32)" {
	gguf_models
	gguf_adapters
	ggufmerge_models
	for c in "${GGUFMERGE_CASES[@]}"; do
		set -- $c
		lora-merge -q -m $2 $3 --dtype $4 -o $1.gguf
		lora-merge -q -m $2 $3 -o $1.st
		run -0 ggufcheck kv $1.gguf
		diff -u "$G/merge-$1.kv" <(echo "$output") || fail "$1: keys differ from the file llama.cpp read"
		run -0 ggufcheck cmp $1.gguf $1.st $(heads $2)
		# qwen2: q/k/v biases, no output.weight (tied); llama3: rope_freqs.weight
		n=$(case $2 in qwen2-qwen) echo 26 ;; llama-llama3) echo 22 ;; *) echo 21 ;; esac)
		assert_line "ok $n tensors (F32$([ $4 = q8_0 ] && echo ' Q8_0'))"
		ARGMAX_LOGPROBS=1 argmax-full $1.st "$G/tokens.u16" 1 | cut -d' ' -f1-256 >$1.ours
		d=$(maxdiff $1.ours "$G/merge-$1.llamacpp")
		# q8_0: llama.cpp multiplies q8_0 weights by activations it
		# rounds to q8_0 too; the checkpoint is the unrounded one
		below "$d" $([ $4 = q8_0 ] && echo 0.2 || echo 1e-4) || fail "$1: log-probabilities differ from llama.cpp's by $d"
	done
	# the adapters matter: merged and base models differ
	ARGMAX_LOGPROBS=1 argmax-full llama-spm "$G/tokens.u16" 1 | cut -d' ' -f1-256 >base.ours
	d=$(maxdiff base.ours "$G/merge-spm-plain.llamacpp")
	below 0.05 "$d"
}

@test "Llama 3 RoPE scaling: rope_freqs.weight holds convert_hf_to_gguf's factors" {
	gguf_models
	gguf_adapters
	ggufmerge_models
	lora-merge -q -m llama-llama3 plain -o m.gguf
	lora-merge -q -m llama-llama3 plain -o m.st
	run -0 ggufcheck cmp m.gguf m.st 4 2
	assert_line --index 1 'ok 22 tensors (F32)'
	got=${lines[0]#rope_freqs.weight: }
	# rope_theta 500000, head_dim 8, factor 8, low 1, high 4, original 256
	want=$(awk 'BEGIN { pi = atan2(0, -1); for (i = 0; i < 4; i++) { f = 1 / 500000 ^ (2 * i / 8); w = 2 * pi / f
		if (w < 256 / 4) v = 1; else if (w > 256 / 1) v = 8; else { s = (256 / w - 1) / (4 - 1); v = 1 / ((1 - s) / 8 + s) }
		printf "%s%.9g", i ? " " : "", v } }')
	paste <(tr ' ' '\n' <<<"$got") <(tr ' ' '\n' <<<"$want") | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * $2) exit 1 }' ||
		fail "rope_freqs $got, want $want"
	[[ $want == "1 3.568"*" 8 8" ]]
	# and the keys: no linear scaling keys
	run -0 ggufcheck kv m.gguf
	refute_output --partial 'rope.scaling'
}

@test "the tokenizer llama.cpp reads from our GGUF gives the library's ids" {
	printf '%s' "$GGUFMERGE_STRINGS" >strings.json
	for m in spm llama3 qwen; do
		case $m in
		spm) tok="$G/spm/tokenizer.json" ;;
		*) tok="$FIX/tokenizers/$m.json" ;;
		esac
		i=0
		while IFS= read -r want; do
			s=$(jq -j ".[$i]" strings.json)
			got=$(printf '%s' "$s" | lora-tokenize -q --tokenizer "$tok" --no-special | od -An -tu2 -v | xargs)
			assert_equal "$got" "$want"
			i=$((i + 1))
		done <"$G/tok-$m.ids"
		assert_equal $i 7
	done
}

@test "tokenizer keys: model, pre-tokenizer, special ids, add_bos, chat template, as convert_hf_to_gguf writes them" {
	for c in spm-plain llama3-pattern qwen-plain; do
		grep -q '^tokenizer.ggml.tokens arr\[str\] ' "$G/merge-$c.kv"
		grep -q '^tokenizer.ggml.token_type arr\[i32\] ' "$G/merge-$c.kv"
		grep -q '^tokenizer.chat_template str ' "$G/merge-$c.kv"
	done
	run -0 grep -E '^tokenizer\.ggml\.(model|pre|bos_token_id|eos_token_id|unknown_token_id|add_bos_token|add_eos_token) ' "$G/merge-spm-plain.kv"
	assert_output "tokenizer.ggml.model str llama
tokenizer.ggml.pre str default
tokenizer.ggml.bos_token_id u32 1
tokenizer.ggml.eos_token_id u32 2
tokenizer.ggml.unknown_token_id u32 0
tokenizer.ggml.add_bos_token bool true
tokenizer.ggml.add_eos_token bool false"
	grep -q '^tokenizer.ggml.scores arr\[f32\] 5308 ' "$G/merge-spm-plain.kv"
	run -1 grep -q '^tokenizer.ggml.merges' "$G/merge-spm-plain.kv"
	run -0 grep -E '^tokenizer\.ggml\.(model|pre|bos_token_id|eos_token_id|padding_token_id|add_bos_token) ' "$G/merge-llama3-pattern.kv"
	assert_output "tokenizer.ggml.model str gpt2
tokenizer.ggml.pre str llama-bpe
tokenizer.ggml.bos_token_id u32 2757
tokenizer.ggml.eos_token_id u32 2765
tokenizer.ggml.add_bos_token bool true"
	run -0 grep -E '^tokenizer\.ggml\.(model|pre|merges|eos_token_id|padding_token_id|bos_token_id) ' "$G/merge-qwen-plain.kv"
	assert_line 'tokenizer.ggml.model str gpt2'
	assert_line 'tokenizer.ggml.pre str qwen2'
	assert_line 'tokenizer.ggml.eos_token_id u32 2758'
	assert_line 'tokenizer.ggml.padding_token_id u32 2756'
	assert_line --regexp '^tokenizer.ggml.merges arr\[str\] 2500 '
	refute_line --partial bos_token_id
	# the hyperparameters of config.json
	run -0 grep -E '^(general|qwen2)\.' "$G/merge-qwen-plain.kv"
	assert_output "general.architecture str qwen2
general.type str model
general.name str tiny-llama
general.file_type u32 0
qwen2.vocab_size u32 2782
qwen2.context_length u32 2048
qwen2.embedding_length u32 32
qwen2.block_count u32 2
qwen2.feed_forward_length u32 64
qwen2.attention.head_count u32 4
qwen2.attention.head_count_kv u32 2
qwen2.rope.freq_base f32 10000
qwen2.rope.dimension_count u32 8
qwen2.attention.layer_norm_rms_epsilon f32 9.99999975e-06"
	grep -q '^general.file_type u32 7$' "$G/merge-spm-plain-q8.kv"
}

@test "--dtype: f16 and bf16 matrices, f32 vectors and norms; q8_0 falls back to f16 where rows are not whole blocks" {
	mkmodel --hidden 48 --inter 64 --layers 1 --heads 4 --kv-heads 2 --vocab 5308 m >/dev/null
	cp "$G"/spm/* m/
	mkpeft --alpha 8 --seed 3 a model.layers.0.self_attn.q_proj=48x48x4 model.layers.0.mlp.down_proj=48x64x4 >/dev/null
	lora-merge -q -m m a -o m.st
	for t in f16 bf16; do
		lora-merge -q -m m a --dtype $t -o $t.gguf
		run -0 ggufcheck cmp $t.gguf m.st 4 2
		assert_output "ok 12 tensors (F32 ${t^^})"
	done
	lora-merge -q -m m a --dtype q8_0 -o q.gguf
	run -0 ggufcheck cmp q.gguf m.st 4 2
	assert_output 'ok 12 tensors (F32 F16 Q8_0)'
	run -0 lora-inspect --per-layer q.gguf
	assert_line --regexp '^blk.0.ffn_down.weight +Q8_0 +48x64$'
	assert_line --regexp '^blk.0.attn_q.weight +F16 +48x48$'
	assert_line --regexp '^blk.0.attn_norm.weight +F32 +48$'
	assert_line 'F16          8 tensors, 522624 parameters, 1045248 bytes'
	assert_line 'Q8_0         1 tensors, 3072 parameters, 3264 bytes'
	# keep: each matrix its own dtype, the file type that of the embeddings
	mkmodel --hidden 32 --inter 64 --layers 1 --heads 4 --dtype bf16 --vocab 5308 b >/dev/null
	cp "$G"/spm/* b/
	mkpeft --alpha 8 --seed 4 a2 model.layers.0.mlp.up_proj=64x32x2 >/dev/null
	lora-merge -q -m b a2 -o b.gguf
	run -0 ggufcheck kv b.gguf
	assert_line 'general.file_type u32 32'
	run -0 lora-inspect --json b.gguf
	assert_output --partial '"BF16":'
}

@test "lora-inspect reads a GGUF model: architecture, hyperparameters, tokenizer, tensors by type" {
	ggufmerge_models
	gguf_models
	gguf_adapters
	lora-merge -q -m llama-llama3 plain --dtype q8_0 -o m.gguf
	run -0 lora-inspect m.gguf
	assert_line 'format       gguf model, version 3'
	assert_line 'architecture llama'
	assert_line 'hparam       attention.head_count_kv = 2'
	assert_line 'tokenizer    gpt2 (pre llama-bpe), 2766 tokens'
	assert_line 'tensors      22'
	assert_line 'F32          6 tensors, 164 parameters, 656 bytes'
	assert_line 'Q8_0         16 tensors, 195456 parameters, 207672 bytes'
	run -0 lora-inspect --json m.gguf
	[ "$(echo "$output" | jq -r '.kind, .hyperparameters.block_count, .tokenizer.tokens')" = "gguf
2
2766" ]
}

@test "a sharded checkpoint merges into one GGUF; -j does not change a byte; the output is atomic" {
	gguf_models
	gguf_adapters
	mkmodel --hidden 32 --inter 64 --layers 2 --heads 4 --kv-heads 2 --vocab 5308 --init-scale 0.2 --shard-bytes 400000 sh >/dev/null
	cp "$G"/spm/* sh/
	ls sh/model-00002-of-*.safetensors
	lora-merge -q -j 1 -m sh plain -o a.gguf
	lora-merge -q -j 3 -m sh plain -o b.gguf
	cmp a.gguf b.gguf
	lora-merge -q -m sh plain -o sh.st
	run -0 ggufcheck cmp a.gguf sh.st 4 2
	assert_output 'ok 21 tensors (F32)'
	run -1 --separate-stderr lora-merge -q -m sh plain -o a.gguf
	assert_equal "$stderr" "lora-merge: a.gguf: already exists (use -f to overwrite)"
	lora-merge -q -f -m sh plain:0.5 -o a.gguf
	run -1 cmp -s a.gguf b.gguf
}

@test "bad inputs: an architecture llama.cpp has no converter for here, no tokenizer, a bad --dtype; nothing written" {
	gguf_models
	gguf_adapters
	ggufmerge_models
	cp -r llama-spm gem
	sed -i 's/"model_type": "llama"/"model_type": "gemma"/' gem/config.json
	run -1 --separate-stderr lora-merge -q -m gem plain -o x.gguf
	assert_equal "$stderr" "lora-merge: gem/config.json: model_type 'gemma' is not supported (llama, mistral, qwen2)"
	rm llama-spm/tokenizer.json
	run -1 --separate-stderr lora-merge -q -m llama-spm plain -o x.gguf
	assert_equal "$stderr" "lora-merge: llama-spm: no tokenizer.json: a GGUF model carries its tokenizer"
	run -2 --separate-stderr lora-merge -q -m llama-llama3 plain --dtype q4_0 -o x.gguf
	assert_regex "$stderr" "^lora-merge: --dtype: 'q4_0' is not keep, f32, f16, bf16 or q8_0"
	run -2 --separate-stderr lora-merge -q -m llama-llama3 plain --dtype q8_0 -o x.safetensors
	assert_regex "$stderr" '^lora-merge: --dtype q8_0 is for a GGUF model \(-o OUT.gguf\)'
	# a pre-tokenizer llama.cpp does not know
	sed -i 's/\\\\p{N}{1,3}/\\\\p{N}{1,2}/' llama-llama3/tokenizer.json
	run -1 --separate-stderr lora-merge -q -m llama-llama3 plain -o x.gguf
	assert_equal "$stderr" "lora-merge: llama-llama3/tokenizer.json: pre_tokenizer: not one llama.cpp knows (Llama 3's, Qwen2's, GPT-2's or SmolLM's)"
	# ids past the model's vocabulary
	mkmodel --hidden 32 --inter 64 --layers 2 --heads 4 --kv-heads 2 --vocab 2000 small >/dev/null
	cp "$G"/qwen/tokenizer_config.json small/
	cp "$FIX/tokenizers/qwen.json" small/tokenizer.json
	run -1 --separate-stderr lora-merge -q -m small plain -o x.gguf
	assert_equal "$stderr" "lora-merge: small/tokenizer.json: token id 2781 is past the model's vocab_size 2000"
	assert_not_exists x.gguf
	run -0 ls -A
	refute_output --partial '.tmp'
}
