/* weights: the frozen weights of a Llama-family checkpoint, found by their
 * Hugging Face names, checked against config.json and converted to one f32
 * arena ("malloc and point"), in the layout the transformer computes with.
 * Also the names and shapes of the linear modules of a block, which the
 * checkpoint's tensors and the adapters' layers are named after. */
#ifndef LORA_MODEL_WEIGHTS_H
#define LORA_MODEL_WEIGHTS_H

#include <stddef.h>

#include "core/err.h"
#include "io/ckpt.h"
#include "model/config.h"

/* The linear modules of a block that LoRA can adapt. */
enum { LORA_MOD_Q, LORA_MOD_K, LORA_MOD_V, LORA_MOD_O, LORA_MOD_GATE, LORA_MOD_UP, LORA_MOD_DOWN, LORA_NMOD };

/* "q_proj", "k_proj", ..., "down_proj". */
const char *lora_weights_module_name(int mod);
/* out x in of module mod (its weight is out x in, y = W x). */
void lora_weights_module_shape(const lora_config *c, int mod, size_t *out, size_t *in);
/* "model.layers.N.self_attn.q_proj" (or with the "base_model.model."
 * prefix of PEFT) -> block N and its module; -1 if name is not one. */
int lora_weights_module_parse(const char *name, size_t *block, int *mod);

/* One block. q, k and v are packed as one (QKV, C) matrix, gate and up as
 * one (2F, C), so that each pair of products is one. A bias pointer is NULL
 * when the checkpoint has none of the biases it packs (a missing one of
 * several is zero). */
typedef struct {
	float *wqkv, *bqkv; /* (QKV, C), (QKV): q rows, then k, then v */
	float *wo, *bo;     /* (C, QD), (C) */
	float *wgu, *bgu;   /* (2F, C), (2F): gate rows, then up */
	float *wd, *bd;     /* (C, F), (C) */
	float *ln1, *ln2;   /* (C) input_layernorm, post_attention_layernorm */
} lora_weights_block;

typedef struct {
	size_t QD, KVD, QKV;        /* n_heads*head_dim, n_kv_heads*head_dim, QD + 2 KVD */
	float *arena;               /* every weight below */
	size_t n;                   /* floats in the arena */
	float *embed, *norm, *head; /* (V, C), (C), (V, C): head is embed when tied */
	lora_weights_block *blocks; /* n_layers */
} lora_weights;

/* Load every tensor c implies from ck: each must be present with that
 * shape and a float dtype (errors name the tensor and both shapes);
 * biases are used when present. The weights are copies (the checkpoint's
 * pages are released as each is converted), so ck may be closed
 * afterwards. Free with lora_weights_free, also after an error. */
int lora_weights_load(lora_weights *w, const lora_ckpt *ck, const lora_config *c, lora_err *e);
void lora_weights_free(lora_weights *w);

#endif
