/* llama: the Llama-family transformer, forward, backward and decoding, with
 * LoRA adapters applied at run time (contracts in llama.h). config.json,
 * the weights and the numerical kernels are modules of their own. */
#include "model/llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/sysmem.h"
#include "math/blas.h"
#include "model/kernels.h"
#include "model/llama_internal.h"
#include "model/weights.h"

/* Floats of logits held at once by the head and the loss. */
#define LOGIT_FLOATS ((size_t)1 << 23)
/* Arena sub-buffers start on 64-byte boundaries. */
#define ALIGN_FLOATS 16

/* ---- the model object ---- */

/* One adapter layer attached to one module. */
typedef struct {
	const float *A, *B, *bias; /* (r, in), (out, r), (out) or NULL */
	float *dA, *dB;            /* gradients, trainable only */
	size_t r, in, out;
	float s;                   /* k * alpha / r */
	size_t block;
	int mod, trainable;
} attachment;

/* What backward needs of one block, kept per block (TRAIN) or recomputed
 * into one slot (RECOMPUTE, and eval). */
typedef struct {
	float *rstd1; /* (BT) */
	float *qkv;   /* (BT, QKV) after RoPE */
	float *att;   /* (BT, QD) attention output, o_proj's input */
	float *lse;   /* (B, NH, T) log-sum-exp of each attention row */
	float *xmid;  /* (BT, C) residual after attention */
	float *rstd2; /* (BT) */
	float *gu;    /* (BT, 2F) gate and up before the activation */
	/* bf16 training without recomputation: qkv and gu kept in bf16 here
	 * (a per-block copy, as autocast keeps a product's output), worked on
	 * in the shared f32 qkv32 and gu32 and read from here by the kernels
	 * after the products (attention, SwiGLU); NULL otherwise */
	uint16_t *qkvb, *gub;
} slot;

struct lora_llama {
	lora_config c;
	lora_weights w;
	lora_dtype compute; /* of the big products' operands: LORA_F32 or LORA_BF16 */

	attachment *atts;
	size_t natts;
	size_t *first;    /* atts of (block, mod) are [first[i], first[i+1]), i = block*NMOD+mod */
	size_t rmax;
	float *grads;     /* arena of the trainable adapter's gradients */
	size_t ngrads;
	float **gA, **gB; /* per trainable adapter layer */
	size_t ntrain;
	int lowest;       /* lowest block with a trainable factor, -1 if none */
	float dropout;
	uint64_t dropout_seed;

	/* plan */
	size_t B, T;
	size_t Tn, pos;   /* tokens per row in the current pass, and their first position */
	int flags, nthr;
	void **kc, **vc; /* decode plans: per block keys and values (B, T, KVD), in the compute type */
	float *cache;     /* their storage */
	float *acts;
	size_t nacts;
	float **res;      /* L+1 residual streams (TRAIN), or one shared */
	slot *slots;
	size_t nslots;
	float *ln, *h, *xd, *tmp, *u, *u2;
	float *rope_cos, *rope_sin; /* (T, HS/2) */
	float *attn_scratch;        /* nthr x lora_kernels_attention_scratch(T, ...) */
	float *logits;              /* (chunk, V) */
	size_t chunk;
	size_t loss_norm;           /* divide the gradient by this, not the batch's target count; 0: that count */
	double *rowloss;            /* (chunk) */
	float *lnf_out, *rstdf, *dlnf, *last_logits;
	float *dres, *dln, *dqkv, *datt, *dgu, *dh, *Dsum;
	uint16_t *xb;               /* bf16 compute: a product's activations in bf16 */
	float *qkv32, *gu32;        /* the slots' qkv and gu in f32 (see slot) */
	int ready;                  /* a TRAIN forward with targets has run */
};

static size_t up16(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

int lora_llama_open(lora_llama **out, const lora_ckpt *ck, lora_err *e)
{
	int rc;
	*out = NULL;
	if (!ck->config_path)
		return lora_err_set(e, LORA_EFORMAT, "%s: no config.json beside the weights", ck->path);
	lora_llama *m = calloc(1, sizeof *m);
	if (!m)
		return lora_err_nomem(e);
	m->lowest = -1;
	m->compute = LORA_F32;
	if ((rc = lora_config_read(&m->c, ck->config_path, e)) || (rc = lora_weights_load(&m->w, ck, &m->c, e)))
		goto fail;
	m->first = calloc(m->c.n_layers * LORA_NMOD + 1, sizeof *m->first);
	if (!m->first) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	*out = m;
	return 0;
fail:
	lora_llama_free(m);
	return rc;
}

static void free_plan(lora_llama *m)
{
	free(m->acts);
	free(m->res);
	free(m->slots);
	free(m->kc);
	free(m->cache);
	m->cache = NULL;
	m->acts = NULL;
	m->res = NULL;
	m->slots = NULL;
	m->kc = m->vc = NULL;
	m->nacts = 0;
	m->B = m->T = m->Tn = m->pos = 0;
	m->ready = 0;
}

void lora_llama_free(lora_llama *m)
{
	if (!m)
		return;
	free_plan(m);
	lora_weights_free(&m->w);
	free(m->atts);
	free(m->first);
	free(m->grads);
	free(m->gA);
	free(m->gB);
	free(m);
}

const lora_config *lora_llama_get_config(const lora_llama *m) { return &m->c; }
size_t lora_llama_param_count(const lora_llama *m) { return m->w.n; }
size_t lora_llama_weight_bytes(const lora_llama *m) { return m->w.bytes; }

int lora_llama_set_compute(lora_llama *m, lora_llama_compute mode, lora_err *e)
{
	int bf16 = lora_blas_bf16();
	lora_dtype want = mode == LORA_LLAMA_BF16 ? LORA_BF16 : LORA_F32;
	if (mode == LORA_LLAMA_AUTO && m->w.dtype == LORA_BF16 && bf16 == LORA_BLAS_BF16_NATIVE)
		want = LORA_BF16;
	if (want == LORA_BF16 && bf16 == LORA_BLAS_BF16_NONE)
		return lora_err_set(e, LORA_EINVAL,
		                    "bf16 compute needs a CPU with AVX-512 (oneDNN multiplies bf16 from avx512_core up; "
		                    "this one runs %s): use --compute f32",
		                    lora_blas_isa());
	if (want != m->compute)
		free_plan(m);
	m->compute = want;
	return 0;
}

lora_dtype lora_llama_compute_dtype(const lora_llama *m) { return m->compute; }

void lora_llama_describe(const lora_llama *m, char *buf, size_t n)
{
	int k = snprintf(buf, n, "compute %s (oneDNN %s); weights %.2f GB of %s read in place",
	                 lora_dtype_name(m->compute), lora_blas_isa(), (double)m->w.bytes / 1e9,
	                 m->w.dtype == LORA_DTYPE_COUNT ? "mixed dtypes" : lora_dtype_name(m->w.dtype));
	if (m->nacts && k > 0 && (size_t)k < n)
		snprintf(buf + k, n - (size_t)k, "; activations %.2f GiB", (double)m->nacts * sizeof(float) / 1073741824.0);
}

/* ---- adapters ---- */

static int cmp_att(const void *a, const void *b)
{
	const attachment *x = a, *y = b;
	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->mod - y->mod;
}

/* Every check of lora_llama_attach, before anything changes. */
/* The first non-finite value of a layer's factors, as "lora_A[i]", or 0. */
static int factor_nonfinite(const lora_layer *l, char *buf, size_t n)
{
	const float *x[3] = {l->A, l->B, l->bias};
	const size_t len[3] = {l->rank * l->in, l->out * l->rank, l->bias ? l->out : 0};
	static const char *const name[3] = {"lora_A", "lora_B", "lora_B bias"};
	for (int k = 0; k < 3; k++) {
		size_t i = x[k] ? lora_dtype_find_nonfinite(x[k], len[k]) : len[k];
		if (i < len[k]) {
			snprintf(buf, n, "%s[%zu] is %s", name[k], i, isnan(x[k][i]) ? "NaN" : "infinite");
			return 1;
		}
	}
	return 0;
}

static int check_adapter(const lora_llama *m, const lora_adapter *a, double k, int trainable, const char *what,
                         lora_err *e)
{
	const lora_config *c = &m->c;
	if (trainable && m->gA)
		return lora_err_set(e, LORA_EINVAL, "%s: only one adapter can be trained at a time", what);
	if (a->fan_in_fan_out)
		return lora_err_set(e, LORA_EINVAL, "%s: fan_in_fan_out adapters (GPT-2 Conv1D) do not fit a Llama model",
		                    what);
	if (a->nextras)
		return lora_err_set(e, LORA_EINVAL,
		                    "%s: tensor '%s' is not a linear LoRA factor and cannot be applied at run time", what,
		                    a->extras[0].name);
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		size_t blk, out, in;
		int mod;
		if (lora_weights_module_parse(l->name, &blk, &mod))
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: layer '%s' is not a linear module of a decoder block (q/k/v/o_proj, gate/up/down_proj)",
			                    what, l->name);
		if (blk >= c->n_layers)
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s' is not in the model (it has %zu blocks)", what,
			                    l->name, c->n_layers);
		lora_weights_module_shape(c, mod, &out, &in);
		if (l->out != out || l->in != in)
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': adapter shape %zux%zu does not match the model's %zux%zu",
			                    what, l->name, l->out, l->in, out, in);
		if (!l->A || !l->B)
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s' has no factors loaded", what, l->name);
		if (l->magnitude)
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: layer '%s' is DoRA (magnitude vector), which is not applied at run time; merge it with lora-merge",
			                    what, l->name);
		if (l->bias && trainable)
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s' has a lora_B bias, which cannot be trained", what,
			                    l->name);
		if (l->rank == 0 || l->rank > 65536)
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': rank %zu is out of range", what, l->name, l->rank);
		/* Caught here, a non-finite scale or factor is named; found in the
		 * loss, it would only be "nan". */
		double s = k * lora_adapter_layer_scale(a, l);
		char at[64];
		if (!isfinite((float)s))
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': scale %g (alpha %g, rank %zu) is not finite in f32",
			                    what, l->name, s, l->alpha, l->rank);
		if (factor_nonfinite(l, at, sizeof at))
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': %s", what, l->name, at);
	}
	return 0;
}

/* The gradient arena of the trainable adapter a, one dA and dB per layer. */
static int alloc_grads(lora_llama *m, const lora_adapter *a, lora_err *e)
{
	size_t total = 0;
	for (size_t i = 0; i < a->nlayers; i++)
		total += up16(a->layers[i].rank * a->layers[i].in) + up16(a->layers[i].out * a->layers[i].rank);
	m->grads = aligned_alloc(64, (total ? total : ALIGN_FLOATS) * sizeof(float));
	m->gA = calloc(a->nlayers + 1, sizeof *m->gA);
	m->gB = calloc(a->nlayers + 1, sizeof *m->gB);
	if (!m->grads || !m->gA || !m->gB) {
		free(m->grads), free(m->gA), free(m->gB);
		m->grads = NULL, m->gA = m->gB = NULL;
		return lora_err_set(e, LORA_ENOMEM, "out of memory for gradients");
	}
	m->ngrads = total;
	m->ntrain = a->nlayers;
	memset(m->grads, 0, (total ? total : ALIGN_FLOATS) * sizeof(float));
	float *g = m->grads;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		m->gA[i] = g;
		g += up16(l->rank * l->in);
		m->gB[i] = g;
		g += up16(l->out * l->rank);
	}
	return 0;
}

int lora_llama_attach(lora_llama *m, const lora_adapter *a, double k, int trainable, const char *what,
                      lora_err *e)
{
	int rc;
	if ((rc = check_adapter(m, a, k, trainable, what, e)))
		return rc;
	attachment *na = realloc(m->atts, (m->natts + a->nlayers + 1) * sizeof *na);
	if (!na)
		return lora_err_nomem(e);
	m->atts = na;
	if (trainable && (rc = alloc_grads(m, a, e)))
		return rc;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		attachment *t = &m->atts[m->natts++];
		size_t blk;
		int mod;
		lora_weights_module_parse(l->name, &blk, &mod);
		float s = (float)(k * lora_adapter_layer_scale(a, l));
		*t = (attachment){l->A, l->B, l->bias, NULL, NULL, l->rank, l->in, l->out, s, blk, mod, trainable};
		if (trainable) {
			t->dA = m->gA[i];
			t->dB = m->gB[i];
			if (m->lowest < 0 || (size_t)m->lowest > blk)
				m->lowest = (int)blk;
		}
		if (l->rank > m->rmax)
			m->rmax = l->rank;
	}
	qsort(m->atts, m->natts, sizeof *m->atts, cmp_att);
	size_t nb = m->c.n_layers * LORA_NMOD;
	for (size_t i = 0, j = 0; i <= nb; i++) {
		while (j < m->natts && m->atts[j].block * LORA_NMOD + (size_t)m->atts[j].mod < i)
			j++;
		m->first[i] = j;
	}
	m->first[nb] = m->natts;
	/* A plan sized for a smaller rank is stale. */
	if (m->acts && m->B)
		free_plan(m);
	return 0;
}

void lora_llama_set_dropout(lora_llama *m, float p, uint64_t seed)
{
	m->dropout = p > 0 && p < 1 ? p : 0;
	m->dropout_seed = seed;
}

void lora_llama_set_loss_norm(lora_llama *m, size_t n) { m->loss_norm = n; }

void lora_llama_zero_grad(lora_llama *m)
{
	if (m->grads)
		memset(m->grads, 0, (m->ngrads ? m->ngrads : ALIGN_FLOATS) * sizeof(float));
}

int lora_llama_grad(const lora_llama *m, size_t i, float **dA, float **dB)
{
	if (!m->gA || i >= m->ntrain)
		return -1;
	*dA = m->gA[i];
	*dB = m->gB[i];
	return 0;
}

/* ---- planning ---- */

/* The sizes of a plan, in floats. */
typedef struct {
	size_t BT, chunk, nres, nslots, wmax, r, half, scratch, nxb;
	int stash;   /* slots keep qkv and gu in bf16 */
	double need; /* floats of the whole arena */
} plan_sizes;

static void sizes(const lora_llama *m, size_t B, size_t T, int flags, plan_sizes *z)
{
	const lora_config *c = &m->c;
	size_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, L = c->n_layers, NH = c->n_heads, BT = B * T;
	int train = flags & LORA_LLAMA_TRAIN, recompute = train && (flags & LORA_LLAMA_RECOMPUTE);
	size_t chunk = LOGIT_FLOATS / V;
	if (chunk >= 16)
		chunk &= ~(size_t)15;
	chunk = chunk < 1 ? 1 : chunk > BT ? BT : chunk;
	size_t wmax = C > m->w.QD ? C : m->w.QD;
	wmax = F > wmax ? F : wmax;
	*z = (plan_sizes){BT, chunk, train ? L + 1 : 1, train && !recompute ? (L ? L : 1) : 1, wmax,
	                  m->rmax ? m->rmax : 1, c->head_dim / 2,
	                  (size_t)lora_blas_threads() *
	                      lora_kernels_attention_scratch(T, NH, c->n_kv_heads, c->head_dim, m->compute),
	                  0, 0, 0};
	z->stash = z->nslots > 1 && m->compute == LORA_BF16;
	/* in carving order */
	double need = (double)z->nres * up16(BT * C);
	size_t kept = z->stash ? (BT * m->w.QKV + 1) / 2 : BT * m->w.QKV, keptgu = z->stash ? BT * F : BT * 2 * F;
	need += (double)z->nslots * (up16(BT) * 2 + up16(kept) + up16(BT * m->w.QD) + up16(B * NH * T) +
	                             (train ? up16(BT * C) : 0) + up16(keptgu));
	if (z->stash)
		need += up16(BT * m->w.QKV) + up16(BT * 2 * F);
	need += up16(BT * C) + up16(BT * F) + 2.0 * up16(BT * z->r) + 2.0 * up16(T * z->half);
	need += (double)up16(z->scratch) + up16(chunk * V) + up16(chunk * 2) + up16(BT * C) + up16(BT) + up16(B * V);
	if (m->compute == LORA_BF16) { /* bf16 activations: the widest product input */
		size_t widest = 2 * F > m->w.QKV ? 2 * F : m->w.QKV;
		z->nxb = BT * (widest > wmax ? widest : wmax);
		z->nxb = z->nxb > chunk * V ? z->nxb : chunk * V;
		z->nxb = z->nxb > B * C ? z->nxb : B * C;
		need += up16((z->nxb + 1) / 2);
	}
	if (train)
		need += 2.0 * up16(BT * wmax) + up16(BT * C) /* dlnf */ + up16(BT * C) * 2 + up16(BT * m->w.QKV) +
		        up16(BT * m->w.QD) + up16(BT * 2 * F) + up16(BT * F) + up16(B * NH * T);
	z->need = need;
}

static double gib(double floats) { return floats * sizeof(float) / (1024.0 * 1024 * 1024); }

/* A plan larger than the memory left is refused now: the allocation would
 * succeed and the process be killed when the pages are touched. */
static int check_fits(const lora_llama *m, const plan_sizes *z, size_t B, size_t T, int flags, lora_err *e)
{
	double avail = (double)lora_sysmem_available();
	if (z->need * sizeof(float) <= avail)
		return 0;
	if ((flags & LORA_LLAMA_TRAIN) && !(flags & LORA_LLAMA_RECOMPUTE)) {
		plan_sizes rz;
		sizes(m, B, T, flags | LORA_LLAMA_RECOMPUTE, &rz);
		return lora_err_set(e, LORA_ENOMEM,
		                    "batch %zu x sequence %zu needs %.2f GiB of activations, more than the %.2f GiB "
		                    "available (with --recompute: %.2f GiB)",
		                    B, T, gib(z->need), avail / (1024.0 * 1024 * 1024), gib(rz.need));
	}
	return lora_err_set(e, LORA_ENOMEM,
	                    "batch %zu x sequence %zu needs %.2f GiB of activations, more than the %.2f GiB available", B,
	                    T, gib(z->need), avail / (1024.0 * 1024 * 1024));
}

int lora_llama_plan(lora_llama *m, size_t B, size_t T, int flags, lora_err *e)
{
	const lora_config *c = &m->c;
	size_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, L = c->n_layers, NH = c->n_heads;
	size_t BT;
	plan_sizes z;
	int rc;
	free_plan(m);
	if (B == 0 || T == 0 || lora_shape_mul(B, T, &BT) || BT > ((size_t)1 << 31) / 16)
		return lora_err_set(e, LORA_EUSAGE, "batch %zu x sequence %zu is out of range", B, T);
	int train = flags & LORA_LLAMA_TRAIN;
	sizes(m, B, T, flags, &z);
	if (z.need * sizeof(float) > (double)SIZE_MAX / 4)
		return lora_err_set(e, LORA_ENOMEM, "batch %zu x sequence %zu needs too much memory", B, T);
	if ((rc = check_fits(m, &z, B, T, flags, e)))
		return rc;
	size_t nacts = (size_t)z.need, nslots = z.nslots, chunk = z.chunk, wmax = z.wmax, r = z.r, half = z.half;
	m->acts = aligned_alloc(64, nacts * sizeof(float));
	m->res = calloc(L + 1, sizeof *m->res);
	m->slots = calloc(nslots, sizeof *m->slots);
	if (!m->acts || !m->res || !m->slots) {
		free_plan(m);
		return lora_err_set(e, LORA_ENOMEM, "out of memory for activations (%.2f GiB)", gib(z.need));
	}
	m->nacts = nacts;
	m->B = B, m->T = T, m->flags = flags, m->nthr = lora_blas_threads(), m->nslots = nslots, m->chunk = chunk;
	m->Tn = T, m->pos = 0;
	float *p = m->acts;
#define CARVE(dst, n) (dst = p, p += up16(n))
	for (size_t i = 0; i <= L; i++) {
		if (i < z.nres)
			CARVE(m->res[i], BT * C);
		else
			m->res[i] = m->res[0];
	}
	for (size_t i = 0; i < nslots; i++) {
		slot *s = &m->slots[i];
		CARVE(s->rstd1, BT);
		CARVE(s->rstd2, BT);
		s->qkvb = s->gub = NULL;
		if (z.stash) {
			s->qkvb = (uint16_t *)p;
			p += up16((BT * m->w.QKV + 1) / 2);
		} else {
			CARVE(s->qkv, BT * m->w.QKV);
		}
		CARVE(s->att, BT * m->w.QD);
		CARVE(s->lse, B * NH * T);
		if (train)
			CARVE(s->xmid, BT * C);
		if (z.stash) {
			s->gub = (uint16_t *)p;
			p += up16(BT * F);
		} else {
			CARVE(s->gu, BT * 2 * F);
		}
	}
	m->qkv32 = m->gu32 = NULL;
	if (z.stash) {
		CARVE(m->qkv32, BT * m->w.QKV);
		CARVE(m->gu32, BT * 2 * F);
	}
	CARVE(m->ln, BT * C);
	CARVE(m->h, BT * F);
	CARVE(m->u, BT * r);
	CARVE(m->u2, BT * r);
	CARVE(m->rope_cos, T * half);
	CARVE(m->rope_sin, T * half);
	CARVE(m->attn_scratch, z.scratch);
	CARVE(m->logits, chunk * V);
	m->rowloss = (double *)p;
	p += up16(chunk * 2);
	CARVE(m->lnf_out, BT * C);
	CARVE(m->rstdf, BT);
	CARVE(m->last_logits, B * V);
	m->xb = NULL;
	if (z.nxb) {
		m->xb = (uint16_t *)p;
		p += up16((z.nxb + 1) / 2);
	}
	m->xd = m->tmp = m->dlnf = m->dres = m->dln = m->dqkv = m->datt = m->dgu = m->dh = m->Dsum = NULL;
	if (train) {
		CARVE(m->xd, BT * wmax);
		CARVE(m->tmp, BT * wmax);
		CARVE(m->dlnf, BT * C);
		CARVE(m->dres, BT * C);
		CARVE(m->dln, BT * C);
		CARVE(m->dqkv, BT * m->w.QKV);
		CARVE(m->datt, BT * m->w.QD);
		CARVE(m->dgu, BT * 2 * F);
		CARVE(m->dh, BT * F);
		CARVE(m->Dsum, B * NH * T);
	}
#undef CARVE
	lora_kernels_rope_tables(m->rope_cos, m->rope_sin, c, T);
	return 0;
}

size_t lora_llama_activation_bytes(const lora_llama *m) { return m->nacts * sizeof(float); }

/* ---- products with the frozen weights ---- */

/* An activation as the A operand of the big products: in f32 compute the
 * f32 values themselves, in bf16 compute a bf16 copy (xb). */
typedef struct {
	const void *p;
	lora_dtype dt;
	size_t ld;
} operand;

#define CONVERT_ROWS 16

/* x (N, n) as an operand; in bf16 compute it overwrites the previous one. */
static operand act(lora_llama *m, const float *x, size_t N, size_t n)
{
	if (m->compute == LORA_F32)
		return (operand){x, LORA_F32, n};
#pragma omp parallel for if (N * n > ((size_t)1 << 16))
	for (size_t i = 0; i < N; i += CONVERT_ROWS)
		lora_dtype_from_f32(m->xb + i * n, x + i * n, LORA_BF16, (N - i < CONVERT_ROWS ? N - i : CONVERT_ROWS) * n);
	return (operand){m->xb, LORA_BF16, n};
}

#define KEEP_CHUNK ((size_t)1 << 14)

/* x (n values) rounded to bf16 into b: the kernels after a product read
 * the copy backward will read (see slot). */
static void keep(uint16_t *b, const float *x, size_t n)
{
#pragma omp parallel for if (n > KEEP_CHUNK)
	for (size_t i = 0; i < n; i += KEEP_CHUNK)
		lora_dtype_from_f32(b + i, x + i, LORA_BF16, n - i < KEEP_CHUNK ? n - i : KEEP_CHUNK);
}

/* q, k and v (N, QKV) as attention takes them: f32, or in bf16 compute
 * rounded into b (the slot's stash or the activation buffer, free
 * between the products around attention). */
static const void *attention_input(lora_llama *m, float *qkv, uint16_t *b, size_t N)
{
	if (m->compute == LORA_F32)
		return qkv;
	keep(b ? b : m->xb, qkv, N * m->w.QKV);
	return b ? b : m->xb;
}

/* The operand a kernel wrote for the next product: bf16 into xb in bf16
 * compute, else x (N, n) in f32. */
static operand written(const lora_llama *m, const float *x, size_t n)
{
	if (m->compute == LORA_BF16)
		return (operand){m->xb, LORA_BF16, n};
	return (operand){x, LORA_F32, n};
}

/* Gate and up of slot s as SwiGLU reads them: the bf16 copy training
 * keeps, else f32. */
static const void *gate_up(const slot *s, lora_dtype *dt)
{
	*dt = s->gub ? LORA_BF16 : LORA_F32;
	return s->gub ? (const void *)s->gub : s->gu;
}

/* Columns j.. of an operand. */
static operand cols(operand x, size_t j)
{
	x.p = (const char *)x.p + j * lora_dtype_size(x.dt);
	return x;
}

/* y (N, out; row stride ldy) = beta y + x W^T (+ bias) for module mod of
 * block l: its frozen part. */
static void module_forward(const lora_llama *m, size_t l, int mod, operand x, size_t N, float beta, float *y,
                           size_t ldy)
{
	const lora_weights_block *w = &m->w.blocks[l];
	size_t out, in;
	lora_weights_module_shape(&m->c, mod, &out, &in);
	lora_blas_gemm(0, 1, N, out, in, 1, x.p, x.dt, x.ld, w->w[mod].p, w->w[mod].dt, in, beta, y, ldy);
	if (w->b[mod])
		lora_kernels_bias_forward(y, w->b[mod], 1, N, out, ldy);
}

/* dx (N, in; row stride ldx) = beta dx + dy W: the input gradient through
 * module mod's frozen weight. */
static void module_backward(const lora_llama *m, size_t l, int mod, operand dy, size_t N, float beta, float *dx,
                            size_t ldx)
{
	const lora_weights_mat *w = &m->w.blocks[l].w[mod];
	size_t out, in;
	lora_weights_module_shape(&m->c, mod, &out, &in);
	lora_blas_gemm(0, 0, N, in, out, 1, dy.p, dy.dt, dy.ld, w->p, w->dt, in, beta, dx, ldx);
}

/* y (N, V) = x (N, C) head^T: logits. */
static void head_forward(lora_llama *m, const float *x, size_t N, float *y)
{
	size_t C = m->c.dim, V = m->c.vocab_size;
	operand a = act(m, x, N, C);
	lora_blas_gemm(0, 1, N, V, C, 1, a.p, a.dt, a.ld, m->w.head.p, m->w.head.dt, C, 0, y, V);
}

/* ---- adapted linear layers ---- */

static int dropping(const lora_llama *m, const attachment *a) { return a->trainable && m->dropout > 0; }

static uint64_t dropout_key(const lora_llama *m, size_t blk, int mod)
{
	return lora_kernels_dropout_key(m->dropout_seed, (uint64_t)blk << 8 | (uint64_t)mod);
}

/* y (N, ldy) += sum over the attachments of (blk, mod): s B A d(x).
 * x (N, in). train: apply dropout to the trainable adapter. */
static void adapters_forward(lora_llama *m, size_t blk, int mod, const float *x, float *y, size_t ldy, int train)
{
	size_t N = m->B * m->Tn;
	for (size_t i = m->first[blk * LORA_NMOD + mod]; i < m->first[blk * LORA_NMOD + mod + 1]; i++) {
		const attachment *a = &m->atts[i];
		const float *xi = x;
		if (train && dropping(m, a)) {
			lora_kernels_dropout_forward(m->xd, x, dropout_key(m, blk, mod), m->dropout, N, a->in);
			xi = m->xd;
		}
		lora_kernels_lora_forward(y, m->u, xi, a->A, a->B, a->bias, a->s, N, a->in, a->out, a->r, ldy);
	}
}

/* Backward of adapters_forward: factor gradients of the trainable
 * attachment (+=) and, when dx is given, dx (N, in) += d loss / d x through
 * every attachment. dy (N, ldy). */
static void adapters_backward(lora_llama *m, size_t blk, int mod, const float *x, const float *dy, size_t ldy,
                              float *dx)
{
	size_t N = m->B * m->T;
	for (size_t i = m->first[blk * LORA_NMOD + mod]; i < m->first[blk * LORA_NMOD + mod + 1]; i++) {
		const attachment *a = &m->atts[i];
		if (!a->trainable && !dx)
			continue;
		int drop = dropping(m, a);
		uint64_t key = drop ? dropout_key(m, blk, mod) : 0;
		const float *xi = x;
		if (drop) {
			lora_kernels_dropout_forward(m->xd, x, key, m->dropout, N, a->in);
			xi = m->xd;
		}
		/* The gradient at a dropped input goes through the mask. */
		lora_kernels_lora_backward(drop ? NULL : dx, a->dA, a->dB, m->u, m->u2, dy, xi, a->A, a->B, a->s, N, a->in,
		                           a->out, a->r, ldy);
		if (drop && dx) {
			lora_blas_sgemm(0, 0, N, a->in, a->r, 1, m->u, a->r, a->A, a->in, 0, m->tmp, a->in);
			lora_kernels_dropout_backward(dx, m->tmp, key, m->dropout, N, a->in);
		}
	}
}

/* ---- blocks ---- */

/* Whether module mod of block l has adapters attached. */
static int attached(const lora_llama *m, size_t l, int mod)
{
	return m->first[l * LORA_NMOD + mod] < m->first[l * LORA_NMOD + mod + 1];
}


/* Block l: xin -> xout through slot s. xmid may equal xin and xout may
 * equal xmid (in place, eval). skip_down: stop after the MLP activation
 * (recomputation for backward needs nothing later). */
static void block_forward(lora_llama *m, size_t l, slot *s, const float *xin, float *xmid, float *xout, int train,
                          int skip_down)
{
	const lora_config *c = &m->c;
	const lora_weights_block *w = &m->w.blocks[l];
	size_t N = m->B * m->Tn, C = c->dim, F = c->hidden_dim, QKV = m->w.QKV, QD = m->w.QD;
	size_t NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim, window = lora_config_window(c, l);
	float eps = (float)c->rms_eps;
	float *qkv = s->qkvb ? m->qkv32 : s->qkv, *gu = s->gub ? m->gu32 : s->gu;
	// attention
	lora_kernels_rmsnorm_forward(m->ln, s->rstd1, xin, w->ln1, eps, N, C);
	operand x = act(m, m->ln, N, C);
	module_forward(m, l, LORA_MOD_Q, x, N, 0, qkv, QKV);
	module_forward(m, l, LORA_MOD_K, x, N, 0, qkv + QD, QKV);
	module_forward(m, l, LORA_MOD_V, x, N, 0, qkv + QD + m->w.KVD, QKV);
	adapters_forward(m, l, LORA_MOD_Q, m->ln, qkv, QKV, train);
	adapters_forward(m, l, LORA_MOD_K, m->ln, qkv + QD, QKV, train);
	adapters_forward(m, l, LORA_MOD_V, m->ln, qkv + QD + m->w.KVD, QKV, train);
	lora_kernels_rope_forward(qkv, m->rope_cos, m->rope_sin, m->pos, m->B, m->Tn, NH + NKV, HS, QKV);
	const void *q = attention_input(m, qkv, s->qkvb, N);
	if (m->kc)
		lora_kernels_attention_decode(s->att, m->kc[l], m->vc[l], m->attn_scratch, q, m->compute, m->pos, m->T,
		                              m->B, m->Tn, NH, NKV, HS, window, m->nthr);
	else
		lora_kernels_attention_forward(s->att, s->lse, m->attn_scratch, q, m->compute, m->B, m->Tn, NH, NKV, HS,
		                               window, m->nthr);
	if (xmid != xin)
		memcpy(xmid, xin, N * C * sizeof(float));
	module_forward(m, l, LORA_MOD_O, act(m, s->att, N, QD), N, 1, xmid, C);
	adapters_forward(m, l, LORA_MOD_O, s->att, xmid, C, train);
	// MLP
	lora_kernels_rmsnorm_forward(m->ln, s->rstd2, xmid, w->ln2, eps, N, C);
	x = act(m, m->ln, N, C);
	module_forward(m, l, LORA_MOD_GATE, x, N, 0, gu, 2 * F);
	module_forward(m, l, LORA_MOD_UP, x, N, 0, gu + F, 2 * F);
	adapters_forward(m, l, LORA_MOD_GATE, m->ln, gu, 2 * F, train);
	adapters_forward(m, l, LORA_MOD_UP, m->ln, gu + F, 2 * F, train);
	if (s->gub)
		keep(s->gub, gu, N * 2 * F);
	if (skip_down)
		return;
	lora_dtype gdt;
	const void *g = gate_up(s, &gdt);
	/* h in f32 only for f32 compute and down's adapters */
	int bf16 = m->compute == LORA_BF16;
	lora_kernels_swiglu_forward(!bf16 || attached(m, l, LORA_MOD_DOWN) ? m->h : NULL, bf16 ? m->xb : NULL, g, gdt, N,
	                            F);
	if (xout != xmid)
		memcpy(xout, xmid, N * C * sizeof(float));
	module_forward(m, l, LORA_MOD_DOWN, written(m, m->h, F), N, 1, xout, C);
	adapters_forward(m, l, LORA_MOD_DOWN, m->h, xout, C, train);
}

static int trainable_in(const lora_llama *m, size_t l, int mod)
{
	for (size_t i = m->first[l * LORA_NMOD + mod]; i < m->first[l * LORA_NMOD + mod + 1]; i++)
		if (m->atts[i].trainable)
			return 1;
	return 0;
}

/* How far backward must go inside block l: the deepest stage holding a
 * trainable factor, or all the way to the block input when a lower block
 * has one. 0 nothing, 1 down, 2 gate/up, 3 o, 4 q/k/v, 5 the block input. */
static int block_depth(const lora_llama *m, size_t l)
{
	if (m->lowest < 0 || l < (size_t)m->lowest)
		return 0;
	if (l > (size_t)m->lowest)
		return 5;
	if (trainable_in(m, l, LORA_MOD_Q) || trainable_in(m, l, LORA_MOD_K) || trainable_in(m, l, LORA_MOD_V))
		return 4;
	if (trainable_in(m, l, LORA_MOD_O))
		return 3;
	if (trainable_in(m, l, LORA_MOD_GATE) || trainable_in(m, l, LORA_MOD_UP))
		return 2;
	return trainable_in(m, l, LORA_MOD_DOWN) ? 1 : 0;
}

/* dres (N,C): in, d loss / d block output; out, d loss / d block input
 * (when depth 5). */
static void block_backward(lora_llama *m, size_t l, const slot *s, const float *xin, float *dres, int depth)
{
	const lora_config *c = &m->c;
	const lora_weights_block *w = &m->w.blocks[l];
	size_t N = m->B * m->T, C = c->dim, F = c->hidden_dim, QKV = m->w.QKV, QD = m->w.QD;
	size_t NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim;
	lora_dtype gdt;
	const void *gu = gate_up(s, &gdt);
	int bf16 = m->compute == LORA_BF16;
	// MLP: xout = xmid + down(h); h is only needed for down's own factors
	if (trainable_in(m, l, LORA_MOD_DOWN))
		lora_kernels_swiglu_forward(m->h, NULL, gu, gdt, N, F);
	if (depth >= 2)
		module_backward(m, l, LORA_MOD_DOWN, act(m, dres, N, C), N, 0, m->dh, F);
	adapters_backward(m, l, LORA_MOD_DOWN, m->h, dres, C, depth >= 2 ? m->dh : NULL);
	if (depth < 2)
		return;
	/* dgu in f32 only for f32 compute and the adapters of gate and up */
	lora_kernels_swiglu_backward(!bf16 || attached(m, l, LORA_MOD_GATE) || attached(m, l, LORA_MOD_UP) ? m->dgu : NULL,
	                             bf16 && depth >= 3 ? m->xb : NULL, m->dh, gu, gdt, N, F);
	/* the normed input only for the adapters of gate and up */
	if (attached(m, l, LORA_MOD_GATE) || attached(m, l, LORA_MOD_UP))
		lora_kernels_rmsnorm_recompute(m->ln, s->xmid, w->ln2, s->rstd2, N, C);
	if (depth >= 3) {
		operand g = written(m, m->dgu, 2 * F);
		module_backward(m, l, LORA_MOD_GATE, g, N, 0, m->dln, C);
		module_backward(m, l, LORA_MOD_UP, cols(g, F), N, 1, m->dln, C);
	}
	adapters_backward(m, l, LORA_MOD_GATE, m->ln, m->dgu, 2 * F, depth >= 3 ? m->dln : NULL);
	adapters_backward(m, l, LORA_MOD_UP, m->ln, m->dgu + F, 2 * F, depth >= 3 ? m->dln : NULL);
	if (depth < 3)
		return;
	lora_kernels_rmsnorm_backward(dres, m->dln, s->xmid, w->ln2, s->rstd2, N, C);
	// attention: xmid = xin + o(att)
	if (depth >= 4)
		module_backward(m, l, LORA_MOD_O, act(m, dres, N, C), N, 0, m->datt, QD);
	adapters_backward(m, l, LORA_MOD_O, s->att, dres, C, depth >= 4 ? m->datt : NULL);
	if (depth < 4)
		return;
	memset(m->dqkv, 0, N * QKV * sizeof(float));
	const void *q = s->qkvb ? s->qkvb : attention_input(m, s->qkv, NULL, N);
	lora_kernels_attention_backward(m->dqkv, m->Dsum, m->attn_scratch, m->datt, s->att, s->lse, q, m->compute, m->B,
	                                m->T, NH, NKV, HS, lora_config_window(c, l), m->nthr);
	lora_kernels_rope_backward(m->dqkv, m->rope_cos, m->rope_sin, 0, m->B, m->T, NH + NKV, HS, QKV);
	if (attached(m, l, LORA_MOD_Q) || attached(m, l, LORA_MOD_K) || attached(m, l, LORA_MOD_V))
		lora_kernels_rmsnorm_recompute(m->ln, xin, w->ln1, s->rstd1, N, C);
	float *dln = depth >= 5 ? m->dln : NULL;
	if (dln) {
		operand g = act(m, m->dqkv, N, QKV);
		module_backward(m, l, LORA_MOD_Q, g, N, 0, dln, C);
		module_backward(m, l, LORA_MOD_K, cols(g, QD), N, 1, dln, C);
		module_backward(m, l, LORA_MOD_V, cols(g, QD + m->w.KVD), N, 1, dln, C);
	}
	adapters_backward(m, l, LORA_MOD_Q, m->ln, m->dqkv, QKV, dln);
	adapters_backward(m, l, LORA_MOD_K, m->ln, m->dqkv + QD, QKV, dln);
	adapters_backward(m, l, LORA_MOD_V, m->ln, m->dqkv + QD + m->w.KVD, QKV, dln);
	if (dln)
		lora_kernels_rmsnorm_backward(dres, dln, xin, w->ln1, s->rstd1, N, C);
}

/* ---- forward and backward ---- */

/* Tokens (B, T) at positions pos.. of each row, and targets (may be NULL)
 * checked against the vocabulary; *count of the targets used. */
static int check_tokens(const int32_t *inputs, const int32_t *targets, size_t B, size_t T, size_t pos, size_t V,
                        size_t *count, lora_err *e)
{
	*count = 0;
	for (size_t i = 0; i < B * T; i++) {
		if (inputs[i] < 0 || (size_t)inputs[i] >= V)
			return lora_err_set(e, LORA_EINVAL, "input token %ld at row %zu, position %zu is outside [0, %zu)",
			                    (long)inputs[i], i / T, pos + i % T, V);
		if (targets && targets[i] >= 0 && (size_t)targets[i] >= V)
			return lora_err_set(e, LORA_EINVAL, "target token %ld at row %zu, position %zu is >= vocab_size %zu",
			                    (long)targets[i], i / T, pos + i % T, V);
		*count += targets && targets[i] >= 0;
	}
	return 0;
}

static int check_forward(const lora_llama *m, lora_err *e)
{
	if (!m->acts)
		return lora_err_set(e, LORA_EINVAL, "forward before plan");
	if (m->kc)
		return lora_err_set(e, LORA_EINVAL, "forward on a decode plan: use lora_llama_decode");
	return 0;
}

/* The first non-finite element of matrix w (n elements), or n. */
static size_t mat_nonfinite(const lora_weights_mat *w, size_t n)
{
	float buf[1024];
	size_t es = lora_dtype_size(w->dt);
	for (size_t i = 0; i < n; i += 1024) {
		size_t k = n - i < 1024 ? n - i : 1024, b;
		lora_dtype_to_f32(buf, (const unsigned char *)w->p + i * es, w->dt, k);
		if ((b = lora_dtype_find_nonfinite(buf, k)) < k)
			return i + b;
	}
	return n;
}

/* Where a non-finite hidden state first appeared: after the embedding
 * (blk < 0) or after block blk. Only on that failure are the block's
 * weights scanned, to name the tensor when one of them is at fault. */
static int nonfinite_at(const lora_llama *m, long blk, lora_err *e)
{
	const lora_config *c = &m->c;
	char name[96];
	size_t at;
	if (blk < 0) {
		if ((at = mat_nonfinite(&m->w.embed, c->vocab_size * c->dim)) < c->vocab_size * c->dim)
			return lora_err_set(e, LORA_EFORMAT, "tensor 'model.embed_tokens.weight': element [%zu,%zu] is not finite",
			                    at / c->dim, at % c->dim);
		return lora_err_set(e, LORA_EINVAL, "the embedding is not finite");
	}
	const lora_weights_block *w = &m->w.blocks[blk];
	for (int mod = 0; mod < LORA_NMOD; mod++) {
		size_t out, in;
		lora_weights_module_shape(c, mod, &out, &in);
		snprintf(name, sizeof name, "model.layers.%ld.%s.%s", blk, mod < LORA_MOD_GATE ? "self_attn" : "mlp",
		         lora_weights_module_name(mod));
		if ((at = mat_nonfinite(&w->w[mod], out * in)) < out * in)
			return lora_err_set(e, LORA_EFORMAT, "tensor '%s.weight': element [%zu,%zu] is not finite", name, at / in,
			                    at % in);
		if (w->b[mod] && (at = lora_dtype_find_nonfinite(w->b[mod], out)) < out)
			return lora_err_set(e, LORA_EFORMAT, "tensor '%s.bias': element %zu is not finite", name, at);
	}
	const float *ln[2] = {w->ln1, w->ln2};
	for (int k = 0; k < 2; k++)
		if ((at = lora_dtype_find_nonfinite(ln[k], c->dim)) < c->dim)
			return lora_err_set(e, LORA_EFORMAT, "tensor 'model.layers.%ld.%s.weight': element %zu is not finite", blk,
			                    k ? "post_attention_layernorm" : "input_layernorm", at);
	return lora_err_set(e, LORA_EINVAL,
	                    "model.layers.%ld: the hidden state is not finite after this block (values overflow; "
	                    "an adapter's scale too large?)", blk);
}

/* 0, or the error naming where x (n values) became non-finite. */
static int check_finite(const lora_llama *m, const float *x, size_t n, long blk, lora_err *e)
{
	return lora_dtype_find_nonfinite(x, n) < n ? nonfinite_at(m, blk, e) : 0;
}

/* Embedding and every block of a forward plan: the top of the residual
 * stream is left in res[L]. Without training (eval, generation) the
 * hidden state is checked after each block, a scan as cheap as a norm, so
 * that a non-finite result is refused naming where it began (training
 * checks its loss, gradient and parameters itself). */
static int blocks_forward(lora_llama *m, const int32_t *inputs, lora_err *e)
{
	size_t L = m->c.n_layers, N = m->B * m->T * m->c.dim;
	int train = (m->flags & LORA_LLAMA_TRAIN) != 0, recompute = (m->flags & LORA_LLAMA_RECOMPUTE) != 0, rc;
	lora_kernels_embedding_forward(m->res[0], inputs, m->w.embed.p, m->w.embed.dt, m->B * m->T, m->c.dim);
	if (!train && (rc = check_finite(m, m->res[0], N, -1, e)))
		return rc;
	for (size_t l = 0; l < L; l++) {
		slot *s = &m->slots[train && !recompute ? l : 0];
		float *xout = m->res[l + 1];
		block_forward(m, l, s, m->res[l], train ? s->xmid : xout, xout, train, 0);
		if (!train && (rc = check_finite(m, xout, N, (long)l, e)))
			return rc;
	}
	return 0;
}

/* The final norm and head of finite hidden states gave non-finite logits. */
static int head_nonfinite(const lora_llama *m, lora_err *e)
{
	const lora_config *c = &m->c;
	size_t at, n = c->vocab_size * c->dim;
	if ((at = lora_dtype_find_nonfinite(m->w.norm, c->dim)) < c->dim)
		return lora_err_set(e, LORA_EFORMAT, "tensor 'model.norm.weight': element %zu is not finite", at);
	if ((at = mat_nonfinite(&m->w.head, n)) < n)
		return lora_err_set(e, LORA_EFORMAT, "tensor '%s': element [%zu,%zu] is not finite",
		                    m->w.head.p == m->w.embed.p ? "model.embed_tokens.weight" : "lm_head.weight", at / c->dim,
		                    at % c->dim);
	return lora_err_set(e, LORA_EINVAL, "the logits are not finite (they overflow)");
}

/* The logits (B, V) of the last of the T positions of each row of top
 * (B*T, C), into last_logits. */
static void head_last(lora_llama *m, const float *top, size_t T)
{
	size_t C = m->c.dim;
	for (size_t b = 0; b < m->B; b++)
		lora_kernels_rmsnorm_forward(m->lnf_out + b * C, NULL, top + (b * T + T - 1) * C, m->w.norm,
		                             (float)m->c.rms_eps, 1, C);
	head_forward(m, m->lnf_out, m->B, m->last_logits);
}

/* The summed loss over the targets (count of them used) of the top of the
 * residual stream, a chunk of logits at a time; in a TRAIN plan also the
 * gradient at the final norm's output, dlnf. */
static double head_loss(lora_llama *m, const int32_t *targets, size_t count)
{
	size_t N = m->B * m->T, C = m->c.dim, V = m->c.vocab_size;
	int train = (m->flags & LORA_LLAMA_TRAIN) != 0;
	lora_kernels_rmsnorm_forward(m->lnf_out, m->rstdf, m->res[m->c.n_layers], m->w.norm, (float)m->c.rms_eps, N, C);
	size_t norm = m->loss_norm ? m->loss_norm : count;
	float gscale = train && count ? 1.0f / (float)norm : 0;
	double sum = 0;
	for (size_t i0 = 0; i0 < N; i0 += m->chunk) {
		size_t n = N - i0 < m->chunk ? N - i0 : m->chunk;
		head_forward(m, m->lnf_out + i0 * C, n, m->logits);
		lora_kernels_crossentropy_forward(m->rowloss, m->logits, targets + i0, gscale, n, V);
		for (size_t i = 0; i < n; i++)
			sum += m->rowloss[i];
		if (train) {
			if (count) {
				operand g = act(m, m->logits, n, V);
				lora_blas_gemm(0, 0, n, C, V, 1, g.p, g.dt, g.ld, m->w.head.p, m->w.head.dt, C, 0, m->dlnf + i0 * C,
				               C);
			}
			else
				memset(m->dlnf + i0 * C, 0, n * C * sizeof(float));
		}
	}
	return sum;
}

int lora_llama_forward(lora_llama *m, const int32_t *inputs, const int32_t *targets, double *loss, size_t *ntargets,
                       lora_err *e)
{
	size_t count;
	int rc;
	m->ready = 0;
	if ((rc = check_forward(m, e)) ||
	    (rc = check_tokens(inputs, targets, m->B, m->T, 0, m->c.vocab_size, &count, e)))
		return rc;
	if ((rc = blocks_forward(m, inputs, e)))
		return rc;
	if (!targets) {
		head_last(m, m->res[m->c.n_layers], m->T);
		if (lora_dtype_find_nonfinite(m->last_logits, m->B * m->c.vocab_size) < m->B * m->c.vocab_size)
			return head_nonfinite(m, e);
		if (loss)
			*loss = 0;
		if (ntargets)
			*ntargets = 0;
		return 0;
	}
	double sum = head_loss(m, targets, count);
	if (!isfinite(sum) && !(m->flags & LORA_LLAMA_TRAIN))
		return head_nonfinite(m, e);
	if (loss)
		*loss = count ? sum / (double)count : 0;
	if (ntargets)
		*ntargets = count;
	m->ready = (m->flags & LORA_LLAMA_TRAIN) != 0;
	return 0;
}

int lora_llama_forward_logits(lora_llama *m, const int32_t *inputs, float *logits, lora_err *e)
{
	size_t N = m->B * m->T, C = m->c.dim, V = m->c.vocab_size, count;
	int rc;
	if ((rc = check_forward(m, e)) || (rc = check_tokens(inputs, NULL, m->B, m->T, 0, V, &count, e)))
		return rc;
	if (m->flags & LORA_LLAMA_TRAIN)
		return lora_err_set(e, LORA_EINVAL, "logits of every position need a plan without training");
	m->ready = 0;
	if ((rc = blocks_forward(m, inputs, e)))
		return rc;
	/* lnf_out holds (B*T, C) in every plan */
	lora_kernels_rmsnorm_forward(m->lnf_out, NULL, m->res[m->c.n_layers], m->w.norm, (float)m->c.rms_eps, N, C);
	head_forward(m, m->lnf_out, N, logits);
	if (lora_dtype_find_nonfinite(logits, N * V) < N * V)
		return head_nonfinite(m, e);
	return 0;
}

const float *lora_llama_logits(const lora_llama *m) { return m->last_logits; }

int lora_llama_backward(lora_llama *m, lora_err *e)
{
	const lora_config *c = &m->c;
	if (!m->ready)
		return lora_err_set(e, LORA_EINVAL, "backward needs a training forward with targets first");
	if (m->lowest < 0)
		return 0;
	size_t N = m->B * m->T, C = c->dim, L = c->n_layers;
	int recompute = (m->flags & LORA_LLAMA_RECOMPUTE) != 0;
	memset(m->dres, 0, N * C * sizeof(float));
	lora_kernels_rmsnorm_backward(m->dres, m->dlnf, m->res[L], m->w.norm, m->rstdf, N, C);
	for (size_t l = L; l-- > (size_t)m->lowest;) {
		slot *s = &m->slots[recompute ? 0 : l];
		if (recompute)
			block_forward(m, l, s, m->res[l], s->xmid, NULL, 1, 1);
		block_backward(m, l, s, m->res[l], m->dres, block_depth(m, l));
	}
	return 0;
}

/* ---- incremental decoding ---- */

int lora_llama_plan_decode(lora_llama *m, size_t B, size_t maxT, lora_err *e)
{
	const lora_config *c = &m->c;
	size_t L = c->n_layers, n;
	int rc = lora_llama_plan(m, B, maxT, 0, e);
	if (rc)
		return rc;
	if (lora_shape_mul(B * maxT, m->w.KVD, &n) || !(m->kc = calloc(2 * (L ? L : 1), sizeof *m->kc))) {
		free_plan(m);
		return lora_err_set(e, LORA_ENOMEM, "out of memory for the key/value cache");
	}
	m->vc = m->kc + L;
	/* One allocation beside the activation arena, carved per block. */
	size_t per = up16((n * lora_dtype_size(m->compute) + 3) / 4);
	float *cache = aligned_alloc(64, (2 * L * per + ALIGN_FLOATS) * sizeof(float));
	if (!cache) {
		free_plan(m);
		return lora_err_set(e, LORA_ENOMEM, "out of memory for the key/value cache (%zu values)", 2 * L * n);
	}
	for (size_t l = 0; l < L; l++) {
		m->kc[l] = cache + 2 * l * per;
		m->vc[l] = cache + (2 * l + 1) * per;
	}
	m->cache = cache;
	m->Tn = 0;
	return 0;
}

int lora_llama_decode(lora_llama *m, const int32_t *tokens, size_t n, size_t pos, lora_err *e)
{
	const lora_config *c = &m->c;
	if (!m->kc)
		return lora_err_set(e, LORA_EINVAL, "decode before lora_llama_plan_decode");
	size_t count;
	int rc;
	if (n == 0 || pos > m->T || n > m->T - pos)
		return lora_err_set(e, LORA_EINVAL, "positions %zu..%zu are outside the cache of %zu", pos, pos + n, m->T);
	if ((rc = check_tokens(tokens, NULL, m->B, n, pos, c->vocab_size, &count, e)))
		return rc;
	m->Tn = n, m->pos = pos;
	float *x = m->res[0];
	lora_kernels_embedding_forward(x, tokens, m->w.embed.p, m->w.embed.dt, m->B * n, c->dim);
	if ((rc = check_finite(m, x, m->B * n * c->dim, -1, e)))
		return rc;
	for (size_t l = 0; l < c->n_layers; l++) {
		block_forward(m, l, &m->slots[0], x, x, x, 0, 0);
		if ((rc = check_finite(m, x, m->B * n * c->dim, (long)l, e)))
			return rc;
	}
	head_last(m, x, n);
	if (lora_dtype_find_nonfinite(m->last_logits, m->B * c->vocab_size) < m->B * c->vocab_size)
		return head_nonfinite(m, e);
	return 0;
}

/* ---- accounting ---- */

double lora_llama_flops_per_token(const lora_llama *m, size_t T, int training)
{
	const lora_config *c = &m->c;
	double C = (double)c->dim, F = (double)c->hidden_dim, V = (double)c->vocab_size, QD = (double)m->w.QD,
	       QKV = (double)m->w.QKV, HS = (double)c->head_dim, NH = (double)c->n_heads;
	double fwd = 2 * C * V, bwd = m->lowest >= 0 ? 2 * C * V : 0;
	for (size_t l = 0; l < c->n_layers; l++) {
		/* Keys seen per query, averaged over positions 0..T-1. */
		size_t window = lora_config_window(c, l);
		double ctx = 0;
		for (size_t t = 0; t < T; t++)
			ctx += (double)(window && t + 1 > window ? window : t + 1);
		ctx /= (double)(T ? T : 1);
		double attn = NH * 4 * HS * ctx;
		fwd += 2 * C * QKV + 2 * QD * C + 2 * C * 2 * F + 2 * F * C + attn;
		int depth = block_depth(m, l);
		/* stage of each module: where backward reaches it */
		static const int stage[LORA_NMOD] = {4, 4, 4, 3, 2, 2, 1};
		for (size_t i = m->first[l * LORA_NMOD]; i < m->first[(l + 1) * LORA_NMOD]; i++) {
			const attachment *a = &m->atts[i];
			double r = (double)a->r, in = (double)a->in, out = (double)a->out;
			fwd += 2 * r * (in + out);
			/* dx flows through a module when backward goes past its stage. */
			int dx = depth > stage[a->mod];
			if (depth >= stage[a->mod] && (a->trainable || dx))
				bwd += 2 * r * out + (a->trainable ? 2 * r * out + 2 * r * in : 0) + (dx ? 2 * r * in : 0);
		}
		if (depth >= 2)
			bwd += 2 * F * C;
		if (depth >= 3)
			bwd += 2 * 2 * F * C;
		if (depth >= 4)
			bwd += 2 * QD * C + 2 * attn;
		if (depth >= 5)
			bwd += 2 * QKV * C;
	}
	return training ? fwd + bwd : fwd;
}
