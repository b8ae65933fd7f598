/* ggufmeta: the key-value header of a GGUF model, as llama.cpp's
 * convert_hf_to_gguf.py writes it for Llama, Mistral and Qwen2 checkpoints:
 * the hyperparameters llama.cpp reads for the architecture, and the
 * tokenizer (tokenizer.ggml.*) from the model directory's tokenizer.json,
 * tokenizer_config.json and config.json.
 *
 * Hyperparameters: general.architecture ("llama" for llama and mistral,
 * "qwen2"), general.type, general.name, general.file_type, and under the
 * architecture: vocab_size, context_length (max_position_embeddings, when
 * given), embedding_length, block_count, feed_forward_length,
 * attention.head_count, attention.head_count_kv, rope.freq_base,
 * rope.dimension_count, attention.layer_norm_rms_epsilon, and for linear
 * RoPE scaling rope.scaling.type and rope.scaling.factor (Llama 3's
 * scaling is a tensor: lora_ggufmeta_rope_freqs).
 *
 * Tokenizer, following convert_hf_to_gguf: a byte-level BPE (ByteLevel
 * decoder) is model "gpt2" (_set_vocab_gpt2): tokens by id up to the
 * config's vocab_size ("[PADi]", type unused, where an id has none),
 * types normal, control (a special added token, or one that looks special:
 * "<|...|>" and the like) or user-defined (other added tokens, U+2581 read
 * as a space), the merges ("a b", a space inside a token written U+0120);
 * the pre-tokenizer name llama.cpp splits text with. convert_hf_to_gguf
 * recognises a pre-tokenizer by the hash of the ids of one test text,
 * which names a known model's vocabulary; this module recognises the
 * pipeline those names stand for: the Split pattern of Llama 3
 * ("llama-bpe") or Qwen2 ("qwen2"), GPT-2's ByteLevel regex ("gpt-2"),
 * Digits then ByteLevel ("smollm"); anything else is an error. A
 * SentencePiece-style BPE (byte_fallback) is model "llama" with pre
 * "default" (_set_vocab_llama_hf): tokens, score -1000 each, types byte
 * (<0xXX>), control (special added tokens) or normal, user-defined for
 * added tokens past the model's vocabulary. Then, as gguf-py's
 * SpecialVocab reads them: bos/eos/unk/sep/pad ids (tokenizer_config's
 * *_token found among the added tokens, else config.json's *_token_id),
 * add_bos_token/add_eos_token (the post-processor's template, overridden
 * by tokenizer_config's add_*_token), chat_template (tokenizer_config's,
 * else chat_template.jinja). */
#ifndef LORA_MODEL_GGUFMETA_H
#define LORA_MODEL_GGUFMETA_H

#include <stddef.h>

#include "core/err.h"
#include "io/ckpt.h"
#include "io/gguf.h"
#include "model/config.h"

typedef struct lora_ggufmeta lora_ggufmeta;

/* Build the header of m (config c, read from m's config.json) stored with
 * ggml type type for its matrices (LORA_GGML_F32, F16, BF16 or Q8_0; -1:
 * each tensor keeps its dtype, the file type then that of the embeddings).
 * The tokenizer files are read from m->dir: no tokenizer.json there is an
 * error, as is a tokenizer llama.cpp's tokenizers cannot run, or ids past
 * the config's vocab_size. Caller frees *out. */
int lora_ggufmeta_build(lora_ggufmeta **out, const lora_config *c, const lora_ckpt *m, int type, lora_err *e);
void lora_ggufmeta_free(lora_ggufmeta *g);
/* The pairs, valid while g lives. */
const lora_gguf_kvspec *lora_ggufmeta_kv(const lora_ggufmeta *g, size_t *n);
/* Llama 3 RoPE scaling (rope_scaling type llama3): the n factors of
 * the tensor rope_freqs.weight (f32, ne {n}) convert_hf_to_gguf adds;
 * else NULL. Valid while g lives. */
const float *lora_ggufmeta_rope_freqs(const lora_ggufmeta *g, size_t *n);
/* "llama" or "qwen2". */
const char *lora_ggufmeta_arch(const lora_ggufmeta *g);

#endif
