/* weights: a checkpoint's tensors checked against config.json, the
 * matrices used where they lie. */
#include "model/weights.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"

/* The f32 norms and biases start on 64-byte boundaries. */
#define ALIGN_FLOATS 16

static size_t up16(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

static const char *const module_names[LORA_NMOD] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

const char *lora_weights_module_name(int mod) { return module_names[mod]; }

void lora_weights_module_shape(const lora_config *c, int mod, size_t *out, size_t *in)
{
	size_t C = c->dim, F = c->hidden_dim, QD = c->n_heads * c->head_dim, KVD = c->n_kv_heads * c->head_dim;
	const size_t outs[LORA_NMOD] = {QD, KVD, KVD, C, F, F, C};
	const size_t ins[LORA_NMOD] = {C, C, C, QD, C, C, F};
	*out = outs[mod];
	*in = ins[mod];
}

/* The part of a block a module belongs to, in Hugging Face's names. */
static const char *module_part(int mod) { return mod < LORA_MOD_GATE ? "self_attn" : "mlp"; }

int lora_weights_module_parse(const char *name, size_t *block, int *mod)
{
	if (strncmp(name, "base_model.model.", 17) == 0)
		name += 17;
	if (strncmp(name, "model.layers.", 13) != 0)
		return -1;
	const char *p = name + 13;
	if (*p < '0' || *p > '9')
		return -1;
	size_t n = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (n > 100000000)
			return -1;
		n = n * 10 + (size_t)(*p - '0');
	}
	if (*p++ != '.')
		return -1;
	for (int k = 0; k < LORA_NMOD; k++) {
		size_t pl = strlen(module_part(k));
		if (strncmp(p, module_part(k), pl) == 0 && p[pl] == '.' && strcmp(p + pl + 1, module_names[k]) == 0) {
			*block = n;
			*mod = k;
			return 0;
		}
	}
	return -1;
}

/* Find tensor name with shape rows x cols (cols 0: 1-D). Returns the
 * tensor, NULL with *rc = 0 when absent and optional, or NULL with an
 * error. */
static const lora_st_tensor *want(const lora_ckpt *ck, const char *name, size_t rows, size_t cols,
                                  int optional, int *rc, lora_err *e)
{
	const lora_st_tensor *t = lora_ckpt_find(ck, name);
	*rc = 0;
	if (!t) {
		if (!optional)
			*rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' is missing", ck->path, name);
		return NULL;
	}
	size_t shape[2] = {rows, cols}, nd = cols ? 2 : 1;
	if (t->ndim != nd || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
		char got[96], exp[64];
		lora_shape_format(got, sizeof got, t->shape, t->ndim);
		lora_shape_format(exp, sizeof exp, shape, nd);
		*rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' has shape %s but config.json implies %s", ck->path,
		                   name, got, exp);
		return NULL;
	}
	if (!lora_dtype_is_float(t->dtype)) {
		*rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
		                   ck->path, name, lora_dtype_st_name(t->dtype));
		return NULL;
	}
	return t;
}

/* The checkpoint's tensors of one block. */
typedef struct {
	const lora_st_tensor *w[LORA_NMOD], *b[LORA_NMOD], *ln1, *ln2;
} block_src;

/* Find and check the tensors of block l; add the floats its norms and
 * biases take in f32 to *small. */
static int find_block(block_src *s, const lora_ckpt *ck, const lora_config *c, size_t l, size_t *small, lora_err *e)
{
	size_t C = c->dim, out, in;
	char name[160];
	int rc;
	for (int k = 0; k < LORA_NMOD; k++) {
		lora_weights_module_shape(c, k, &out, &in);
		snprintf(name, sizeof name, "model.layers.%zu.%s.%s.weight", l, module_part(k), module_names[k]);
		if (!(s->w[k] = want(ck, name, out, in, 0, &rc, e)))
			return rc;
		snprintf(name, sizeof name, "model.layers.%zu.%s.%s.bias", l, module_part(k), module_names[k]);
		s->b[k] = want(ck, name, out, 0, 1, &rc, e);
		if (rc)
			return rc;
		*small += s->b[k] ? up16(out) : 0;
	}
	snprintf(name, sizeof name, "model.layers.%zu.input_layernorm.weight", l);
	if (!(s->ln1 = want(ck, name, C, 0, 0, &rc, e)))
		return rc;
	snprintf(name, sizeof name, "model.layers.%zu.post_attention_layernorm.weight", l);
	if (!(s->ln2 = want(ck, name, C, 0, 0, &rc, e)))
		return rc;
	*small += 2 * up16(C);
	return 0;
}

/* A matrix in place; its dtype joins w->dtype and its size the totals. */
static lora_weights_mat mat(lora_weights *w, const lora_st_tensor *t)
{
	if (w->n == 0)
		w->dtype = t->dtype;
	else if (w->dtype != t->dtype)
		w->dtype = LORA_DTYPE_COUNT;
	w->n += t->nelem;
	w->bytes += t->nbytes;
	return (lora_weights_mat){t->data, t->dtype};
}

/* A small tensor widened to f32 at *p. */
static float *widen(lora_weights *w, float **p, const lora_st_tensor *t)
{
	float *dst = *p;
	lora_dtype_to_f32(dst, t->data, t->dtype, t->nelem);
	*p += up16(t->nelem);
	w->n += t->nelem;
	w->bytes += t->nbytes;
	return dst;
}

int lora_weights_load(lora_weights *w, const lora_ckpt *ck, const lora_config *c, lora_err *e)
{
	size_t C = c->dim, V = c->vocab_size, L = c->n_layers, small = up16(C);
	int rc;
	memset(w, 0, sizeof *w);
	w->QD = c->n_heads * c->head_dim;
	w->KVD = c->n_kv_heads * c->head_dim;
	w->QKV = w->QD + 2 * w->KVD;
	/* Every block has tensors of its own, so more blocks than tensors are not
	 * all there: name the first missing one before the count sizes anything. */
	if (L > ck->ntensors) {
		block_src one;
		for (size_t l = 0;; l++)
			if ((rc = find_block(&one, ck, c, l, &small, e)))
				return rc;
	}
	block_src *src = calloc(L ? L : 1, sizeof *src);
	w->blocks = calloc(L ? L : 1, sizeof *w->blocks);
	if (!src || !w->blocks) {
		free(src);
		return lora_err_nomem(e);
	}
	const lora_st_tensor *temb = want(ck, "model.embed_tokens.weight", V, C, 0, &rc, e), *tnorm, *thead = NULL;
	if (rc || !(tnorm = want(ck, "model.norm.weight", C, 0, 0, &rc, e)))
		goto out;
	if (!c->tied && !(thead = want(ck, "lm_head.weight", V, C, 0, &rc, e)))
		goto out;
	for (size_t l = 0; l < L; l++)
		if ((rc = find_block(&src[l], ck, c, l, &small, e)))
			goto out;
	if (!(w->small = aligned_alloc(64, small * sizeof(float)))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	float *p = w->small;
	w->embed = mat(w, temb);
	w->head = c->tied ? w->embed : mat(w, thead);
	w->norm = widen(w, &p, tnorm);
	for (size_t l = 0; l < L; l++) {
		const block_src *s = &src[l];
		lora_weights_block *b = &w->blocks[l];
		for (int k = 0; k < LORA_NMOD; k++) {
			b->w[k] = mat(w, s->w[k]);
			b->b[k] = s->b[k] ? widen(w, &p, s->b[k]) : NULL;
		}
		b->ln1 = widen(w, &p, s->ln1);
		b->ln2 = widen(w, &p, s->ln2);
	}
	rc = 0;
out:
	free(src);
	return rc;
}

void lora_weights_free(lora_weights *w)
{
	free(w->small);
	free(w->blocks);
	w->small = NULL;
	w->blocks = NULL;
}
