# The models and adapters of the GGUF agreement check, shared by
# tests/ref/gguf_check.sh (which measures them against llama.cpp and
# writes tests/fixtures/gguf/) and tests/gguf.bats (which checks our side
# against those golden values, offline). Everything is generated
# deterministically by the tools of this tree; only the token file and
# what llama.cpp said are committed. Needs mkmodel, mkpeft, lora-convert on
# PATH; works in the current directory.

# A Llama (grouped-query attention, so q and k are permuted with different
# head counts) and a Qwen2 (q/k/v biases, tied head, no permutation), with
# the 256-token vocabulary the reference converter gives a byte tokenizer.
gguf_models() {
	local shape="--hidden 32 --inter 64 --layers 2 --heads 4 --kv-heads 2 --vocab 256 --init-scale 0.2"
	mkmodel $shape llama >/dev/null
	mkmodel $shape --qkv-bias --tied qwen2 >/dev/null
}

# gguf_specs RANK [QRANK]: the seven modules of both blocks as mkpeft specs.
gguf_specs() {
	local r=$1 qr=${2:-$1} l
	for l in 0 1; do
		echo "model.layers.$l.self_attn.q_proj=32x32x$qr model.layers.$l.self_attn.k_proj=16x32x$r" \
			"model.layers.$l.self_attn.v_proj=16x32x$r model.layers.$l.self_attn.o_proj=32x32x$r" \
			"model.layers.$l.mlp.gate_proj=64x32x$r model.layers.$l.mlp.up_proj=64x32x$r" \
			"model.layers.$l.mlp.down_proj=32x64x$r"
	done
}

# PEFT adapters: one alpha; rsLoRA; per-module rank and alpha (q at rank 2,
# k and down_proj with their own alpha: llama.cpp's one alpha cannot say it,
# so their lora_B carry the difference).
gguf_adapters() {
	mkpeft --alpha 8 --seed 11 plain $(gguf_specs 4) >/dev/null
	mkpeft --alpha 8 --rslora --seed 12 rslora $(gguf_specs 4) >/dev/null
	mkpeft --r 4 --alpha 8 --rank-pattern q_proj=2 --alpha-pattern k_proj=2 --alpha-pattern down_proj=12 \
		--seed 13 pattern $(gguf_specs 4 2) >/dev/null
	mkpeft --alpha 8 --seed 14 qplain $(gguf_specs 4) >/dev/null
	lora-convert -q -m llama plain -o plain.gguf
	lora-convert -q -m llama rslora -o rslora.gguf
	lora-convert -q -m llama pattern -o pattern.gguf
	lora-convert -q -m qwen2 qplain -o qplain.gguf
}

# The cases: NAME MODEL [ADAPTER.gguf[:SCALE]]
GGUF_CASES=(
	"llama-base llama"
	"llama-plain llama plain.gguf"
	"llama-plain-half llama plain.gguf:0.5"
	"llama-rslora llama rslora.gguf"
	"llama-pattern llama pattern.gguf"
	"qwen2-base qwen2"
	"qwen2-plain qwen2 qplain.gguf"
)
