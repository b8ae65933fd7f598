/* config: a Llama-family model's config.json (Llama 2/3, Mistral, Qwen2),
 * parsed and validated as Hugging Face's transformers reads it for these
 * architectures. Every accepted config describes a model the transformer
 * (model/llama.h) can be built for. */
#ifndef LORA_MODEL_CONFIG_H
#define LORA_MODEL_CONFIG_H

#include <stddef.h>

#include "core/err.h"

typedef enum { LORA_ROPE_DEFAULT, LORA_ROPE_LINEAR, LORA_ROPE_LLAMA3 } lora_config_rope;

typedef struct {
	char model_type[16];     /* llama, mistral, qwen2 */
	size_t dim;              /* hidden_size */
	size_t hidden_dim;       /* intermediate_size */
	size_t n_layers;         /* num_hidden_layers */
	size_t n_heads;          /* num_attention_heads */
	size_t n_kv_heads;       /* num_key_value_heads (default n_heads) */
	size_t head_dim;         /* head_dim (default dim / n_heads) */
	size_t vocab_size;
	size_t max_pos;          /* max_position_embeddings (0 if absent) */
	double rms_eps;          /* rms_norm_eps (default 1e-6) */
	double rope_theta;       /* default 10000 */
	lora_config_rope rope_type;
	double rope_factor;      /* linear and llama3 */
	double rope_low_freq, rope_high_freq, rope_orig_max; /* llama3 */
	size_t sliding_window;   /* 0: full causal attention */
	size_t window_from;      /* the window applies to blocks >= this */
	int tied;                /* tie_word_embeddings */
} lora_config;

/* Parse config.json text (len bytes); path names it in messages. A missing
 * required key (model_type, hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, vocab_size), a value of the wrong
 * type or range, an unsupported model_type, hidden_act or rope_scaling type,
 * or attention and MLP widths too large to index with an int is an error
 * naming the key; other keys take Hugging Face's defaults. */
int lora_config_parse(lora_config *c, const char *text, size_t len, const char *path, lora_err *e);
/* Same, reading the file. */
int lora_config_read(lora_config *c, const char *path, lora_err *e);

/* The config.json of a base model as an adapter records it (base_name):
 * NAME/config.json, NAME itself when it is a config.json, the config.json
 * beside NAME when it is another file (weights, an index), or for a hub id
 * "org/name" the snapshot refs/main names in Hugging Face's cache
 * ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub).
 * *path is the caller's to free; none found is LORA_EINVAL. */
int lora_config_locate(char **path, const char *name, lora_err *e);

/* The sliding window of block l (0: full causal attention). */
size_t lora_config_window(const lora_config *c, size_t l);

#endif
