/* weights: the frozen weights of a Llama-family checkpoint, found by their
 * Hugging Face names and checked against config.json. The matrices are
 * used in place, in the checkpoint's dtype and layout: the model's memory
 * is the checkpoint's pages, not a copy.
 * Also the names and shapes of the linear modules of a block, which the
 * checkpoint's tensors and the adapters' layers are named after. */
#ifndef LORA_MODEL_WEIGHTS_H
#define LORA_MODEL_WEIGHTS_H

#include <stddef.h>

#include "core/dtype.h"
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

/* A matrix read where it lies in the checkpoint's mapping, in its stored
 * dtype (f32, f16 or bf16) and Hugging Face's (out, in) layout. */
typedef struct {
	const void *p;
	lora_dtype dt;
} lora_weights_mat;

/* One block. Norms and biases are small: they are widened to f32. */
typedef struct {
	lora_weights_mat w[LORA_NMOD]; /* (out, in) of each module */
	float *b[LORA_NMOD];           /* (out) bias, or NULL */
	float *ln1, *ln2;              /* (C) input_layernorm, post_attention_layernorm */
} lora_weights_block;

typedef struct {
	size_t QD, KVD, QKV;         /* n_heads*head_dim, n_kv_heads*head_dim, QD + 2 KVD */
	lora_weights_mat embed, head; /* (V, C): head is embed when tied */
	float *norm;                  /* (C) */
	lora_weights_block *blocks;   /* n_layers */
	float *small;                 /* the f32 norms and biases */
	size_t n;                     /* parameters */
	size_t bytes;                 /* checkpoint bytes the weights take */
	lora_dtype dtype;             /* the matrices' dtype, LORA_DTYPE_COUNT when they mix */
} lora_weights;

/* Find every tensor c implies in ck: each must be present with that shape
 * and a float dtype (errors name the tensor and both shapes); biases are
 * used when present. The matrices stay in ck's mapping: ck must stay open
 * while w is used. Free with lora_weights_free, also after an error. */
int lora_weights_load(lora_weights *w, const lora_ckpt *ck, const lora_config *c, lora_err *e);
void lora_weights_free(lora_weights *w);

#endif
