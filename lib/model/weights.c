/* weights: a checkpoint's tensors checked against config.json and
 * converted into one f32 arena. */
#include "model/weights.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"

/* Tensors start on 64-byte boundaries in the arena. */
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

/* Find and check the tensors of block l; add the floats they take in the
 * arena to *total. */
static int find_block(block_src *s, const lora_ckpt *ck, const lora_config *c, const lora_weights *w, size_t l,
                      double *total, lora_err *e)
{
	size_t C = c->dim, F = c->hidden_dim, out, in;
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
	}
	snprintf(name, sizeof name, "model.layers.%zu.input_layernorm.weight", l);
	if (!(s->ln1 = want(ck, name, C, 0, 0, &rc, e)))
		return rc;
	snprintf(name, sizeof name, "model.layers.%zu.post_attention_layernorm.weight", l);
	if (!(s->ln2 = want(ck, name, C, 0, 0, &rc, e)))
		return rc;
	*total += (double)up16(w->QKV * C) + (double)up16(C * w->QD) + (double)up16(2 * F * C) + (double)up16(C * F) +
	          2.0 * (double)up16(C);
	if (s->b[0] || s->b[1] || s->b[2])
		*total += (double)up16(w->QKV);
	if (s->b[3])
		*total += (double)up16(C);
	if (s->b[4] || s->b[5])
		*total += (double)up16(2 * F);
	if (s->b[6])
		*total += (double)up16(C);
	return 0;
}

/* Convert n values of t to f32 at dst, then let the kernel drop t's pages:
 * the resident size stays the f32 weights, not weights plus checkpoint. */
static void convert(float *dst, const lora_st_tensor *t, size_t n)
{
	lora_dtype_to_f32(dst, t->data, t->dtype, n);
	lora_st_release(t);
}

/* Convert the weights of modules [k0, k0+n), which share their input
 * width, into consecutive rows at p (*dst), then their biases (zero for a
 * missing one; *bias NULL if all are). Returns the next free float. */
static float *convert_packed(float *p, float **dst, float **bias, const block_src *s, const lora_config *c, int k0,
                             int n)
{
	size_t off = 0, out, in;
	*dst = p;
	for (int k = k0; k < k0 + n; k++) {
		lora_weights_module_shape(c, k, &out, &in);
		convert(p + off * in, s->w[k], out * in);
		off += out;
	}
	p += up16(off * in);
	*bias = NULL;
	int any = 0;
	for (int k = k0; k < k0 + n; k++)
		any |= s->b[k] != NULL;
	if (!any)
		return p;
	*bias = p;
	off = 0;
	for (int k = k0; k < k0 + n; k++) {
		lora_weights_module_shape(c, k, &out, &in);
		if (s->b[k])
			convert(p + off, s->b[k], out);
		else
			memset(p + off, 0, out * sizeof(float));
		off += out;
	}
	return p + up16(off);
}

int lora_weights_load(lora_weights *w, const lora_ckpt *ck, const lora_config *c, lora_err *e)
{
	size_t C = c->dim, V = c->vocab_size, L = c->n_layers;
	int rc;
	memset(w, 0, sizeof *w);
	w->QD = c->n_heads * c->head_dim;
	w->KVD = c->n_kv_heads * c->head_dim;
	w->QKV = w->QD + 2 * w->KVD;
	block_src *src = calloc(L ? L : 1, sizeof *src);
	w->blocks = calloc(L ? L : 1, sizeof *w->blocks);
	if (!src || !w->blocks) {
		free(src);
		return lora_err_nomem(e);
	}
	/* First pass: check every tensor and size the arena. */
	const lora_st_tensor *temb = want(ck, "model.embed_tokens.weight", V, C, 0, &rc, e), *tnorm, *thead = NULL;
	if (rc || !(tnorm = want(ck, "model.norm.weight", C, 0, 0, &rc, e)))
		goto out;
	if (!c->tied && !(thead = want(ck, "lm_head.weight", V, C, 0, &rc, e)))
		goto out;
	double total = 2.0 * (double)up16(V * C) + (double)up16(C);
	for (size_t l = 0; l < L; l++)
		if ((rc = find_block(&src[l], ck, c, w, l, &total, e)))
			goto out;
	if (total * 4 > (double)SIZE_MAX / 2) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: model too large", ck->path);
		goto out;
	}
	w->n = (size_t)total;
	w->arena = aligned_alloc(64, up16(w->n) * sizeof(float));
	if (!w->arena) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory for %zu weights", ck->path, w->n);
		goto out;
	}
	/* Second pass: convert into the arena ("malloc and point"). */
	float *p = w->arena;
#define TAKE(dst, t, n) (dst = p, convert(p, (t), (n)), p += up16(n))
	TAKE(w->embed, temb, V * C);
	TAKE(w->norm, tnorm, C);
	if (c->tied)
		w->head = w->embed;
	else
		TAKE(w->head, thead, V * C);
	for (size_t l = 0; l < L; l++) {
		const block_src *s = &src[l];
		lora_weights_block *b = &w->blocks[l];
		p = convert_packed(p, &b->wqkv, &b->bqkv, s, c, LORA_MOD_Q, 3);
		p = convert_packed(p, &b->wo, &b->bo, s, c, LORA_MOD_O, 1);
		p = convert_packed(p, &b->wgu, &b->bgu, s, c, LORA_MOD_GATE, 2);
		p = convert_packed(p, &b->wd, &b->bd, s, c, LORA_MOD_DOWN, 1);
		TAKE(b->ln1, s->ln1, C);
		TAKE(b->ln2, s->ln2, C);
	}
#undef TAKE
	rc = 0;
out:
	free(src);
	return rc;
}

void lora_weights_free(lora_weights *w)
{
	free(w->arena);
	free(w->blocks);
	w->arena = NULL;
	w->blocks = NULL;
}
