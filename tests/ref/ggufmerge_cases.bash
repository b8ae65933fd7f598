# The merged GGUF models of the agreement check, shared by
# tests/ref/ggufmerge_check.sh (which measures them against llama.cpp and
# writes tests/fixtures/gguf/merge-*) and tests/gguf.bats (offline). Needs
# gguf_cases.bash sourced, mkmodel, mkpeft and lora-merge on PATH; works in
# the current directory. FIX is tests/fixtures.

# Models beside their tokenizers: a Llama with the SentencePiece-style
# tokenizer (spm/), a Llama with Llama 3's byte-level one and RoPE scaling,
# a Qwen2 with Qwen's. The vocabulary is the tokenizer's.
ggufmerge_models() {
	local shape="--hidden 32 --inter 64 --layers 2 --heads 4 --kv-heads 2 --init-scale 0.2"
	mkmodel $shape --vocab 5308 llama-spm >/dev/null
	cp "$FIX"/gguf/spm/tokenizer.json "$FIX"/gguf/spm/tokenizer_config.json llama-spm/
	mkmodel $shape --vocab 2766 llama-llama3 >/dev/null
	cp "$FIX"/tokenizers/llama3.json llama-llama3/tokenizer.json
	cp "$FIX"/gguf/llama3/tokenizer_config.json llama-llama3/
	# with Llama 3's RoPE scaling (rope_freqs.weight), its wavelengths cut
	# where a few positions show it
	jq '.rope_theta = 500000 | .rope_scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
		"high_freq_factor": 4.0, "original_max_position_embeddings": 256}' llama-llama3/config.json >c.json
	mv c.json llama-llama3/config.json
	mkmodel $shape --vocab 2782 --qkv-bias --tied qwen2-qwen >/dev/null
	cp "$FIX"/tokenizers/qwen.json qwen2-qwen/tokenizer.json
	cp "$FIX"/gguf/qwen/tokenizer_config.json qwen2-qwen/
}

# The cases: NAME MODEL ADAPTER DTYPE
GGUFMERGE_CASES=(
	"spm-plain llama-spm plain f32"
	"spm-rslora llama-spm rslora f32"
	"llama3-pattern llama-llama3 pattern f32"
	"qwen-plain qwen2-qwen qplain f32"
	"spm-plain-q8 llama-spm plain q8_0"
	"llama3-rslora-q8 llama-llama3 rslora q8_0"
)

# Strings whose ids llama.cpp and the library must agree on.
GGUFMERGE_STRINGS='["Hello world", " the quick brown fox", "naïve café 123", "line\nbreak  two", "Ünïcödé ✓ 日本語 🙂", "tabs\tand   spaces", "3.14159 is pi, 2718 is e"]'
