#include "io/gguflora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"
#include "io/gguf.h"

/* Hugging Face's module (under model.layers.N.) and llama.cpp's tensor
 * (under blk.N.), and which q/k rotary permutation applies. */
enum { ROPE_NONE, ROPE_Q, ROPE_K };
static const struct {
	const char *hf, *gg, *target;
	int rope;
} modules[] = {
	{"self_attn.q_proj", "attn_q", "q_proj", ROPE_Q},
	{"self_attn.k_proj", "attn_k", "k_proj", ROPE_K},
	{"self_attn.v_proj", "attn_v", "v_proj", ROPE_NONE},
	{"self_attn.o_proj", "attn_output", "o_proj", ROPE_NONE},
	{"mlp.gate_proj", "ffn_gate", "gate_proj", ROPE_NONE},
	{"mlp.up_proj", "ffn_up", "up_proj", ROPE_NONE},
	{"mlp.down_proj", "ffn_down", "down_proj", ROPE_NONE},
};
#define NMOD (sizeof modules / sizeof *modules)
#define MAX_BLOCK 999999

const char *lora_gguflora_arch(const char *model_type)
{
	if (!strcmp(model_type, "llama") || !strcmp(model_type, "mistral"))
		return "llama";
	if (!strcmp(model_type, "qwen2"))
		return "qwen2";
	return NULL;
}

int lora_gguflora_is_gguf(const void *buf, size_t n)
{
	return n >= 4 && memcmp(buf, "GGUF", 4) == 0;
}

/* "<prefix><N>.<rest>" with N a block number without leading zeros: the
 * index of rest in modules (matched by field), or -1. */
static int parse_name(const char *s, const char *prefix, int gg, size_t *block)
{
	size_t pl = strlen(prefix), n = 0, k = pl;
	if (strncmp(s, prefix, pl) != 0 || s[k] < '0' || s[k] > '9' || (s[k] == '0' && s[k + 1] != '.'))
		return -1;
	for (; s[k] >= '0' && s[k] <= '9'; k++)
		if ((n = n * 10 + (size_t)(s[k] - '0')) > MAX_BLOCK)
			return -1;
	if (s[k] != '.')
		return -1;
	for (size_t m = 0; m < NMOD; m++)
		if (strcmp(s + k + 1, gg ? modules[m].gg : modules[m].hf) == 0) {
			*block = n;
			return (int)m;
		}
	return -1;
}

/* What llama.cpp multiplies a pair's B A by. */
static double gguf_scale(float alpha, size_t rank)
{
	return alpha != 0 ? (double)alpha / (double)rank : 1.0;
}

/* The factor folded into lora_B: exactly 1 where adapter.lora.alpha is the
 * layer's scale x rank in f32 (what differs is below the f32 precision
 * llama.cpp computes the scale in), else the true scale over llama.cpp's. */
static double fold(double scale, size_t rank, float alpha)
{
	if (alpha != 0 && (float)(scale * (double)rank) == alpha)
		return 1.0;
	return scale / gguf_scale(alpha, rank);
}

/* Within each of heads, row 2j+k of the GGUF matrix is row k*hd/2+j of
 * Hugging Face's (convert_hf_to_gguf's LlamaModel.permute); to_hf undoes it.
 * m is out x r. */
static void permute_rows(float *dst, const float *src, size_t out, size_t r, size_t heads, int to_hf)
{
	size_t hd = out / heads, half = hd / 2;
	for (size_t h = 0; h < heads; h++)
		for (size_t j = 0; j < half; j++)
			for (size_t k = 0; k < 2; k++) {
				size_t gg = h * hd + 2 * j + k, hf = h * hd + k * half + j;
				memcpy(dst + (to_hf ? hf : gg) * r, src + (to_hf ? gg : hf) * r, r * sizeof *dst);
			}
}

/* The heads a q or k lora_B is permuted with; 0 when none is needed. */
static int rope_heads(int rope, const char *arch, size_t nh, size_t nkv, size_t out, const char *what,
                      size_t *heads, lora_err *e)
{
	*heads = 0;
	if (rope == ROPE_NONE || strcmp(arch, "llama") != 0)
		return 0;
	*heads = rope == ROPE_K && nkv ? nkv : nh;
	if (!*heads)
		return lora_err_set(e, LORA_EINVAL,
		                    "%s: the base model's head counts are needed to permute its rows for llama.cpp's rotary embedding",
		                    what);
	if (out % (2 * *heads))
		return lora_err_set(e, LORA_EINVAL, "%s: %zu rows do not split into %zu heads of even size", what, out,
		                    *heads);
	return 0;
}

int lora_gguflora_model_name(const char *hf, const char *arch, char *out, int *rope)
{
	static const struct {
		const char *hf, *gg;
	} fixed[] = {{"model.embed_tokens.weight", "token_embd.weight"},
	             {"model.norm.weight", "output_norm.weight"},
	             {"lm_head.weight", "output.weight"}},
	  blk[] = {{"input_layernorm.weight", "attn_norm.weight"},
	           {"post_attention_layernorm.weight", "ffn_norm.weight"},
	           {"self_attn.rotary_emb.inv_freq", NULL}}; /* llama.cpp computes it */
	size_t block = 0, k = 13;
	*rope = 0;
	for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
		if (!strcmp(hf, fixed[i].hf)) {
			strcpy(out, fixed[i].gg);
			return 0;
		}
	if (strncmp(hf, "model.layers.", k) != 0 || hf[k] < '0' || hf[k] > '9' || (hf[k] == '0' && hf[k + 1] != '.'))
		return -1;
	for (; hf[k] >= '0' && hf[k] <= '9'; k++)
		if ((block = block * 10 + (size_t)(hf[k] - '0')) > MAX_BLOCK)
			return -1;
	if (hf[k++] != '.')
		return -1;
	const char *rest = hf + k;
	for (size_t i = 0; i < sizeof blk / sizeof *blk; i++)
		if (!strcmp(rest, blk[i].hf)) {
			if (!blk[i].gg)
				return 1;
			snprintf(out, LORA_GGUF_MAX_NAME + 1, "blk.%zu.%s", block, blk[i].gg);
			return 0;
		}
	for (size_t m = 0; m < NMOD; m++) {
		size_t n = strlen(modules[m].hf);
		if (strncmp(rest, modules[m].hf, n) != 0 || (strcmp(rest + n, ".weight") && strcmp(rest + n, ".bias")))
			continue;
		snprintf(out, LORA_GGUF_MAX_NAME + 1, "blk.%zu.%s%s", block, modules[m].gg, rest + n);
		*rope = strcmp(arch, "llama") ? 0 : modules[m].rope == ROPE_Q ? 1 : modules[m].rope == ROPE_K ? 2 : 0;
		return 0;
	}
	return -1;
}

int lora_gguflora_permute(float *m, size_t rows, size_t cols, size_t heads)
{
	if (!heads || rows % (2 * heads))
		return -1;
	size_t hd = rows / heads;
	float *tmp = malloc(hd * cols * sizeof *tmp);
	if (!tmp)
		return -2;
	for (size_t h = 0; h < heads; h++) {
		memcpy(tmp, m + h * hd * cols, hd * cols * sizeof *tmp);
		permute_rows(m + h * hd * cols, tmp, hd, cols, 1, 0);
	}
	free(tmp);
	return 0;
}

/* ---- writer ---- */

/* adapter.lora.alpha: the f32 scale x rank shared by the most layers. */
static float choose_alpha(const lora_adapter *a)
{
	float best = 0;
	size_t best_n = 0;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		float k = (float)(lora_adapter_layer_scale(a, l) * (double)l->rank);
		size_t n = 0;
		for (size_t j = 0; j < a->nlayers; j++)
			n += (float)(lora_adapter_layer_scale(a, &a->layers[j]) * (double)a->layers[j].rank) == k;
		if (k != 0 && n > best_n)
			best = k, best_n = n;
	}
	return best;
}

static int check_layer(const lora_adapter *a, const lora_layer *l, size_t *block, int *mod, lora_err *e)
{
	if (l->magnitude)
		return lora_err_set(e, LORA_EINVAL, "layer '%s': DoRA magnitude vectors have no place in a GGUF LoRA adapter",
		                    l->name);
	if (l->bias)
		return lora_err_set(e, LORA_EINVAL, "layer '%s': a lora_B bias has no place in a GGUF LoRA adapter", l->name);
	if ((*mod = parse_name(l->name, "model.layers.", 0, block)) < 0)
		return lora_err_set(e, LORA_EINVAL,
		                    "layer '%s': llama.cpp adapts only the q/k/v/o_proj and gate/up/down_proj modules of model.layers.N",
		                    l->name);
	double s = lora_adapter_layer_scale(a, l);
	/* adapter.lora.alpha is an f32 */
	if (l->rank == 0 || s == 0 || !isfinite((float)(s * (double)l->rank)))
		return lora_err_set(e, LORA_EINVAL, "layer '%s': rank %zu, alpha %g: no GGUF adapter scales it so", l->name,
		                    l->rank, l->alpha);
	return 0;
}

/* n f32 values to dtype at dst; a non-finite value, or one the dtype
 * cannot hold, is an error naming the tensor. */
static int encode(void *dst, const float *src, size_t n, lora_dtype t, const char *name, lora_err *e)
{
	lora_dtype_from_f32(dst, src, t, n);
	for (size_t i = 0; i < n; i++) {
		float back;
		lora_dtype_to_f32(&back, (const unsigned char *)dst + i * lora_dtype_size(t), t, 1);
		if (!isfinite(src[i]) || !isfinite(back))
			return lora_err_set(e, LORA_EINVAL, "tensor '%s': element %zu (%g) is not finite in %s", name, i,
			                    (double)src[i], lora_dtype_name(t));
	}
	return 0;
}

typedef struct {
	lora_gguf_kvspec *kv;
	size_t nkv;
	lora_gguf_spec *t;
	char (*names)[LORA_GGUF_MAX_NAME + 1];
	double *alphas, *folds;
	uint32_t heads, kv_heads;
	float alpha;
} plan;

static void add_kv(plan *p, lora_gguf_kvspec k)
{
	p->kv[p->nkv++] = k;
}

static int make_plan(plan *p, const lora_adapter *a, const lora_gguflora_base *b, lora_err *e)
{
	size_t n = a->nlayers;
	p->kv = calloc(16, sizeof *p->kv);
	p->t = calloc(2 * n + 1, sizeof *p->t);
	p->names = calloc(2 * n + 1, sizeof *p->names);
	p->alphas = calloc(n + 1, sizeof *p->alphas);
	p->folds = calloc(n + 1, sizeof *p->folds);
	if (!p->kv || !p->t || !p->names || !p->alphas || !p->folds)
		return lora_err_nomem(e);
	p->alpha = choose_alpha(a);
	p->heads = (uint32_t)b->n_heads, p->kv_heads = (uint32_t)(b->n_kv_heads ? b->n_kv_heads : b->n_heads);
	for (size_t i = 0; i < n; i++) {
		const lora_layer *l = &a->layers[i];
		size_t block = 0, heads;
		int m = 0, rc;
		if ((rc = check_layer(a, l, &block, &m, e)) ||
		    (rc = rope_heads(modules[m].rope, b->arch, b->n_heads, b->n_kv_heads, l->out, l->name, &heads, e)))
			return rc;
		p->alphas[i] = l->alpha;
		p->folds[i] = fold(lora_adapter_layer_scale(a, l), l->rank, p->alpha);
		snprintf(p->names[2 * i], sizeof *p->names, "blk.%zu.%s.weight.lora_a", block, modules[m].gg);
		snprintf(p->names[2 * i + 1], sizeof *p->names, "blk.%zu.%s.weight.lora_b", block, modules[m].gg);
		p->t[2 * i] = (lora_gguf_spec){p->names[2 * i], (uint32_t)lora_gguf_ggml_of(a->dtype), 2, {l->in, l->rank}};
		p->t[2 * i + 1] = (lora_gguf_spec){p->names[2 * i + 1],
		                                   p->folds[i] != 1.0 ? LORA_GGML_F32 : (uint32_t)lora_gguf_ggml_of(a->dtype),
		                                   2, {l->rank, l->out}};
	}
	add_kv(p, (lora_gguf_kvspec){.key = "general.architecture", .type = LORA_GGUF_STRING, .v.s = b->arch});
	add_kv(p, (lora_gguf_kvspec){.key = "general.type", .type = LORA_GGUF_STRING, .v.s = "adapter"});
	add_kv(p, (lora_gguf_kvspec){.key = "adapter.type", .type = LORA_GGUF_STRING, .v.s = "lora"});
	add_kv(p, (lora_gguf_kvspec){.key = "adapter.lora.alpha", .type = LORA_GGUF_F32, .v.f = p->alpha});
	add_kv(p, (lora_gguf_kvspec){.key = "lora.alpha", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_F64, .n = n,
	                             .v.arr = p->alphas});
	add_kv(p, (lora_gguf_kvspec){.key = "lora.rslora", .type = LORA_GGUF_BOOL, .v.u = a->rslora != 0});
	if (p->heads)
		add_kv(p, (lora_gguf_kvspec){.key = "lora.head_count", .type = LORA_GGUF_U32, .v.u = p->heads});
	if (p->heads)
		add_kv(p, (lora_gguf_kvspec){.key = "lora.head_count_kv", .type = LORA_GGUF_U32, .v.u = p->kv_heads});
	const char *strs[][2] = {{"lora.base.name", a->base_name}, {"lora.base.fingerprint", a->base_fingerprint},
	                         {"lora.provenance", a->provenance}, {"lora.peft_config", a->peft_config}};
	for (size_t k = 0; k < sizeof strs / sizeof *strs; k++)
		if (strs[k][1])
			add_kv(p, (lora_gguf_kvspec){.key = strs[k][0], .type = LORA_GGUF_STRING, .v.s = strs[k][1]});
	if (a->ntargets)
		add_kv(p, (lora_gguf_kvspec){.key = "lora.targets", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_STRING,
		                             .n = a->ntargets, .v.arr = a->targets});
	return 0;
}

static void free_plan(plan *p)
{
	free(p->kv), free(p->t), free(p->names), free(p->alphas), free(p->folds);
}

/* Layer i's lora_B as llama.cpp wants it: folded, rows permuted. */
static void gguf_b(float *dst, float *tmp, const lora_adapter *a, size_t i, const lora_gguflora_base *b, double c)
{
	const lora_layer *l = &a->layers[i];
	size_t n = l->out * l->rank, block, heads = 0;
	int m = parse_name(l->name, "model.layers.", 0, &block);
	rope_heads(modules[m].rope, b->arch, b->n_heads, b->n_kv_heads, l->out, l->name, &heads, NULL);
	for (size_t k = 0; k < n; k++)
		tmp[k] = c != 1.0 ? (float)((double)l->B[k] * c) : l->B[k];
	if (heads)
		permute_rows(dst, tmp, l->out, l->rank, heads, 0);
	else
		memcpy(dst, tmp, n * sizeof *dst);
}

static int write_data(lora_gguf_writer *w, const lora_adapter *a, const plan *p, const lora_gguflora_base *b,
                      lora_err *e)
{
	size_t most = 1;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		most = most > l->rank * l->in ? most : l->rank * l->in;
		most = most > l->out * l->rank ? most : l->out * l->rank;
	}
	float *f = lora_shape_alloc(most, sizeof *f), *tmp = lora_shape_alloc(most, sizeof *f);
	void *bytes = lora_shape_alloc(most, 4);
	int rc = !f || !tmp || !bytes ? lora_err_nomem(e) : 0;
	for (size_t i = 0; i < a->nlayers && !rc; i++) {
		const lora_layer *l = &a->layers[i];
		lora_dtype tb = p->folds[i] != 1.0 ? LORA_F32 : a->dtype;
		gguf_b(f, tmp, a, i, b, p->folds[i]);
		if (!(rc = encode(bytes, l->A, l->rank * l->in, a->dtype, p->names[2 * i], e)))
			rc = lora_gguf_writer_write(w, bytes, l->rank * l->in * lora_dtype_size(a->dtype), e);
		if (!rc && !(rc = encode(bytes, f, l->out * l->rank, tb, p->names[2 * i + 1], e)))
			rc = lora_gguf_writer_write(w, bytes, l->out * l->rank * lora_dtype_size(tb), e);
	}
	free(f), free(tmp), free(bytes);
	return rc;
}

static int check_adapter(const lora_adapter *a, const lora_gguflora_base *base, lora_err *e)
{
	if (!base || !base->arch || (strcmp(base->arch, "llama") && strcmp(base->arch, "qwen2")))
		return lora_err_set(e, LORA_EINVAL, "GGUF adapters are written for the llama and qwen2 architectures");
	if (a->fan_in_fan_out)
		return lora_err_set(e, LORA_EINVAL, "a fan_in_fan_out adapter (weights stored [in, out]) has no GGUF form");
	if (a->nextras)
		return lora_err_set(e, LORA_EINVAL,
		                    "tensor '%s' is not the LoRA factor of a linear module and has no place in a GGUF adapter",
		                    a->extras[0].name);
	if (lora_gguf_ggml_of(a->dtype) < 0)
		return lora_err_set(e, LORA_EINVAL, "GGUF adapters are stored in f32, f16 or bf16, not %s",
		                    lora_dtype_name(a->dtype));
	return 0;
}

int lora_gguflora_check(const lora_adapter *a, const lora_gguflora_base *base, lora_err *e)
{
	plan p = {0};
	int rc = check_adapter(a, base, e);
	if (!rc)
		rc = make_plan(&p, a, base, e);
	free_plan(&p);
	return rc;
}

int lora_gguflora_write(const lora_adapter *a, const char *path, const lora_gguflora_base *base, int force,
                        lora_err *e)
{
	plan p = {0};
	lora_gguf_writer *w = NULL;
	int rc;
	if ((rc = check_adapter(a, base, e)) || (rc = make_plan(&p, a, base, e)))
		goto out;
	if ((rc = lora_gguf_writer_open(&w, path, p.kv, p.nkv, p.t, 2 * a->nlayers, force, e)))
		goto out;
	if ((rc = write_data(w, a, &p, base, e)))
		lora_gguf_writer_abort(w);
	else
		rc = lora_gguf_writer_commit(w, e);
out:
	free_plan(&p);
	return rc;
}

/* ---- reader ---- */

typedef struct {
	const lora_gguf *g;
	const char *path, *arch;
	float alpha;
	const lora_gguf_kv *alphas;
	int rslora, meta;
	size_t heads, kv_heads;
} rinfo;

/* A string key as a new C string (NULL when absent); a key of another
 * type, or a string holding a NUL or not UTF-8, is an error. */
static int get_string(char **out, const lora_gguf *g, const char *key, lora_err *e)
{
	const lora_gguf_kv *kv = lora_gguf_kv_find(g, key);
	const char *s;
	size_t len;
	char d[32];
	*out = NULL;
	if (!kv)
		return 0;
	lora_gguf_kv_describe(kv, d, sizeof d);
	if (kv->type != LORA_GGUF_STRING || lora_gguf_kv_str(kv, 0, &s, &len))
		return lora_err_set(e, LORA_EFORMAT, "%s: key '%s' is %s, not a string", g->path, key, d);
	if (memchr(s, 0, len) || lora_utf8_bad(s, len) != len)
		return lora_err_set(e, LORA_EFORMAT, "%s: key '%s' holds a NUL or is not UTF-8", g->path, key);
	if (!(*out = strndup(s, len)))
		return lora_err_nomem(e);
	return 0;
}

static int want_string(const lora_gguf *g, const char *key, const char *want, lora_err *e)
{
	char *s = NULL;
	int rc = get_string(&s, g, key, e);
	if (!rc && (!s || strcmp(s, want) != 0))
		rc = s ? lora_err_set(e, LORA_EFORMAT, "%s: %s is '%s', not '%s': not a LoRA adapter", g->path, key, s, want)
		       : lora_err_set(e, LORA_EFORMAT, "%s: no %s: not a LoRA adapter", g->path, key);
	free(s);
	return rc;
}

/* A u32 (or other unsigned) key, absent as 0. */
static int get_count(size_t *out, const lora_gguf *g, const char *key, lora_err *e)
{
	const lora_gguf_kv *kv = lora_gguf_kv_find(g, key);
	uint64_t v = 0;
	*out = 0;
	if (kv && (kv->type == LORA_GGUF_ARRAY || lora_gguf_kv_uint(kv, 0, &v) || v > 1u << 20))
		return lora_err_set(e, LORA_EFORMAT, "%s: key '%s' is not a head count", g->path, key);
	*out = (size_t)v;
	return 0;
}

static int read_keys(rinfo *r, lora_adapter *a, const lora_gguflora_base *base, lora_err *e)
{
	const lora_gguf *g = r->g;
	char *arch = NULL;
	double alpha = 0;
	int rc;
	if ((rc = want_string(g, "general.type", "adapter", e)) || (rc = want_string(g, "adapter.type", "lora", e)) ||
	    (rc = get_string(&arch, g, "general.architecture", e)))
		return rc;
	r->arch = !arch ? NULL : !strcmp(arch, "llama") ? "llama" : !strcmp(arch, "qwen2") ? "qwen2" : NULL;
	if (!r->arch)
		rc = lora_err_set(e, LORA_EFORMAT, "%s: general.architecture '%s' is not supported (llama, qwen2)", r->path,
		                  arch ? arch : "");
	else if (base && base->arch && strcmp(base->arch, r->arch) != 0)
		rc = lora_err_set(e, LORA_EINVAL, "%s: the adapter is for architecture '%s', the model is '%s'", r->path,
		                  r->arch, base->arch);
	free(arch);
	if (rc)
		return rc;
	const lora_gguf_kv *kv = lora_gguf_kv_find(g, "adapter.lora.alpha");
	if (kv && (kv->type != LORA_GGUF_F32 || lora_gguf_kv_float(kv, 0, &alpha) || !isfinite(alpha)))
		return lora_err_set(e, LORA_EFORMAT, "%s: adapter.lora.alpha is not a finite f32", r->path);
	r->alpha = (float)alpha;
	kv = lora_gguf_kv_find(g, "lora.rslora");
	if (kv && (kv->type != LORA_GGUF_BOOL || lora_gguf_kv_bool(kv, 0, &r->rslora)))
		return lora_err_set(e, LORA_EFORMAT, "%s: lora.rslora is not a bool", r->path);
	r->alphas = lora_gguf_kv_find(g, "lora.alpha");
	if (r->alphas && (r->alphas->type != LORA_GGUF_ARRAY || r->alphas->elem != LORA_GGUF_F64))
		return lora_err_set(e, LORA_EFORMAT, "%s: lora.alpha is not an array of f64", r->path);
	r->meta = r->alphas != NULL;
	a->rslora = r->meta && r->rslora;
	if ((rc = get_count(&r->heads, g, "lora.head_count", e)) || (rc = get_count(&r->kv_heads, g, "lora.head_count_kv", e)))
		return rc;
	if (base && base->n_heads)
		r->heads = base->n_heads, r->kv_heads = base->n_kv_heads;
	if ((rc = get_string(&a->base_name, g, "lora.base.name", e)) ||
	    (rc = get_string(&a->base_fingerprint, g, "lora.base.fingerprint", e)) ||
	    (rc = get_string(&a->provenance, g, "lora.provenance", e)) ||
	    (rc = get_string(&a->peft_config, g, "lora.peft_config", e)))
		return rc;
	kv = lora_gguf_kv_find(g, "lora.targets");
	for (size_t i = 0; kv && i < kv->n; i++) {
		const char *s;
		size_t len;
		char *t = NULL;
		if (lora_gguf_kv_str(kv, i, &s, &len) || memchr(s, 0, len) || lora_utf8_bad(s, len) != len)
			return lora_err_set(e, LORA_EFORMAT, "%s: lora.targets holds something other than UTF-8 names", r->path);
		if (!(t = strndup(s, len)) || (rc = lora_adapter_add_target(a, t, e))) {
			free(t);
			return rc ? rc : lora_err_nomem(e);
		}
		free(t);
	}
	return 0;
}

/* The factor pair of a lora_a tensor: checked names, types and shapes. */
static int pair_of(const rinfo *r, const lora_gguf_tensor *ta, const lora_gguf_tensor **tb, int *mod, size_t *block,
                   lora_err *e)
{
	char base[LORA_GGUF_MAX_NAME + 1], bn[2 * LORA_GGUF_MAX_NAME];
	size_t n = strlen(ta->name) - strlen(".weight.lora_a");
	memcpy(base, ta->name, n);
	base[n] = 0;
	if ((*mod = parse_name(base, "blk.", 1, block)) < 0)
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: tensor '%s': only the attn_q/k/v/output and ffn_gate/up/down tensors of blk.N are read",
		                    r->path, ta->name);
	snprintf(bn, sizeof bn, "%s.weight.lora_b", base);
	if (!(*tb = lora_gguf_find(r->g, bn)))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' has no %s", r->path, ta->name, bn);
	const lora_gguf_tensor *t[2] = {ta, *tb};
	for (int k = 0; k < 2; k++) {
		lora_dtype d;
		if (t[k]->type != LORA_GGML_Q8_0 && lora_gguf_dtype_of(t[k]->type, &d))
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': type %s (F32, F16, BF16 or Q8_0 are read)", r->path,
			                    t[k]->name, lora_gguf_ggml_name(t[k]->type));
		if (t[k]->ndim != 2 || !t[k]->ne[0] || !t[k]->ne[1])
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' is not a non-empty matrix", r->path, t[k]->name);
	}
	if (ta->ne[1] != (*tb)->ne[0])
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': ne {%llu, %llu} has rank %llu, its lora_b ne {%llu, %llu} rank %llu",
		                    r->path, ta->name, (unsigned long long)ta->ne[0], (unsigned long long)ta->ne[1],
		                    (unsigned long long)ta->ne[1], (unsigned long long)(*tb)->ne[0],
		                    (unsigned long long)(*tb)->ne[1], (unsigned long long)(*tb)->ne[0]);
	return 0;
}

/* Every tensor is one of a pair. */
static int check_names(const rinfo *r, lora_err *e)
{
	for (size_t i = 0; i < r->g->ntensors; i++) {
		const char *s = r->g->tensors[i].name;
		size_t n = strlen(s);
		if (!(n > 14 && (!strcmp(s + n - 14, ".weight.lora_a") || !strcmp(s + n - 14, ".weight.lora_b"))))
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' is not a LoRA factor (.weight.lora_a or .lora_b)",
			                    r->path, s);
		if (s[n - 1] == 'b') {
			char a[LORA_GGUF_MAX_NAME + 1];
			snprintf(a, sizeof a, "%.*s_a", (int)(n - 2), s);
			if (!lora_gguf_find(r->g, a))
				return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' has no %s", r->path, s, a);
		}
	}
	return 0;
}

/* A tensor's values in f32, every one finite. */
static int values(float *dst, const rinfo *r, const lora_gguf_tensor *t, lora_err *e)
{
	lora_gguf_to_f32(dst, t);
	size_t k = lora_dtype_find_nonfinite(dst, t->nelem);
	if (k < t->nelem)
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': element %zu is not finite", r->path, t->name, k);
	return 0;
}

/* Values of a tensor stored in another type than the adapter's dtype (a
 * folded lora_B in f32) are rounded to that dtype, so that the adapter
 * holds what it says it holds; a value it cannot hold is an error. */
static int to_dtype(float *x, float *tmp, size_t n, lora_dtype t, const rinfo *r, const char *name, lora_err *e)
{
	lora_dtype_from_f32(tmp, x, t, n);
	lora_dtype_to_f32(x, tmp, t, n);
	size_t k = lora_dtype_find_nonfinite(x, n);
	if (k < n)
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': element %zu is not finite in %s", r->path, name, k,
		                    lora_dtype_name(t));
	return 0;
}

static int read_factors(const rinfo *r, lora_adapter *a, lora_layer *l, const lora_gguf_tensor *ta,
                        const lora_gguf_tensor *tb, int mod, lora_err *e)
{
	size_t heads, n = l->out * l->rank, na = l->rank * l->in;
	uint32_t own = (uint32_t)lora_gguf_ggml_of(a->dtype);
	int rc;
	if ((rc = rope_heads(modules[mod].rope, r->arch, r->heads, r->kv_heads, l->out, tb->name, &heads, e)))
		return lora_err_prefix(e, "%s", r->path);
	float *tmp = lora_shape_alloc(n > na ? n : na, sizeof *tmp);
	if (!tmp)
		return lora_err_nomem(e);
	if ((rc = values(l->A, r, ta, e)) || (ta->type != own && (rc = to_dtype(l->A, tmp, na, a->dtype, r, ta->name, e))) ||
	    (rc = values(tmp, r, tb, e)))
		goto out;
	if (heads)
		permute_rows(l->B, tmp, l->out, l->rank, heads, 1);
	else
		memcpy(l->B, tmp, n * sizeof *tmp);
	double c = r->meta ? fold(lora_adapter_layer_scale(a, l), l->rank, r->alpha) : 1.0;
	/* The f32 fold of an f16 or bf16 value rounds back to it exactly. */
	for (size_t k = 0; c != 1.0 && k < n; k++)
		l->B[k] = (float)((double)l->B[k] / c);
	if (tb->type != own || c != 1.0)
		rc = to_dtype(l->B, tmp, n, a->dtype, r, tb->name, e);
out:
	free(tmp);
	return rc;
}

/* The storage dtype: that of every factor, else f32; with our keys, that
 * of every lora_a (a folded lora_B is f32 by design). */
static lora_dtype storage_dtype(const lora_gguf *g, int meta)
{
	lora_dtype dt = LORA_F32, d;
	int first = 1;
	for (size_t i = 0; i < g->ntensors; i++) {
		const lora_gguf_tensor *t = &g->tensors[i];
		if (meta && t->name[strlen(t->name) - 1] != 'a')
			continue;
		if (lora_gguf_dtype_of(t->type, &d) || (!first && d != dt))
			return LORA_F32;
		dt = d, first = 0;
	}
	return dt;
}

static int read_layers(const rinfo *r, lora_adapter *a, int header_only, lora_err *e)
{
	size_t nl = 0;
	int rc;
	a->dtype = storage_dtype(r->g, r->meta);
	for (size_t i = 0; i < r->g->ntensors; i++) {
		const lora_gguf_tensor *ta = &r->g->tensors[i], *tb = NULL;
		size_t n = strlen(ta->name), block;
		int mod;
		if (ta->name[n - 1] != 'a')
			continue;
		if ((rc = pair_of(r, ta, &tb, &mod, &block, e)))
			return rc;
		double alpha = r->alpha != 0 ? r->alpha : (double)ta->ne[1];
		if (r->meta && (lora_gguf_kv_float(r->alphas, nl, &alpha) || !isfinite(alpha)))
			return lora_err_set(e, LORA_EFORMAT, "%s: lora.alpha has %zu values, not one finite value per layer",
			                    r->path, r->alphas->n);
		char name[64];
		snprintf(name, sizeof name, "model.layers.%zu.%s", block, modules[mod].hf);
		if (lora_adapter_find(a, name))
			return lora_err_set(e, LORA_EFORMAT, "%s: layer '%s' is given twice", r->path, name);
		lora_layer *l = lora_adapter_add(a, name, (size_t)tb->ne[1], (size_t)ta->ne[0], (size_t)ta->ne[1], alpha,
		                                 header_only, e);
		if (!l)
			return lora_err_prefix(e, "%s", r->path);
		nl++;
		if (!header_only && (rc = read_factors(r, a, l, ta, tb, mod, e)))
			return rc;
	}
	if (r->meta && r->alphas->n != nl)
		return lora_err_set(e, LORA_EFORMAT, "%s: lora.alpha has %zu values, not one finite value per layer", r->path,
		                    r->alphas->n);
	return 0;
}

/* Without lora.targets: the modules the layers adapt, in module order. */
static int derive_targets(lora_adapter *a, lora_err *e)
{
	for (size_t m = 0; m < NMOD; m++)
		for (size_t i = 0; i < a->nlayers; i++) {
			size_t block;
			if (parse_name(a->layers[i].name, "model.layers.", 0, &block) == (int)m) {
				int rc = lora_adapter_add_target(a, modules[m].target, e);
				if (rc)
					return rc;
				break;
			}
		}
	return 0;
}

int lora_gguflora_read(lora_adapter **out, const char *path, const lora_gguflora_base *base, int header_only,
                       lora_err *e)
{
	lora_gguf *g = NULL;
	lora_adapter *a = NULL;
	rinfo r = {.path = path};
	int rc;
	*out = NULL;
	if ((rc = lora_gguf_open(&g, path, e)))
		return rc;
	r.g = g;
	if (!(a = lora_adapter_new())) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if ((rc = read_keys(&r, a, base, e)) || (rc = check_names(&r, e)) || (rc = read_layers(&r, a, header_only, e)))
		goto out;
	/* The "targets" the adapter was made for, when not recorded. */
	if (!lora_gguf_kv_find(g, "lora.targets") && (rc = derive_targets(a, e)))
		goto out;
	a->file_bytes = g->file_size;
	*out = a;
	a = NULL;
out:
	lora_adapter_free(a);
	lora_gguf_close(g);
	return rc;
}
