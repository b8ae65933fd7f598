/* The elementwise kernels below are plain loops that must vectorise. Under
 * the default -ftrapping-math GCC refuses to if-convert the clamps and the
 * float-to-int conversion of exp_fast, which leaves every loop that calls
 * it scalar; no code here relies on floating-point exceptions. */
#pragma GCC optimize("no-trapping-math")

#include "model/llama.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "math/blas.h"
#include "core/dtype.h"

/* Query rows per attention block: probabilities are held for QB x T at a
 * time per thread, never T x T per head. */
#define QB 64
/* Floats of logits held at once by the head and the loss. */
#define LOGIT_FLOATS ((size_t)1 << 23)
/* Arena sub-buffers start on 64-byte boundaries. */
#define ALIGN_FLOATS 16

static const char *const module_names[LORA_NMOD] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

const char *lora_llama_module_name(int mod) { return module_names[mod]; }

/* ---- the model object ---- */

typedef struct {
	float *wqkv, *bqkv; /* (QKV, C), (QKV) or NULL: q rows, then k, then v */
	float *wo, *bo;     /* (C, QD), (C) or NULL */
	float *wgu, *bgu;   /* (2F, C), (2F) or NULL: gate rows, then up */
	float *wd, *bd;     /* (C, F), (C) or NULL */
	float *ln1, *ln2;   /* (C) */
	size_t window;      /* sliding window, 0 = none */
} block;

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
} slot;

struct lora_llama {
	lora_llama_config c;
	size_t QD, KVD, QKV; /* NH*HD, NKV*HD, QD + 2 KVD */
	float *params;
	size_t nparams;
	float *embed, *lnf, *head; /* (V, C), (C), (V, C) */
	block *blocks;

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
	float **kc, **vc; /* decode plans: per block keys and values (B, T, KVD) */
	float *cache;     /* their storage */
	float *acts;
	size_t nacts;
	float **res;      /* L+1 residual streams (TRAIN), or one shared */
	slot *slots;
	size_t nslots;
	float *ln, *h, *xd, *tmp, *u, *u2;
	float *rope_cos, *rope_sin; /* (T, HD/2) */
	float *attn_scratch;        /* nthr x 2 x QB x T */
	float *logits;              /* (chunk, V) */
	size_t chunk;
	double *rowloss;            /* (chunk) */
	float *lnf_out, *rstdf, *dlnf, *last_logits;
	float *dres, *dln, *dqkv, *datt, *dgu, *dh, *Dsum;
	int ready;                  /* a TRAIN forward with targets has run */
};

static size_t up16(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* ---- fast exp: Cephes' expf, branch-free so loops vectorise ---- */

static inline float exp_fast(float x)
{
	x = x < -87.0f ? -87.0f : x;
	x = x > 88.0f ? 88.0f : x;
	/* Round x*log2(e) to nearest by the 1.5*2^23 trick (no libm call). */
	float n = x * 1.44269504088896341f + 12582912.0f;
	n -= 12582912.0f;
	float r = x - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	/* Unsigned: a NaN input (the loss blowing up) must give NaN, not UB. */
	uint32_t i = (uint32_t)((int32_t)n + 127) << 23;
	float s;
	memcpy(&s, &i, sizeof s);
	return p * s;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_fast(-x)); }

/* The row kernels that dominate the elementwise time (softmax over the
 * vocabulary and over attention rows, SwiGLU) are compiled twice, for AVX2
 * and for the baseline, and the better one is picked when the program
 * starts; the build itself stays generic. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ROWK __attribute__((target_clones("avx2", "default"), noinline))
#else
#define ROWK
#endif

/* Cross-entropy of one row of logits l (V) with target t; with gscale != 0,
 * l becomes gscale * (softmax - onehot(t)) in place. */
ROWK static double crossentropy_row(float *l, size_t V, int32_t t, float gscale)
{
	float mx = -INFINITY, sum = 0, lt = l[t];
#pragma omp simd reduction(max : mx)
	for (size_t j = 0; j < V; j++)
		mx = l[j] > mx ? l[j] : mx;
	if (gscale != 0) {
#pragma omp simd reduction(+ : sum)
		for (size_t j = 0; j < V; j++) {
			l[j] = exp_fast(l[j] - mx);
			sum += l[j];
		}
		float k = gscale / sum;
#pragma omp simd
		for (size_t j = 0; j < V; j++)
			l[j] *= k;
		l[t] -= gscale;
	} else {
#pragma omp simd reduction(+ : sum)
		for (size_t j = 0; j < V; j++)
			sum += exp_fast(l[j] - mx);
	}
	return (double)mx + log((double)sum) - (double)lt;
}

/* Softmax of s[lo, hi) in place, zero elsewhere in [0, n); returns the
 * log-sum-exp. */
ROWK static float softmax_row(float *s, size_t lo, size_t hi, size_t n)
{
	float mx = -INFINITY, sum = 0;
	for (size_t j = lo; j < hi; j++)
		mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+ : sum)
	for (size_t j = lo; j < hi; j++) {
		s[j] = exp_fast(s[j] - mx);
		sum += s[j];
	}
	float inv = 1.0f / sum;
	for (size_t j = 0; j < lo; j++)
		s[j] = 0;
#pragma omp simd
	for (size_t j = lo; j < hi; j++)
		s[j] *= inv;
	for (size_t j = hi; j < n; j++)
		s[j] = 0;
	return mx + logf(sum);
}

/* Probabilities recomputed from scores and the log-sum-exp. */
ROWK static void softmax_recompute_row(float *s, size_t lo, size_t hi, size_t n, float lse)
{
	for (size_t j = 0; j < lo; j++)
		s[j] = 0;
#pragma omp simd
	for (size_t j = lo; j < hi; j++)
		s[j] = exp_fast(s[j] - lse);
	for (size_t j = hi; j < n; j++)
		s[j] = 0;
}

// h (F) = silu(g) * u
ROWK static void swiglu_row(float *h, const float *g, const float *u, size_t F)
{
#pragma omp simd
	for (size_t j = 0; j < F; j++)
		h[j] = g[j] * sigmoid(g[j]) * u[j];
}

// dg, du (F) = d loss / d gate, up from dh (F)
ROWK static void swiglu_backward_row(float *dg, float *du, const float *dh, const float *g, const float *u, size_t F)
{
#pragma omp simd
	for (size_t j = 0; j < F; j++) {
		float s = sigmoid(g[j]), silu = g[j] * s;
		dg[j] = dh[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
		du[j] = dh[j] * silu;
	}
}

/* ---- config.json ---- */

static const cJSON *key(const cJSON *j, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
	return cJSON_IsNull(v) ? NULL : v;
}

/* Positive integer below 2^31 at k; required or not. 1 if absent. */
static int get_size(const cJSON *j, const char *k, size_t *v, int required, const char *path, lora_err *e)
{
	const cJSON *x = key(j, k);
	if (!x) {
		if (required)
			return lora_err_set(e, LORA_EFORMAT, "%s: missing key '%s'", path, k);
		return 1;
	}
	if (!cJSON_IsNumber(x) || !(x->valuedouble >= 1 && x->valuedouble < 2147483648.0) ||
	    x->valuedouble != floor(x->valuedouble))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' must be a positive integer", path, k);
	*v = (size_t)x->valuedouble;
	return 0;
}

/* Positive number at k (in must name the enclosing object for messages:
 * "" at the top level, "rope_scaling." inside it). 1 if absent. */
static int get_num(const cJSON *j, const char *in, const char *k, double *v, int required, const char *path,
                   lora_err *e)
{
	const cJSON *x = key(j, k);
	if (!x) {
		if (required)
			return lora_err_set(e, LORA_EFORMAT, "%s: missing key '%s%s'", path, in, k);
		return 1;
	}
	if (!cJSON_IsNumber(x) || !(x->valuedouble > 0) || !isfinite(x->valuedouble))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s%s' must be a positive number", path, in, k);
	*v = x->valuedouble;
	return 0;
}

static int get_pos(const cJSON *j, const char *k, double *v, int required, const char *path, lora_err *e)
{
	return get_num(j, "", k, v, required, path, e);
}

static int parse_rope(lora_llama_config *c, const cJSON *rs, const char *what, const char *path, lora_err *e)
{
	if (!cJSON_IsObject(rs))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' must be an object or null", path, what);
	const cJSON *t = key(rs, "rope_type");
	if (!t)
		t = key(rs, "type");
	if (t && !cJSON_IsString(t))
		return lora_err_set(e, LORA_EFORMAT, "%s: %s type must be a string", path, what);
	const char *type = t ? t->valuestring : "default";
	int rc;
	char in[32];
	snprintf(in, sizeof in, "%s.", what);
	if (strcmp(type, "default") == 0) {
		c->rope_type = LORA_ROPE_DEFAULT;
	} else if (strcmp(type, "linear") == 0) {
		c->rope_type = LORA_ROPE_LINEAR;
		if ((rc = get_num(rs, in, "factor", &c->rope_factor, 1, path, e)) < 0)
			return rc;
	} else if (strcmp(type, "llama3") == 0) {
		c->rope_type = LORA_ROPE_LLAMA3;
		if ((rc = get_num(rs, in, "factor", &c->rope_factor, 1, path, e)) < 0 ||
		    (rc = get_num(rs, in, "low_freq_factor", &c->rope_low_freq, 1, path, e)) < 0 ||
		    (rc = get_num(rs, in, "high_freq_factor", &c->rope_high_freq, 1, path, e)) < 0 ||
		    (rc = get_num(rs, in, "original_max_position_embeddings", &c->rope_orig_max, 1, path, e)) < 0)
			return rc;
		if (!(c->rope_high_freq > c->rope_low_freq))
			return lora_err_set(e, LORA_EFORMAT, "%s: %s high_freq_factor must exceed low_freq_factor", path,
			                    what);
	} else {
		return lora_err_set(e, LORA_EFORMAT, "%s: %s type '%s' is not supported (linear, llama3)", path, what,
		                    type);
	}
	return 0;
}

int lora_llama_config_parse(lora_llama_config *c, const char *text, size_t len, const char *path, lora_err *e)
{
	int rc = 0;
	memset(c, 0, sizeof *c);
	cJSON *j = cJSON_ParseWithLength(text, len);
	if (!j || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return lora_err_set(e, LORA_EFORMAT, "%s: not a JSON object", path);
	}
	const cJSON *mt = key(j, "model_type");
	if (!mt) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: missing key 'model_type'", path);
		goto out;
	}
	if (!cJSON_IsString(mt)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: 'model_type' must be a string", path);
		goto out;
	}
	if (strcmp(mt->valuestring, "llama") && strcmp(mt->valuestring, "mistral") &&
	    strcmp(mt->valuestring, "qwen2")) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: model_type '%.64s' is not supported (llama, mistral, qwen2)", path,
		                  mt->valuestring);
		goto out;
	}
	snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);
	if ((rc = get_size(j, "hidden_size", &c->dim, 1, path, e)) < 0 ||
	    (rc = get_size(j, "intermediate_size", &c->hidden_dim, 1, path, e)) < 0 ||
	    (rc = get_size(j, "num_hidden_layers", &c->n_layers, 1, path, e)) < 0 ||
	    (rc = get_size(j, "num_attention_heads", &c->n_heads, 1, path, e)) < 0 ||
	    (rc = get_size(j, "vocab_size", &c->vocab_size, 1, path, e)) < 0)
		goto out;
	c->n_kv_heads = c->n_heads;
	c->head_dim = c->dim / c->n_heads;
	c->rms_eps = 1e-6;
	c->rope_theta = 10000.0;
	if ((rc = get_size(j, "num_key_value_heads", &c->n_kv_heads, 0, path, e)) < 0 ||
	    (rc = get_size(j, "head_dim", &c->head_dim, 0, path, e)) < 0 ||
	    (rc = get_size(j, "max_position_embeddings", &c->max_pos, 0, path, e)) < 0 ||
	    (rc = get_pos(j, "rms_norm_eps", &c->rms_eps, 0, path, e)) < 0 ||
	    (rc = get_pos(j, "rope_theta", &c->rope_theta, 0, path, e)) < 0)
		goto out;
	rc = 0;
	if (c->n_heads % c->n_kv_heads) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: num_attention_heads %zu is not a multiple of num_key_value_heads %zu",
		                  path, c->n_heads, c->n_kv_heads);
		goto out;
	}
	if (c->head_dim == 0 || c->head_dim % 2) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: head_dim %zu must be even and positive (RoPE rotates pairs)", path,
		                  c->head_dim);
		goto out;
	}
	const cJSON *act = key(j, "hidden_act");
	if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "silu") && strcmp(act->valuestring, "swish")))) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: hidden_act '%.64s' is not supported (silu)", path,
		                  cJSON_IsString(act) ? act->valuestring : "?");
		goto out;
	}
	const cJSON *tie = key(j, "tie_word_embeddings");
	if (tie && !cJSON_IsBool(tie)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: 'tie_word_embeddings' must be true or false", path);
		goto out;
	}
	c->tied = tie && cJSON_IsTrue(tie);
	/* transformers 5 keeps theta and scaling together in rope_parameters. */
	const cJSON *rp = key(j, "rope_parameters"), *rs = key(j, "rope_scaling");
	if (rp) {
		if ((rc = parse_rope(c, rp, "rope_parameters", path, e)) < 0 ||
		    (rc = get_num(rp, "rope_parameters.", "rope_theta", &c->rope_theta, 0, path, e)) < 0)
			goto out;
	} else if (rs && (rc = parse_rope(c, rs, "rope_scaling", path, e)) < 0) {
		goto out;
	}
	rc = 0;
	if (strcmp(c->model_type, "mistral") == 0) {
		/* MistralConfig's default window is 4096; null turns it off. */
		const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
		c->sliding_window = sw ? 0 : 4096;
		if ((rc = get_size(j, "sliding_window", &c->sliding_window, 0, path, e)) < 0)
			goto out;
	} else if (strcmp(c->model_type, "qwen2") == 0) {
		const cJSON *use = key(j, "use_sliding_window");
		if (use && cJSON_IsTrue(use)) {
			c->sliding_window = 4096;
			c->window_from = 28;
			if ((rc = get_size(j, "sliding_window", &c->sliding_window, 0, path, e)) < 0)
				goto out;
			const cJSON *mw = key(j, "max_window_layers");
			if (mw && (!cJSON_IsNumber(mw) || mw->valuedouble < 0 || mw->valuedouble != floor(mw->valuedouble))) {
				rc = lora_err_set(e, LORA_EFORMAT, "%s: 'max_window_layers' must be a non-negative integer", path);
				goto out;
			}
			if (mw)
				c->window_from = mw->valuedouble > 1e9 ? (size_t)1e9 : (size_t)mw->valuedouble;
		}
	}
	rc = 0;
out:
	cJSON_Delete(j);
	return rc;
}

int lora_llama_config_read(lora_llama_config *c, const char *path, lora_err *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;
	struct stat sb;
	if (fd < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (64 << 20)) {
		close(fd);
		return lora_err_set(e, LORA_EFORMAT, "%s: not a plausible config.json", path);
	}
	size_t n = (size_t)sb.st_size, got = 0;
	char *buf = malloc(n + 1);
	if (!buf) {
		close(fd);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	}
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got != n)
		rc = lora_err_set(e, LORA_EIO, "%s: read error", path);
	else
		rc = lora_llama_config_parse(c, buf, n, path, e);
	free(buf);
	return rc;
}

/* ---- opening a checkpoint ---- */

static void fmt_shape(char *buf, size_t n, const size_t *shape, size_t ndim)
{
	if (ndim == 1)
		snprintf(buf, n, "%zu", shape[0]);
	else if (ndim == 2)
		snprintf(buf, n, "%zux%zu", shape[0], shape[1]);
	else {
		size_t k = 0;
		buf[0] = 0;
		for (size_t i = 0; i < ndim && k < n; i++)
			k += (size_t)snprintf(buf + k, n - k, "%s%zu", i ? "x" : "", shape[i]);
		if (!ndim)
			snprintf(buf, n, "scalar");
	}
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
		fmt_shape(got, sizeof got, t->shape, t->ndim);
		fmt_shape(exp, sizeof exp, shape, nd);
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

typedef struct {
	const lora_st_tensor *w[LORA_NMOD], *b[LORA_NMOD], *ln1, *ln2;
} block_src;

/* Convert n values of t to f32 at dst, then let the kernel drop t's pages:
 * the resident size stays the f32 weights, not weights plus checkpoint. */
static void convert(float *dst, const lora_st_tensor *t, size_t n)
{
	lora_dtype_to_f32(dst, t->data, t->dtype, n);
	lora_st_release(t);
}

int lora_llama_open(lora_llama **out, const lora_ckpt *ck, lora_err *e)
{
	int rc;
	*out = NULL;
	if (!ck->config_path)
		return lora_err_set(e, LORA_EFORMAT, "%s: no config.json beside the weights", ck->path);
	lora_llama *m = calloc(1, sizeof *m);
	block_src *src = NULL;
	if (!m)
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	m->lowest = -1;
	if ((rc = lora_llama_config_read(&m->c, ck->config_path, e)))
		goto fail;
	const lora_llama_config *c = &m->c;
	size_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, L = c->n_layers, HD = c->head_dim;
	m->QD = c->n_heads * HD;
	m->KVD = c->n_kv_heads * HD;
	m->QKV = m->QD + 2 * m->KVD;
	if (m->QD >= (1u << 31) / 4 || m->QKV >= (1u << 31) / 4 || F >= (1u << 30)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: attention or MLP width is too large", ck->config_path);
		goto fail;
	}
	const size_t outs[LORA_NMOD] = {m->QD, m->KVD, m->KVD, C, F, F, C};
	const size_t ins[LORA_NMOD] = {C, C, C, m->QD, C, C, F};
	src = calloc(L ? L : 1, sizeof *src);
	m->blocks = calloc(L ? L : 1, sizeof *m->blocks);
	if (!src || !m->blocks) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto fail;
	}
	/* First pass: check every tensor and size the arena. */
	const lora_st_tensor *temb = want(ck, "model.embed_tokens.weight", V, C, 0, &rc, e), *tnorm, *thead = NULL;
	if (rc || !(tnorm = want(ck, "model.norm.weight", C, 0, 0, &rc, e)))
		goto fail;
	if (!c->tied && !(thead = want(ck, "lm_head.weight", V, C, 0, &rc, e)))
		goto fail;
	double total = 2.0 * (double)up16(V * C) + (double)up16(C);
	char name[160];
	for (size_t l = 0; l < L; l++) {
		block_src *s = &src[l];
		for (int k = 0; k < LORA_NMOD; k++) {
			const char *part = k < LORA_MOD_GATE ? "self_attn" : "mlp";
			snprintf(name, sizeof name, "model.layers.%zu.%s.%s.weight", l, part, module_names[k]);
			if (!(s->w[k] = want(ck, name, outs[k], ins[k], 0, &rc, e)))
				goto fail;
			snprintf(name, sizeof name, "model.layers.%zu.%s.%s.bias", l, part, module_names[k]);
			s->b[k] = want(ck, name, outs[k], 0, 1, &rc, e);
			if (rc)
				goto fail;
		}
		snprintf(name, sizeof name, "model.layers.%zu.input_layernorm.weight", l);
		if (!(s->ln1 = want(ck, name, C, 0, 0, &rc, e)))
			goto fail;
		snprintf(name, sizeof name, "model.layers.%zu.post_attention_layernorm.weight", l);
		if (!(s->ln2 = want(ck, name, C, 0, 0, &rc, e)))
			goto fail;
		total += (double)up16(m->QKV * C) + (double)up16(C * m->QD) + (double)up16(2 * F * C) +
		         (double)up16(C * F) + 2.0 * (double)up16(C);
		if (s->b[0] || s->b[1] || s->b[2])
			total += (double)up16(m->QKV);
		if (s->b[3])
			total += (double)up16(C);
		if (s->b[4] || s->b[5])
			total += (double)up16(2 * F);
		if (s->b[6])
			total += (double)up16(C);
	}
	if (total * 4 > (double)SIZE_MAX / 2) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: model too large", ck->path);
		goto fail;
	}
	m->nparams = (size_t)total;
	m->params = aligned_alloc(64, up16(m->nparams) * sizeof(float));
	if (!m->params) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory for %zu weights", ck->path, m->nparams);
		goto fail;
	}
	/* Second pass: convert into the arena ("malloc and point"). */
	float *p = m->params;
#define TAKE(dst, t, n) (dst = p, convert(p, (t), (n)), p += up16(n))
	TAKE(m->embed, temb, V * C);
	TAKE(m->lnf, tnorm, C);
	if (c->tied)
		m->head = m->embed;
	else
		TAKE(m->head, thead, V * C);
	for (size_t l = 0; l < L; l++) {
		block_src *s = &src[l];
		block *b = &m->blocks[l];
		b->wqkv = p;
		convert(p, s->w[0], m->QD * C);
		convert(p + m->QD * C, s->w[1], m->KVD * C);
		convert(p + (m->QD + m->KVD) * C, s->w[2], m->KVD * C);
		p += up16(m->QKV * C);
		if (s->b[0] || s->b[1] || s->b[2]) {
			b->bqkv = p;
			size_t off[3] = {0, m->QD, m->QD + m->KVD};
			for (int k = 0; k < 3; k++) {
				if (s->b[k])
					convert(p + off[k], s->b[k], outs[k]);
				else
					memset(p + off[k], 0, outs[k] * sizeof(float));
			}
			p += up16(m->QKV);
		}
		TAKE(b->wo, s->w[3], C * m->QD);
		if (s->b[3])
			TAKE(b->bo, s->b[3], C);
		b->wgu = p;
		convert(p, s->w[4], F * C);
		convert(p + F * C, s->w[5], F * C);
		p += up16(2 * F * C);
		if (s->b[4] || s->b[5]) {
			b->bgu = p;
			for (int k = 0; k < 2; k++) {
				if (s->b[4 + k])
					convert(p + k * F, s->b[4 + k], F);
				else
					memset(p + k * F, 0, F * sizeof(float));
			}
			p += up16(2 * F);
		}
		TAKE(b->wd, s->w[6], C * F);
		if (s->b[6])
			TAKE(b->bd, s->b[6], C);
		TAKE(b->ln1, s->ln1, C);
		TAKE(b->ln2, s->ln2, C);
		b->window = c->sliding_window && l >= c->window_from ? c->sliding_window : 0;
	}
#undef TAKE
	m->first = calloc(L * LORA_NMOD + 1, sizeof *m->first);
	if (!m->first) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto fail;
	}
	free(src);
	*out = m;
	return 0;
fail:
	free(src);
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
	free(m->params);
	free(m->blocks);
	free(m->atts);
	free(m->first);
	free(m->grads);
	free(m->gA);
	free(m->gB);
	free(m);
}

const lora_llama_config *lora_llama_get_config(const lora_llama *m) { return &m->c; }
size_t lora_llama_param_count(const lora_llama *m) { return m->nparams; }

/* ---- adapters ---- */

/* "model.layers.N.self_attn.q_proj" -> block N, module; -1 if not one. */
static int parse_module(const char *name, size_t *blk, int *mod)
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
		const char *part = k < LORA_MOD_GATE ? "self_attn." : "mlp.";
		size_t pl = strlen(part);
		if (strncmp(p, part, pl) == 0 && strcmp(p + pl, module_names[k]) == 0) {
			*blk = n;
			*mod = k;
			return 0;
		}
	}
	return -1;
}

static int cmp_att(const void *a, const void *b)
{
	const attachment *x = a, *y = b;
	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->mod - y->mod;
}

int lora_llama_attach(lora_llama *m, const lora_adapter *a, double k, int trainable, const char *what,
                      lora_err *e)
{
	const lora_llama_config *c = &m->c;
	size_t C = c->dim, F = c->hidden_dim;
	const size_t outs[LORA_NMOD] = {m->QD, m->KVD, m->KVD, C, F, F, C};
	const size_t ins[LORA_NMOD] = {C, C, C, m->QD, C, C, F};
	if (trainable && m->gA)
		return lora_err_set(e, LORA_EINVAL, "%s: only one adapter can be trained at a time", what);
	if (a->fan_in_fan_out)
		return lora_err_set(e, LORA_EINVAL, "%s: fan_in_fan_out adapters (GPT-2 Conv1D) do not fit a Llama model",
		                    what);
	if (a->nextras)
		return lora_err_set(e, LORA_EINVAL,
		                    "%s: tensor '%s' is not a linear LoRA factor and cannot be applied at run time", what,
		                    a->extras[0].name);
	/* Check everything before changing anything. */
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		size_t blk;
		int mod;
		if (parse_module(l->name, &blk, &mod))
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: layer '%s' is not a linear module of a decoder block (q/k/v/o_proj, gate/up/down_proj)",
			                    what, l->name);
		if (blk >= c->n_layers)
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s' is not in the model (it has %zu blocks)", what,
			                    l->name, c->n_layers);
		if (l->out != outs[mod] || l->in != ins[mod])
			return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': adapter shape %zux%zu does not match the model's %zux%zu",
			                    what, l->name, l->out, l->in, outs[mod], ins[mod]);
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
	}
	attachment *na = realloc(m->atts, (m->natts + a->nlayers + 1) * sizeof *na);
	if (!na)
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	m->atts = na;
	if (trainable) {
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
	}
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		attachment *t = &m->atts[m->natts++];
		size_t blk;
		int mod;
		parse_module(l->name, &blk, &mod);
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
	size_t nb = c->n_layers * LORA_NMOD;
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

static void rope_tables(lora_llama *m)
{
	const lora_llama_config *c = &m->c;
	size_t half = c->head_dim / 2, T = m->T;
	/* As Hugging Face computes them, in float32: inv_freq from
	 * theta^(2i/d), adjusted by the scaling rule; angle = t * inv_freq. */
	for (size_t i = 0; i < half; i++) {
		float expo = (float)(2 * i) / (float)c->head_dim;
		float f = 1.0f / powf((float)c->rope_theta, expo);
		if (c->rope_type == LORA_ROPE_LINEAR) {
			f = f / (float)c->rope_factor;
		} else if (c->rope_type == LORA_ROPE_LLAMA3) {
			float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq, hi = (float)c->rope_high_freq;
			float old = (float)c->rope_orig_max;
			float low_wavelen = old / lo, high_wavelen = old / hi;
			float wavelen = 2.0f * (float)M_PI / f;
			float g = wavelen > low_wavelen ? f / factor : f;
			if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
				float smooth = (old / wavelen - lo) / (hi - lo);
				g = (1.0f - smooth) * g / factor + smooth * g;
			}
			f = g;
		}
		for (size_t t = 0; t < T; t++) {
			float ang = (float)t * f;
			m->rope_cos[t * half + i] = cosf(ang);
			m->rope_sin[t * half + i] = sinf(ang);
		}
	}
}

int lora_llama_plan(lora_llama *m, size_t B, size_t T, int flags, lora_err *e)
{
	const lora_llama_config *c = &m->c;
	size_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, L = c->n_layers, NH = c->n_heads;
	size_t BT;
	free_plan(m);
	if (B == 0 || T == 0 || lora_shape_mul(B, T, &BT) || BT > ((size_t)1 << 31) / 16)
		return lora_err_set(e, LORA_EUSAGE, "batch %zu x sequence %zu is out of range", B, T);
	int train = flags & LORA_LLAMA_TRAIN, recompute = train && (flags & LORA_LLAMA_RECOMPUTE);
	int nthr = lora_blas_threads();
	size_t chunk = LOGIT_FLOATS / V;
	if (chunk >= 16)
		chunk &= ~(size_t)15;
	if (chunk < 1)
		chunk = 1;
	if (chunk > BT)
		chunk = BT;
	size_t nres = train ? L + 1 : 1, nslots = train && !recompute ? (L ? L : 1) : 1;
	size_t wmax = C > m->QD ? C : m->QD;
	if (F > wmax)
		wmax = F;
	size_t r = m->rmax ? m->rmax : 1, half = c->head_dim / 2;
	size_t qb = T < QB ? T : QB;
	/* Sizes in floats, in carving order. */
	double need = 0;
	need += (double)nres * up16(BT * C);
	need += (double)nslots * (up16(BT) * 2 + up16(BT * m->QKV) + up16(BT * m->QD) + up16(B * NH * T) +
	                          (train ? up16(BT * C) : 0) + up16(BT * 2 * F));
	need += up16(BT * C) + up16(BT * F) + 2.0 * up16(BT * r) + 2.0 * up16(T * half);
	need += (double)nthr * up16(2 * qb * T) + up16(chunk * V) + up16(chunk * 2) + up16(BT * C) + up16(BT) +
	        up16(B * V);
	if (train)
		need += 2.0 * up16(BT * wmax) + up16(BT * C) /* dlnf */ + up16(BT * C) * 2 + up16(BT * m->QKV) +
		        up16(BT * m->QD) + up16(BT * 2 * F) + up16(BT * F) + up16(B * NH * T);
	if (need * 4 > (double)SIZE_MAX / 4)
		return lora_err_set(e, LORA_ENOMEM, "batch %zu x sequence %zu needs too much memory", B, T);
	size_t nacts = (size_t)need;
	m->acts = aligned_alloc(64, nacts * sizeof(float));
	m->res = calloc(L + 1, sizeof *m->res);
	m->slots = calloc(nslots, sizeof *m->slots);
	if (!m->acts || !m->res || !m->slots) {
		free_plan(m);
		return lora_err_set(e, LORA_ENOMEM, "out of memory for activations (%.0f MiB)", need * 4 / 1048576);
	}
	m->nacts = nacts;
	m->B = B, m->T = T, m->flags = flags, m->nthr = nthr, m->nslots = nslots, m->chunk = chunk;
	m->Tn = T, m->pos = 0;
	float *p = m->acts;
#define CARVE(dst, n) (dst = p, p += up16(n))
	for (size_t i = 0; i <= L; i++) {
		if (i < nres)
			CARVE(m->res[i], BT * C);
		else
			m->res[i] = m->res[0];
	}
	for (size_t i = 0; i < nslots; i++) {
		slot *s = &m->slots[i];
		CARVE(s->rstd1, BT);
		CARVE(s->rstd2, BT);
		CARVE(s->qkv, BT * m->QKV);
		CARVE(s->att, BT * m->QD);
		CARVE(s->lse, B * NH * T);
		if (train)
			CARVE(s->xmid, BT * C);
		CARVE(s->gu, BT * 2 * F);
	}
	CARVE(m->ln, BT * C);
	CARVE(m->h, BT * F);
	CARVE(m->u, BT * r);
	CARVE(m->u2, BT * r);
	CARVE(m->rope_cos, T * half);
	CARVE(m->rope_sin, T * half);
	CARVE(m->attn_scratch, (size_t)nthr * 2 * qb * T);
	CARVE(m->logits, chunk * V);
	m->rowloss = (double *)p;
	p += up16(chunk * 2);
	CARVE(m->lnf_out, BT * C);
	CARVE(m->rstdf, BT);
	CARVE(m->last_logits, B * V);
	m->xd = m->tmp = m->dlnf = m->dres = m->dln = m->dqkv = m->datt = m->dgu = m->dh = m->Dsum = NULL;
	if (train) {
		CARVE(m->xd, BT * wmax);
		CARVE(m->tmp, BT * wmax);
		CARVE(m->dlnf, BT * C);
		CARVE(m->dres, BT * C);
		CARVE(m->dln, BT * C);
		CARVE(m->dqkv, BT * m->QKV);
		CARVE(m->datt, BT * m->QD);
		CARVE(m->dgu, BT * 2 * F);
		CARVE(m->dh, BT * F);
		CARVE(m->Dsum, B * NH * T);
	}
#undef CARVE
	rope_tables(m);
	return 0;
}

size_t lora_llama_activation_bytes(const lora_llama *m) { return m->nacts * sizeof(float); }

/* ---- kernels ---- */

/* Parallelise a loop over rows only when there is enough work. */
#define PAR_IF(n) if ((n) > 16384)

// out (N,C), inp (N) token ids, wte (V,C)
static void embedding_forward(float *out, const int32_t *inp, const float *wte, size_t N, size_t C)
{
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++)
		memcpy(out + i * C, wte + (size_t)inp[i] * C, C * sizeof(float));
}

// out (N,C), rstd (N), inp (N,C), weight (C)
static void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, size_t N, size_t C,
                            float eps)
{
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++) {
		const float *x = inp + i * C;
		float *o = out + i * C, ss = 0;
#pragma omp simd reduction(+ : ss)
		for (size_t j = 0; j < C; j++)
			ss += x[j] * x[j];
		float r = 1.0f / sqrtf(ss / (float)C + eps);
#pragma omp simd
		for (size_t j = 0; j < C; j++)
			o[j] = x[j] * r * weight[j];
		if (rstd)
			rstd[i] = r;
	}
}

// out (N,C), inp (N,C), weight (C), rstd (N): recompute the normalised rows
static void rmsnorm_apply(float *out, const float *inp, const float *weight, const float *rstd, size_t N, size_t C)
{
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++) {
		const float *x = inp + i * C;
		float *o = out + i * C, r = rstd[i];
#pragma omp simd
		for (size_t j = 0; j < C; j++)
			o[j] = x[j] * r * weight[j];
	}
}

// dinp (N,C) +=, dout (N,C), inp (N,C), weight (C), rstd (N)
static void rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                             const float *rstd, size_t N, size_t C)
{
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++) {
		const float *x = inp + i * C, *d = dout + i * C;
		float *dx = dinp + i * C, r = rstd[i], dot = 0;
#pragma omp simd reduction(+ : dot)
		for (size_t j = 0; j < C; j++)
			dot += d[j] * weight[j] * x[j];
		float k = dot * r * r * r / (float)C;
#pragma omp simd
		for (size_t j = 0; j < C; j++)
			dx[j] += r * weight[j] * d[j] - k * x[j];
	}
}

/* Rotate-half RoPE on the q and k heads of each row, in place, at
 * positions pos0 .. pos0+T-1. qkv (B*T, QKV), cos/sin (positions, HD/2);
 * dir = 1 forward, -1 backward (the transpose rotation, for gradients). */
static void rope_apply(float *qkv, const float *cosv, const float *sinv, size_t B, size_t T, size_t pos0,
                       size_t QKV, size_t nheads, size_t HD, float dir)
{
	size_t half = HD / 2, N = B * T;
#pragma omp parallel for PAR_IF(N * nheads * HD)
	for (size_t i = 0; i < N; i++) {
		size_t t = pos0 + i % T;
		const float *cs = cosv + t * half, *sn = sinv + t * half;
		for (size_t h = 0; h < nheads; h++) {
			float *x = qkv + i * QKV + h * HD;
#pragma omp simd
			for (size_t j = 0; j < half; j++) {
				float a = x[j], b = x[j + half], s = dir * sn[j];
				x[j] = a * cs[j] - b * s;
				x[j + half] = b * cs[j] + a * s;
			}
		}
	}
}

typedef struct {
	size_t B, T, NH, NKV, HD, QKV, QD, KVD, window;
	float scale;
} attn_dims;

/* Valid keys of query t: [key_lo, t]. */
static inline size_t key_lo(size_t t, size_t window) { return window && t + 1 > window ? t + 1 - window : 0; }

/* Causal (optionally windowed) grouped-query attention, one QB-row block
 * of queries at a time: S = Q K^T * scale over the keys the block can see,
 * softmax per row, O = P V. Only the log-sum-exp of each row is kept.
 * att (B*T, QD), lse (B, NH, T), qkv (B*T, QKV); scratch: per thread,
 * stride floats (>= QB*T). */
static void attention_forward(float *att, float *lse, const float *qkv, float *scratch, size_t stride,
                              const attn_dims *d, int nthr)
{
	size_t B = d->B, T = d->T, NH = d->NH, HD = d->HD, QKV = d->QKV, QD = d->QD, G = NH / d->NKV;
	long ntask = (long)(B * NH);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t b = (size_t)task / NH, h = (size_t)task % NH, g = h / G;
		float *S = scratch + (size_t)omp_get_thread_num() * stride;
		const float *base = qkv + b * T * QKV;
		const float *Q = base + h * HD, *K = base + QD + g * HD, *Vv = base + QD + d->KVD + g * HD;
		float *O = att + b * T * QD + h * HD, *L = lse + (b * NH + h) * T;
		for (size_t i0 = 0; i0 < T; i0 += QB) {
			size_t n = T - i0 < QB ? T - i0 : QB, k0 = key_lo(i0, d->window), kl = i0 + n - k0;
			lora_blas_sgemm_serial(0, 1, n, kl, HD, d->scale, Q + i0 * QKV, QKV, K + k0 * QKV, QKV, 0, S, kl);
			for (size_t r = 0; r < n; r++) {
				size_t t = i0 + r;
				L[t] = softmax_row(S + r * kl, key_lo(t, d->window) - k0, t - k0 + 1, kl);
			}
			lora_blas_sgemm_serial(0, 0, n, HD, kl, 1, S, kl, Vv + k0 * QKV, QKV, 0, O + i0 * QD, QD);
		}
	}
}

/* Backward of attention_forward, recomputing each block's probabilities
 * from the log-sum-exp. dqkv (B*T, QKV): dq written, dk and dv accumulated
 * (zero them first); datt (B*T, QD), att, lse, qkv as in forward; Dsum
 * (B, NH, T) scratch. One task per (row, kv head) so that no two threads
 * write the same dk/dv. scratch: per thread, stride floats (>= 2*QB*T). */
static void attention_backward(float *dqkv, const float *datt, const float *att, const float *lse,
                               const float *qkv, float *Dsum, float *scratch, size_t stride, const attn_dims *d,
                               int nthr)
{
	size_t B = d->B, T = d->T, NH = d->NH, NKV = d->NKV, HD = d->HD, QKV = d->QKV, QD = d->QD, G = NH / NKV;
	long ntask = (long)(B * NKV);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t b = (size_t)task / NKV, g = (size_t)task % NKV;
		/* Blocks have at most min(T, QB) rows: the scratch is sized for that. */
		float *S = scratch + (size_t)omp_get_thread_num() * stride, *dP = S + (T < QB ? T : QB) * T;
		const float *base = qkv + b * T * QKV;
		const float *K = base + QD + g * HD, *Vv = base + QD + d->KVD + g * HD;
		float *dbase = dqkv + b * T * QKV;
		float *dK = dbase + QD + g * HD, *dV = dbase + QD + d->KVD + g * HD;
		for (size_t h = g * G; h < (g + 1) * G; h++) {
			const float *Q = base + h * HD, *O = att + b * T * QD + h * HD, *dO = datt + b * T * QD + h * HD;
			const float *L = lse + (b * NH + h) * T;
			float *dQ = dbase + h * HD, *D = Dsum + (b * NH + h) * T;
			for (size_t t = 0; t < T; t++) {
				float s = 0;
				const float *o = O + t * QD, *dO_t = dO + t * QD;
#pragma omp simd reduction(+ : s)
				for (size_t j = 0; j < HD; j++)
					s += o[j] * dO_t[j];
				D[t] = s;
			}
			for (size_t i0 = 0; i0 < T; i0 += QB) {
				size_t n = T - i0 < QB ? T - i0 : QB, k0 = key_lo(i0, d->window), kl = i0 + n - k0;
				lora_blas_sgemm_serial(0, 1, n, kl, HD, d->scale, Q + i0 * QKV, QKV, K + k0 * QKV, QKV, 0, S, kl);
				for (size_t r = 0; r < n; r++) {
					size_t t = i0 + r;
					softmax_recompute_row(S + r * kl, key_lo(t, d->window) - k0, t - k0 + 1, kl, L[t]);
				}
				// dV += P^T dO; dP = dO V^T
				lora_blas_sgemm_serial(1, 0, kl, HD, n, 1, S, kl, dO + i0 * QD, QD, 1, dV + k0 * QKV, QKV);
				lora_blas_sgemm_serial(0, 1, n, kl, HD, 1, dO + i0 * QD, QD, Vv + k0 * QKV, QKV, 0, dP, kl);
				for (size_t r = 0; r < n; r++) {
					float *s = S + r * kl, *dp = dP + r * kl, Dt = D[i0 + r];
#pragma omp simd
					for (size_t j = 0; j < kl; j++)
						dp[j] = s[j] * (dp[j] - Dt);
				}
				// dQ = scale dS K; dK += scale dS^T Q
				lora_blas_sgemm_serial(0, 0, n, HD, kl, d->scale, dP, kl, K + k0 * QKV, QKV, 0, dQ + i0 * QKV, QKV);
				lora_blas_sgemm_serial(1, 0, kl, HD, n, d->scale, dP, kl, Q + i0 * QKV, QKV, 1, dK + k0 * QKV, QKV);
			}
		}
	}
}

/* Attention of T new positions per row (pos .. pos+T-1) over every cached
 * position up to each: their keys and values are first stored into the
 * caches. att (B*T, QD), qkv (B*T, QKV) after RoPE; kc, vc (B, maxT, KVD). */
static void attention_decode(float *att, const float *qkv, float *kc, float *vc, float *scratch, size_t stride,
                             const attn_dims *d, size_t pos, size_t maxT, int nthr)
{
	size_t B = d->B, T = d->T, NH = d->NH, HD = d->HD, QKV = d->QKV, QD = d->QD, KVD = d->KVD, G = NH / d->NKV;
	for (size_t b = 0; b < B; b++)
		for (size_t t = 0; t < T; t++) {
			memcpy(kc + (b * maxT + pos + t) * KVD, qkv + (b * T + t) * QKV + QD, KVD * sizeof(float));
			memcpy(vc + (b * maxT + pos + t) * KVD, qkv + (b * T + t) * QKV + QD + KVD, KVD * sizeof(float));
		}
	long ntask = (long)(B * NH);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t b = (size_t)task / NH, h = (size_t)task % NH, g = h / G;
		float *S = scratch + (size_t)omp_get_thread_num() * stride;
		const float *Q = qkv + b * T * QKV + h * HD;
		const float *K = kc + b * maxT * KVD + g * HD, *Vv = vc + b * maxT * KVD + g * HD;
		float *O = att + b * T * QD + h * HD;
		for (size_t i0 = 0; i0 < T; i0 += QB) {
			size_t n = T - i0 < QB ? T - i0 : QB, k0 = key_lo(pos + i0, d->window), kl = pos + i0 + n - k0;
			lora_blas_sgemm_serial(0, 1, n, kl, HD, d->scale, Q + i0 * QKV, QKV, K + k0 * KVD, KVD, 0, S, kl);
			for (size_t r = 0; r < n; r++) {
				size_t t = pos + i0 + r;
				softmax_row(S + r * kl, key_lo(t, d->window) - k0, t - k0 + 1, kl);
			}
			lora_blas_sgemm_serial(0, 0, n, HD, kl, 1, S, kl, Vv + k0 * KVD, KVD, 0, O + i0 * QD, QD);
		}
	}
}

// h (N,F), gu (N,2F): h = silu(gate) * up
static void swiglu_forward(float *h, const float *gu, size_t N, size_t F)
{
#pragma omp parallel for PAR_IF(N * F)
	for (size_t i = 0; i < N; i++)
		swiglu_row(h + i * F, gu + i * 2 * F, gu + i * 2 * F + F, F);
}

// dgu (N,2F) =, dh (N,F), gu (N,2F). Written, not accumulated: it is the
// only path to gate and up, and skipping a memset of (N,2F) pays.
static void swiglu_backward(float *dgu, const float *dh, const float *gu, size_t N, size_t F)
{
#pragma omp parallel for PAR_IF(N * F)
	for (size_t i = 0; i < N; i++)
		swiglu_backward_row(dgu + i * 2 * F, dgu + i * 2 * F + F, dh + i * F, gu + i * 2 * F, gu + i * 2 * F + F, F);
}

// y (N, ldy) += bias (n) on the first n columns of each row
static void add_bias(float *y, size_t ldy, const float *bias, float s, size_t N, size_t n)
{
#pragma omp parallel for PAR_IF(N * n)
	for (size_t i = 0; i < N; i++) {
		float *row = y + i * ldy;
#pragma omp simd
		for (size_t j = 0; j < n; j++)
			row[j] += s * bias[j];
	}
}

/* ---- LoRA dropout: a hash of the element's coordinates ---- */

static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline int dropout_keep(uint64_t key, size_t idx, uint32_t thresh)
{
	return (uint32_t)(mix64(key + (uint64_t)idx * 0x9e3779b97f4a7c15ull) >> 40) >= thresh;
}

static uint64_t dropout_key(const lora_llama *m, size_t blk, int mod)
{
	return mix64(m->dropout_seed ^ mix64(((uint64_t)blk << 8 | (uint64_t)mod) + 0x5851f42d4c957f2dull));
}

// out (N,C) = x (N,C) * mask / (1-p)   (mode 0), or out += x * mask / (1-p)   (mode 1)
static void dropout_apply(float *out, const float *x, size_t N, size_t C, uint64_t key, float p, int accumulate)
{
	uint32_t thresh = (uint32_t)((double)p * 16777216.0);
	float inv = 1.0f / (1.0f - p);
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++)
		for (size_t j = 0; j < C; j++) {
			float v = dropout_keep(key, i * C + j, thresh) ? x[i * C + j] * inv : 0.0f;
			if (accumulate)
				out[i * C + j] += v;
			else
				out[i * C + j] = v;
		}
}

/* ---- adapted linear layers ---- */

static int dropping(const lora_llama *m, const attachment *a) { return a->trainable && m->dropout > 0; }

/* y (N, ldy) += sum over the attachments of (blk, mod): s B A d(x).
 * x (N, in). train: apply dropout to the trainable adapter. */
static void lora_forward(lora_llama *m, size_t blk, int mod, const float *x, float *y, size_t ldy, int train)
{
	size_t N = m->B * m->Tn;
	for (size_t i = m->first[blk * LORA_NMOD + mod]; i < m->first[blk * LORA_NMOD + mod + 1]; i++) {
		const attachment *a = &m->atts[i];
		const float *xi = x;
		if (train && dropping(m, a)) {
			dropout_apply(m->xd, x, N, a->in, dropout_key(m, blk, mod), m->dropout, 0);
			xi = m->xd;
		}
		lora_blas_sgemm(0, 1, N, a->r, a->in, 1, xi, a->in, a->A, a->in, 0, m->u, a->r);
		lora_blas_sgemm(0, 1, N, a->out, a->r, a->s, m->u, a->r, a->B, a->r, 1, y, ldy);
		if (a->bias)
			add_bias(y, ldy, a->bias, a->s, N, a->out);
	}
}

/* Backward of lora_forward: factor gradients of the trainable attachment
 * (+=) and, when dx is given, dx (N, in) += d loss / d x through every
 * attachment. dy (N, ldy). */
static void lora_backward(lora_llama *m, size_t blk, int mod, const float *x, const float *dy, size_t ldy,
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
		// du = s dy B   (N, r)
		lora_blas_sgemm(0, 0, N, a->r, a->out, a->s, dy, ldy, a->B, a->r, 0, m->u, a->r);
		if (a->trainable) {
			if (drop) {
				dropout_apply(m->xd, x, N, a->in, key, m->dropout, 0);
				xi = m->xd;
			}
			// u = d(x) A^T recomputed; dB += s dy^T u; dA += du^T d(x)
			lora_blas_sgemm(0, 1, N, a->r, a->in, 1, xi, a->in, a->A, a->in, 0, m->u2, a->r);
			lora_blas_sgemm(1, 0, a->out, a->r, N, a->s, dy, ldy, m->u2, a->r, 1, a->dB, a->r);
			lora_blas_sgemm(1, 0, a->r, a->in, N, 1, m->u, a->r, xi, a->in, 1, a->dA, a->in);
		}
		if (dx) {
			if (drop) {
				lora_blas_sgemm(0, 0, N, a->in, a->r, 1, m->u, a->r, a->A, a->in, 0, m->tmp, a->in);
				dropout_apply(dx, m->tmp, N, a->in, key, m->dropout, 1);
			} else {
				lora_blas_sgemm(0, 0, N, a->in, a->r, 1, m->u, a->r, a->A, a->in, 1, dx, a->in);
			}
		}
	}
}

/* ---- blocks ---- */

static attn_dims dims(const lora_llama *m, size_t blk)
{
	const lora_llama_config *c = &m->c;
	attn_dims d = {m->B, m->Tn, c->n_heads, c->n_kv_heads, c->head_dim, m->QKV, m->QD, m->KVD,
	               m->blocks[blk].window, (float)(1.0 / sqrt((double)c->head_dim))};
	return d;
}

static size_t scratch_stride(const lora_llama *m) { return up16(2 * (m->T < QB ? m->T : QB) * m->T); }

/* Block l: xin -> xout through slot s. xmid may equal xin and xout may
 * equal xmid (in place, eval). skip_down: stop after the MLP activation
 * (recomputation for backward needs nothing later). */
static void block_forward(lora_llama *m, size_t l, slot *s, const float *xin, float *xmid, float *xout, int train,
                          int skip_down)
{
	const lora_llama_config *c = &m->c;
	const block *w = &m->blocks[l];
	size_t N = m->B * m->Tn, C = c->dim, F = c->hidden_dim, QKV = m->QKV, QD = m->QD;
	attn_dims d = dims(m, l);
	// attention
	rmsnorm_forward(m->ln, s->rstd1, xin, w->ln1, N, C, (float)c->rms_eps);
	lora_blas_sgemm(0, 1, N, QKV, C, 1, m->ln, C, w->wqkv, C, 0, s->qkv, QKV);
	if (w->bqkv)
		add_bias(s->qkv, QKV, w->bqkv, 1, N, QKV);
	lora_forward(m, l, LORA_MOD_Q, m->ln, s->qkv, QKV, train);
	lora_forward(m, l, LORA_MOD_K, m->ln, s->qkv + QD, QKV, train);
	lora_forward(m, l, LORA_MOD_V, m->ln, s->qkv + QD + m->KVD, QKV, train);
	rope_apply(s->qkv, m->rope_cos, m->rope_sin, m->B, m->Tn, m->pos, QKV, c->n_heads + c->n_kv_heads, c->head_dim,
	           1);
	if (m->kc)
		attention_decode(s->att, s->qkv, m->kc[l], m->vc[l], m->attn_scratch, scratch_stride(m), &d, m->pos, m->T,
		                 m->nthr);
	else
		attention_forward(s->att, s->lse, s->qkv, m->attn_scratch, scratch_stride(m), &d, m->nthr);
	if (xmid != xin)
		memcpy(xmid, xin, N * C * sizeof(float));
	lora_blas_sgemm(0, 1, N, C, QD, 1, s->att, QD, w->wo, QD, 1, xmid, C);
	if (w->bo)
		add_bias(xmid, C, w->bo, 1, N, C);
	lora_forward(m, l, LORA_MOD_O, s->att, xmid, C, train);
	// MLP
	rmsnorm_forward(m->ln, s->rstd2, xmid, w->ln2, N, C, (float)c->rms_eps);
	lora_blas_sgemm(0, 1, N, 2 * F, C, 1, m->ln, C, w->wgu, C, 0, s->gu, 2 * F);
	if (w->bgu)
		add_bias(s->gu, 2 * F, w->bgu, 1, N, 2 * F);
	lora_forward(m, l, LORA_MOD_GATE, m->ln, s->gu, 2 * F, train);
	lora_forward(m, l, LORA_MOD_UP, m->ln, s->gu + F, 2 * F, train);
	if (skip_down)
		return;
	swiglu_forward(m->h, s->gu, N, F);
	if (xout != xmid)
		memcpy(xout, xmid, N * C * sizeof(float));
	lora_blas_sgemm(0, 1, N, C, F, 1, m->h, F, w->wd, F, 1, xout, C);
	if (w->bd)
		add_bias(xout, C, w->bd, 1, N, C);
	lora_forward(m, l, LORA_MOD_DOWN, m->h, xout, C, train);
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
	const lora_llama_config *c = &m->c;
	const block *w = &m->blocks[l];
	size_t N = m->B * m->T, C = c->dim, F = c->hidden_dim, QKV = m->QKV, QD = m->QD;
	attn_dims d = dims(m, l);
	// MLP: xout = xmid + down(h); h is only needed for down's own factors
	if (trainable_in(m, l, LORA_MOD_DOWN))
		swiglu_forward(m->h, s->gu, N, F);
	if (depth >= 2)
		lora_blas_sgemm(0, 0, N, F, C, 1, dres, C, w->wd, F, 0, m->dh, F);
	lora_backward(m, l, LORA_MOD_DOWN, m->h, dres, C, depth >= 2 ? m->dh : NULL);
	if (depth < 2)
		return;
	swiglu_backward(m->dgu, m->dh, s->gu, N, F);
	rmsnorm_apply(m->ln, s->xmid, w->ln2, s->rstd2, N, C);
	if (depth >= 3)
		lora_blas_sgemm(0, 0, N, C, 2 * F, 1, m->dgu, 2 * F, w->wgu, C, 0, m->dln, C);
	lora_backward(m, l, LORA_MOD_GATE, m->ln, m->dgu, 2 * F, depth >= 3 ? m->dln : NULL);
	lora_backward(m, l, LORA_MOD_UP, m->ln, m->dgu + F, 2 * F, depth >= 3 ? m->dln : NULL);
	if (depth < 3)
		return;
	rmsnorm_backward(dres, m->dln, s->xmid, w->ln2, s->rstd2, N, C);
	// attention: xmid = xin + o(att)
	if (depth >= 4)
		lora_blas_sgemm(0, 0, N, QD, C, 1, dres, C, w->wo, QD, 0, m->datt, QD);
	lora_backward(m, l, LORA_MOD_O, s->att, dres, C, depth >= 4 ? m->datt : NULL);
	if (depth < 4)
		return;
	memset(m->dqkv, 0, N * QKV * sizeof(float));
	attention_backward(m->dqkv, m->datt, s->att, s->lse, s->qkv, m->Dsum, m->attn_scratch, scratch_stride(m), &d,
	                   m->nthr);
	rope_apply(m->dqkv, m->rope_cos, m->rope_sin, m->B, m->T, 0, QKV, c->n_heads + c->n_kv_heads, c->head_dim, -1);
	rmsnorm_apply(m->ln, xin, w->ln1, s->rstd1, N, C);
	float *dln = depth >= 5 ? m->dln : NULL;
	if (dln)
		lora_blas_sgemm(0, 0, N, C, QKV, 1, m->dqkv, QKV, w->wqkv, C, 0, dln, C);
	lora_backward(m, l, LORA_MOD_Q, m->ln, m->dqkv, QKV, dln);
	lora_backward(m, l, LORA_MOD_K, m->ln, m->dqkv + QD, QKV, dln);
	lora_backward(m, l, LORA_MOD_V, m->ln, m->dqkv + QD + m->KVD, QKV, dln);
	if (dln)
		rmsnorm_backward(dres, dln, xin, w->ln1, s->rstd1, N, C);
}

/* ---- the head and the loss ---- */

/* Rows of logits (n, V) -> per-row loss in rowloss (n); with gscale != 0,
 * logits become d loss / d logits = gscale * (softmax - onehot) in place.
 * A negative target contributes nothing. */
static void crossentropy_forward(float *logits, double *rowloss, const int32_t *targets, size_t n, size_t V,
                                 float gscale)
{
#pragma omp parallel for schedule(static) PAR_IF(n * V)
	for (size_t i = 0; i < n; i++) {
		float *l = logits + i * V;
		if (targets[i] < 0) {
			rowloss[i] = 0;
			if (gscale != 0)
				memset(l, 0, V * sizeof(float));
		} else {
			rowloss[i] = crossentropy_row(l, V, targets[i], gscale);
		}
	}
}

/* ---- forward and backward ---- */

int lora_llama_forward(lora_llama *m, const int32_t *inputs, const int32_t *targets, double *loss, size_t *ntargets,
                       lora_err *e)
{
	const lora_llama_config *c = &m->c;
	if (!m->acts)
		return lora_err_set(e, LORA_EINVAL, "forward before plan");
	if (m->kc)
		return lora_err_set(e, LORA_EINVAL, "forward on a decode plan: use lora_llama_decode");
	size_t B = m->B, T = m->T, N = B * T, C = c->dim, V = c->vocab_size, L = c->n_layers;
	int train = (m->flags & LORA_LLAMA_TRAIN) != 0, recompute = (m->flags & LORA_LLAMA_RECOMPUTE) != 0;
	size_t count = 0;
	m->ready = 0;
	for (size_t i = 0; i < N; i++) {
		if (inputs[i] < 0 || (size_t)inputs[i] >= V)
			return lora_err_set(e, LORA_EINVAL, "input token %ld at row %zu, position %zu is outside [0, %zu)",
			                    (long)inputs[i], i / T, i % T, V);
		if (targets && targets[i] >= 0 && (size_t)targets[i] >= V)
			return lora_err_set(e, LORA_EINVAL, "target token %ld at row %zu, position %zu is >= vocab_size %zu",
			                    (long)targets[i], i / T, i % T, V);
		count += targets && targets[i] >= 0;
	}
	embedding_forward(m->res[0], inputs, m->embed, N, C);
	for (size_t l = 0; l < L; l++) {
		slot *s = &m->slots[train && !recompute ? l : 0];
		float *xout = m->res[l + 1];
		block_forward(m, l, s, m->res[l], train ? s->xmid : xout, xout, train, 0);
	}
	const float *top = m->res[L];
	if (!targets) {
		for (size_t b = 0; b < B; b++)
			rmsnorm_forward(m->lnf_out + b * C, NULL, top + (b * T + T - 1) * C, m->lnf, 1, C, (float)c->rms_eps);
		lora_blas_sgemm(0, 1, B, V, C, 1, m->lnf_out, C, m->head, C, 0, m->last_logits, V);
		if (loss)
			*loss = 0;
		if (ntargets)
			*ntargets = 0;
		return 0;
	}
	rmsnorm_forward(m->lnf_out, m->rstdf, top, m->lnf, N, C, (float)c->rms_eps);
	float gscale = train && count ? 1.0f / (float)count : 0;
	double sum = 0;
	for (size_t i0 = 0; i0 < N; i0 += m->chunk) {
		size_t n = N - i0 < m->chunk ? N - i0 : m->chunk;
		lora_blas_sgemm(0, 1, n, V, C, 1, m->lnf_out + i0 * C, C, m->head, C, 0, m->logits, V);
		crossentropy_forward(m->logits, m->rowloss, targets + i0, n, V, gscale);
		for (size_t i = 0; i < n; i++)
			sum += m->rowloss[i];
		if (train) {
			if (count)
				lora_blas_sgemm(0, 0, n, C, V, 1, m->logits, V, m->head, C, 0, m->dlnf + i0 * C, C);
			else
				memset(m->dlnf + i0 * C, 0, n * C * sizeof(float));
		}
	}
	if (loss)
		*loss = count ? sum / (double)count : 0;
	if (ntargets)
		*ntargets = count;
	m->ready = train;
	return 0;
}

const float *lora_llama_logits(const lora_llama *m) { return m->last_logits; }

int lora_llama_backward(lora_llama *m, lora_err *e)
{
	const lora_llama_config *c = &m->c;
	if (!m->ready)
		return lora_err_set(e, LORA_EINVAL, "backward needs a training forward with targets first");
	if (m->lowest < 0)
		return 0;
	size_t N = m->B * m->T, C = c->dim, L = c->n_layers;
	int recompute = (m->flags & LORA_LLAMA_RECOMPUTE) != 0;
	memset(m->dres, 0, N * C * sizeof(float));
	rmsnorm_backward(m->dres, m->dlnf, m->res[L], m->lnf, m->rstdf, N, C);
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
	const lora_llama_config *c = &m->c;
	size_t L = c->n_layers, n;
	int rc = lora_llama_plan(m, B, maxT, 0, e);
	if (rc)
		return rc;
	if (lora_shape_mul(B * maxT, m->KVD, &n) || !(m->kc = calloc(2 * (L ? L : 1), sizeof *m->kc))) {
		free_plan(m);
		return lora_err_set(e, LORA_ENOMEM, "out of memory for the key/value cache");
	}
	m->vc = m->kc + L;
	/* One allocation beside the activation arena, carved per block. */
	float *cache = aligned_alloc(64, (2 * L * up16(n) + ALIGN_FLOATS) * sizeof(float));
	if (!cache) {
		free_plan(m);
		return lora_err_set(e, LORA_ENOMEM, "out of memory for the key/value cache (%zu floats)", 2 * L * n);
	}
	for (size_t l = 0; l < L; l++) {
		m->kc[l] = cache + 2 * l * up16(n);
		m->vc[l] = cache + (2 * l + 1) * up16(n);
	}
	m->cache = cache;
	m->Tn = 0;
	return 0;
}

int lora_llama_decode(lora_llama *m, const int32_t *tokens, size_t n, size_t pos, lora_err *e)
{
	const lora_llama_config *c = &m->c;
	if (!m->kc)
		return lora_err_set(e, LORA_EINVAL, "decode before lora_llama_plan_decode");
	size_t B = m->B, C = c->dim, V = c->vocab_size, L = c->n_layers;
	if (n == 0 || pos > m->T || n > m->T - pos)
		return lora_err_set(e, LORA_EINVAL, "positions %zu..%zu are outside the cache of %zu", pos, pos + n, m->T);
	for (size_t i = 0; i < B * n; i++)
		if (tokens[i] < 0 || (size_t)tokens[i] >= V)
			return lora_err_set(e, LORA_EINVAL, "input token %ld at row %zu, position %zu is outside [0, %zu)",
			                    (long)tokens[i], i / n, pos + i % n, V);
	m->Tn = n, m->pos = pos;
	float *x = m->res[0];
	embedding_forward(x, tokens, m->embed, B * n, C);
	for (size_t l = 0; l < L; l++)
		block_forward(m, l, &m->slots[0], x, x, x, 0, 0);
	for (size_t b = 0; b < B; b++)
		rmsnorm_forward(m->lnf_out + b * C, NULL, x + (b * n + n - 1) * C, m->lnf, 1, C, (float)c->rms_eps);
	lora_blas_sgemm(0, 1, B, V, C, 1, m->lnf_out, C, m->head, C, 0, m->last_logits, V);
	return 0;
}

/* ---- accounting ---- */

double lora_llama_flops_per_token(const lora_llama *m, size_t T, int training)
{
	const lora_llama_config *c = &m->c;
	double C = (double)c->dim, F = (double)c->hidden_dim, V = (double)c->vocab_size, QD = (double)m->QD,
	       QKV = (double)m->QKV, HD = (double)c->head_dim, NH = (double)c->n_heads;
	double fwd = 2 * C * V, bwd = m->lowest >= 0 ? 2 * C * V : 0;
	for (size_t l = 0; l < c->n_layers; l++) {
		/* Keys seen per query, averaged over positions 0..T-1. */
		double ctx = 0;
		for (size_t t = 0; t < T; t++)
			ctx += (double)(t + 1 - key_lo(t, m->blocks[l].window));
		ctx /= (double)(T ? T : 1);
		double attn = NH * 4 * HD * ctx;
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
