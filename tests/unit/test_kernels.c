/* Unit tests of the transformer's kernels (lib/model/kernels.h), one at a
 * time:
 * - each forward against a naive twin written here in double precision
 *   (plain loops, no BLAS, its own formulas), compared with a tolerance;
 * - each backward against central differences of that forward in double,
 *   coordinate by coordinate, at two step sizes that must agree with each
 *   other (so that the reference itself is trustworthy) and combined by
 *   Richardson extrapolation; the tolerance has a relative part and an
 *   absolute floor;
 * - backward kernels that accumulate are started from non-zero gradients.
 * Each line "# <kernel> ..." reports the worst error seen, as a fraction of
 * the tolerance. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "math/blas.h"
#include "model/kernels_internal.h"

/* Central differences of the double-precision twins: rounding of the loss
 * is ~1e-16 / FD_STEP, and Richardson's extrapolation leaves an O(h^4)
 * truncation error, both far below the tolerance of a float backward. */
#define FD_STEP 1e-3
#define FD_RTOL 1e-4
#define FD_ATOL 1e-6

static lora_rng rng;

static void fill(float *x, size_t n, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * lora_rng_uniform(&rng);
}

static float *falloc(size_t n)
{
	float *p = calloc(n ? n : 1, sizeof *p);
	if (!p) {
		printf("FAIL out of memory\n");
		exit(1);
	}
	return p;
}

static double *dalloc(size_t n)
{
	double *p = calloc(n ? n : 1, sizeof *p);
	if (!p) {
		printf("FAIL out of memory\n");
		exit(1);
	}
	return p;
}

static double tol(double a, double b, double rtol, double atol)
{
	return rtol * (fabs(a) > fabs(b) ? fabs(a) : fabs(b)) + atol;
}

/* Worst |got - want| / tolerance over n values (1 or more fails); *at the
 * index of the worst. */
static double worst_ratio(const float *got, const double *want, size_t n, double rtol, double atol, size_t *at)
{
	double w = 0;
	*at = 0;
	for (size_t i = 0; i < n; i++) {
		double r = fabs((double)got[i] - want[i]) / tol(got[i], want[i], rtol, atol);
		if (!(r <= w)) {
			w = r;
			*at = i;
		}
	}
	return w;
}

/* Compare a kernel's output with its naive twin. */
static double twin(const char *what, const float *got, const double *want, size_t n, double rtol, double atol)
{
	size_t at;
	double w = worst_ratio(got, want, n, rtol, atol, &at);
	CHECK(w <= 1, "%s: kernel %.9g vs naive %.9g at %zu (%.2f x tolerance)", what, got[at], want[at], at, w);
	return w;
}

typedef double (*loss_fn)(void *ctx);

/* d loss / d x[i] by central differences for each i (every `every`-th),
 * against the analytic grad. Returns the worst error as a fraction of the
 * tolerance. */
static double fd_check(const char *what, double *x, size_t n, size_t every, const double *grad, loss_fn loss,
                       void *ctx)
{
	double worst = 0;
	int bad = 0, unsettled = 0;
	for (size_t i = 0; i < n; i += every) {
		double x0 = x[i], fd[2];
		for (int k = 0; k < 2; k++) {
			double h = FD_STEP / (k + 1) * (1 + fabs(x0));
			x[i] = x0 + h;
			double lp = loss(ctx);
			x[i] = x0 - h;
			double lm = loss(ctx);
			fd[k] = (lp - lm) / (2 * h);
		}
		x[i] = x0;
		double num = (4 * fd[1] - fd[0]) / 3, an = grad[i];
		/* The two steps must agree before the reference means anything. */
		if (fabs(fd[0] - fd[1]) > tol(fd[0], fd[1], FD_RTOL, FD_ATOL) && unsettled++ == 0)
			printf("# %s: finite differences at %zu do not settle: %.9g (h) vs %.9g (h/2)\n", what, i, fd[0], fd[1]);
		double r = fabs(an - num) / tol(an, num, FD_RTOL, FD_ATOL);
		if (r > 1 && bad++ == 0)
			printf("# %s: d/dx[%zu]: backward %.9g, finite differences %.9g\n", what, i, an, num);
		if (r > worst)
			worst = r;
	}
	CHECK(bad == 0 && unsettled == 0, "%s: %d of %zu gradients wrong, %d references unsettled", what, bad,
	      (n + every - 1) / every, unsettled);
	return worst;
}

static double *widen(const float *x, size_t n)
{
	double *d = dalloc(n);
	for (size_t i = 0; i < n; i++)
		d[i] = x[i];
	return d;
}

/* sum_i g[i] * y[i] in double: the loss whose gradient at y is g. */
static double dot(const float *g, const double *y, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)g[i] * y[i];
	return s;
}

/* grad = after - before: what an accumulating kernel added. */
static void added(double *grad, const float *after, const float *before, size_t n)
{
	for (size_t i = 0; i < n; i++)
		grad[i] = (double)after[i] - before[i];
}

static void report(const char *kernel, double twin_w, double fd_w)
{
	printf("# %-12s naive twin %.3f, backward %.3f of the tolerance\n", kernel, twin_w, fd_w);
}

/* ---- embedding ---- */

static void test_embedding(void)
{
	enum { N = 7, C = 5, V = 9 };
	float wte[V * C], out[N * C];
	int32_t inp[N] = {3, 0, 8, 3, 1, 7, 2};
	fill(wte, V * C, -1, 1);
	lora_kernels_embedding_forward(out, inp, wte, LORA_F32, N, C);
	int same = 1;
	for (size_t i = 0; i < N; i++)
		same &= memcmp(out + i * C, wte + (size_t)inp[i] * C, C * sizeof(float)) == 0;
	CHECK(same, "embedding rows are the table's rows");
	/* a bf16 table at an odd address: its rows widened */
	unsigned char raw[V * C * 2 + 1];
	lora_dtype_from_f32(raw + 1, wte, LORA_BF16, V * C);
	lora_kernels_embedding_forward(out, inp, raw + 1, LORA_BF16, N, C);
	same = 1;
	for (size_t i = 0; i < N * C; i++)
		same &= out[i] == lora_dtype_bf16_to_f32(lora_dtype_f32_to_bf16(wte[(size_t)inp[i / C] * C + i % C]));
	CHECK(same, "bf16 embedding rows are the table's rows widened");
}

/* ---- RMSNorm ---- */

typedef struct {
	double *x, *out, *rstd;
	const float *w, *g;
	size_t N, C;
	double eps;
} rms_ctx;

static void rmsnorm_naive(rms_ctx *c)
{
	for (size_t i = 0; i < c->N; i++) {
		double ss = 0;
		for (size_t j = 0; j < c->C; j++)
			ss += c->x[i * c->C + j] * c->x[i * c->C + j];
		c->rstd[i] = 1 / sqrt(ss / (double)c->C + c->eps);
		for (size_t j = 0; j < c->C; j++)
			c->out[i * c->C + j] = c->x[i * c->C + j] * c->rstd[i] * c->w[j];
	}
}

static double rms_loss(void *p)
{
	rms_ctx *c = p;
	rmsnorm_naive(c);
	return dot(c->g, c->out, c->N * c->C);
}

static void test_rmsnorm(size_t N, size_t C)
{
	const float eps = 1e-5f;
	float *x = falloc(N * C), *w = falloc(C), *g = falloc(N * C), *out = falloc(N * C), *rstd = falloc(N);
	fill(x, N * C, -1.5f, 1.5f);
	x[C] *= 40; /* a row with one large value */
	fill(w, C, 0.5f, 1.5f);
	fill(g, N * C, -1, 1);
	lora_kernels_rmsnorm_forward(out, rstd, x, w, eps, N, C);
	rms_ctx c = {widen(x, N * C), dalloc(N * C), dalloc(N), w, g, N, C, eps};
	rmsnorm_naive(&c);
	double tw = twin("rmsnorm forward", out, c.out, N * C, 1e-6, 1e-7);
	tw = fmax(tw, twin("rmsnorm rstd", rstd, c.rstd, N, 1e-6, 0));
	float *again = falloc(N * C);
	lora_kernels_rmsnorm_recompute(again, x, w, rstd, N, C);
	CHECK(memcmp(again, out, N * C * sizeof(float)) == 0, "rmsnorm recompute gives the forward's rows");
	/* backward, accumulating onto a non-zero gradient */
	float *dx = falloc(N * C), *pre = falloc(N * C);
	double *grad = dalloc(N * C);
	fill(pre, N * C, -1, 1);
	memcpy(dx, pre, N * C * sizeof(float));
	lora_kernels_rmsnorm_backward(dx, g, x, w, rstd, N, C);
	added(grad, dx, pre, N * C);
	double fw = fd_check("rmsnorm backward", c.x, N * C, 1, grad, rms_loss, &c);
	report("rmsnorm", tw, fw);
	free(x), free(w), free(g), free(out), free(rstd), free(c.x), free(c.out), free(c.rstd), free(again), free(dx),
		free(pre), free(grad);
}

/* ---- RoPE ---- */

/* Hugging Face's inverse frequencies in double, from the formulas of
 * transformers' rope initialisation (default, linear, llama3). */
static double inv_freq(const lora_config *c, size_t i)
{
	double f = pow(c->rope_theta, -(double)(2 * i) / (double)c->head_dim);
	if (c->rope_type == LORA_ROPE_LINEAR)
		return f / c->rope_factor;
	if (c->rope_type == LORA_ROPE_LLAMA3) {
		double wavelen = 2 * M_PI / f, lo = c->rope_orig_max / c->rope_low_freq,
		       hi = c->rope_orig_max / c->rope_high_freq;
		if (wavelen < hi)
			return f;
		if (wavelen > lo)
			return f / c->rope_factor;
		double smooth = (c->rope_orig_max / wavelen - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
		return (1 - smooth) * f / c->rope_factor + smooth * f;
	}
	return f;
}

static void test_rope_tables(void)
{
	enum { T = 40, HS = 16 };
	lora_config cs[3] = {{.head_dim = HS, .rope_theta = 10000, .rope_type = LORA_ROPE_DEFAULT},
	                     {.head_dim = HS, .rope_theta = 500000, .rope_type = LORA_ROPE_LINEAR, .rope_factor = 4},
	                     {.head_dim = HS, .rope_theta = 500000, .rope_type = LORA_ROPE_LLAMA3, .rope_factor = 8,
	                      .rope_low_freq = 1, .rope_high_freq = 4, .rope_orig_max = 64}};
	for (int k = 0; k < 3; k++) {
		float cosv[T * HS / 2], sinv[T * HS / 2];
		double want_c[T * HS / 2], want_s[T * HS / 2];
		lora_kernels_rope_tables(cosv, sinv, &cs[k], T);
		for (size_t t = 0; t < T; t++)
			for (size_t i = 0; i < HS / 2; i++) {
				double ang = (double)t * inv_freq(&cs[k], i);
				want_c[t * HS / 2 + i] = cos(ang);
				want_s[t * HS / 2 + i] = sin(ang);
			}
		/* float angles of up to T radians: absolute error ~ T * 2^-24 */
		char what[64];
		snprintf(what, sizeof what, "rope tables (type %d) cos", k);
		twin(what, cosv, want_c, T * HS / 2, 0, 2e-5);
		snprintf(what, sizeof what, "rope tables (type %d) sin", k);
		twin(what, sinv, want_s, T * HS / 2, 0, 2e-5);
	}
}

typedef struct {
	double *x, *y;
	const float *g;
	const lora_config *cfg;
	size_t pos0, B, T, nrot, HS, ldq;
} rope_ctx;

/* Rotate-half at position pos0 + t, angles in double. */
static void rope_naive(rope_ctx *c)
{
	size_t half = c->HS / 2;
	for (size_t row = 0; row < c->B * c->T; row++) {
		double pos = (double)(c->pos0 + row % c->T);
		const double *x = c->x + row * c->ldq;
		double *y = c->y + row * c->ldq;
		memcpy(y, x, c->ldq * sizeof *y);
		for (size_t h = 0; h < c->nrot; h++)
			for (size_t i = 0; i < half; i++) {
				double ang = pos * inv_freq(c->cfg, i), a = x[h * c->HS + i], b = x[h * c->HS + i + half];
				y[h * c->HS + i] = a * cos(ang) - b * sin(ang);
				y[h * c->HS + i + half] = b * cos(ang) + a * sin(ang);
			}
	}
}

static double rope_loss(void *p)
{
	rope_ctx *c = p;
	rope_naive(c);
	return dot(c->g, c->y, c->B * c->T * c->ldq);
}

static void test_rope(size_t HS)
{
	/* q heads 2, k head 1 (rotated), v head 1 (not), as packed in qkv */
	enum { B = 2, T = 5, NROT = 3, POS0 = 3 };
	const size_t LDQ = 4 * HS, n = B * T * LDQ, half = HS / 2;
	lora_config cfg = {.head_dim = HS, .rope_theta = 10000, .rope_type = LORA_ROPE_DEFAULT};
	float *x = falloc(n), *y = falloc(n), *g = falloc(n), *d = falloc(n);
	float *cosv = falloc((POS0 + T) * half), *sinv = falloc((POS0 + T) * half);
	lora_kernels_rope_tables(cosv, sinv, &cfg, POS0 + T);
	fill(x, n, -1, 1);
	fill(g, n, -1, 1);
	memcpy(y, x, n * sizeof(float));
	lora_kernels_rope_forward(y, cosv, sinv, POS0, B, T, NROT, HS, LDQ);
	rope_ctx c = {widen(x, n), dalloc(n), g, &cfg, POS0, B, T, NROT, HS, LDQ};
	rope_naive(&c);
	double tw = twin("rope forward", y, c.y, n, 1e-5, 1e-6);
	/* backward: in place, the gradient at the rotated values rotated back */
	memcpy(d, g, n * sizeof(float));
	lora_kernels_rope_backward(d, cosv, sinv, POS0, B, T, NROT, HS, LDQ);
	double *grad = widen(d, n);
	double fw = fd_check("rope backward", c.x, n, 1, grad, rope_loss, &c);
	report("rope", tw, fw);
	free(x), free(y), free(g), free(d), free(cosv), free(sinv), free(c.x), free(c.y), free(grad);
}

/* ---- attention ---- */

typedef struct {
	size_t B, T, NH, NKV, HS, window;
	double *qkv, *att, *lse, *p;
	const float *g;
} attn_ctx;

/* Causal attention over the window, one query at a time, in double:
 * att (B*T, QD), lse (B, NH, T). */
static void attention_naive(attn_ctx *c)
{
	size_t QD = c->NH * c->HS, KVD = c->NKV * c->HS, QKV = QD + 2 * KVD, G = c->NH / c->NKV;
	double *p = c->p;
	for (size_t b = 0; b < c->B; b++)
		for (size_t h = 0; h < c->NH; h++)
			for (size_t t = 0; t < c->T; t++) {
				const double *q = c->qkv + (b * c->T + t) * QKV + h * c->HS;
				size_t lo = c->window && t + 1 > c->window ? t + 1 - c->window : 0;
				double mx = -INFINITY, z = 0;
				for (size_t s = lo; s <= t; s++) {
					const double *k = c->qkv + (b * c->T + s) * QKV + QD + (h / G) * c->HS;
					double sc = 0;
					for (size_t j = 0; j < c->HS; j++)
						sc += q[j] * k[j];
					p[s] = sc / sqrt((double)c->HS);
					mx = fmax(mx, p[s]);
				}
				for (size_t s = lo; s <= t; s++)
					z += exp(p[s] - mx);
				c->lse[(b * c->NH + h) * c->T + t] = mx + log(z);
				double *o = c->att + (b * c->T + t) * QD + h * c->HS;
				for (size_t j = 0; j < c->HS; j++)
					o[j] = 0;
				for (size_t s = lo; s <= t; s++) {
					const double *v = c->qkv + (b * c->T + s) * QKV + QD + KVD + (h / G) * c->HS;
					double w = exp(p[s] - mx) / z;
					for (size_t j = 0; j < c->HS; j++)
						o[j] += w * v[j];
				}
			}
}

static double attn_loss(void *p)
{
	attn_ctx *c = p;
	attention_naive(c);
	return dot(c->g, c->att, c->B * c->T * c->NH * c->HS);
}

/* Decoding the positions in pieces into a cache gives forward's rows. */
static double attention_decode_check(const char *what, const attn_ctx *c, const float *qkv, float *scratch,
                                     int nthr)
{
	size_t QD = c->NH * c->HS, KVD = c->NKV * c->HS, QKV = QD + 2 * KVD, T = c->T;
	float *kc = falloc(c->B * T * KVD), *vc = falloc(c->B * T * KVD), *out = falloc(c->B * T * QD);
	float *piece = falloc(c->B * T * QKV), *att = falloc(c->B * T * QD);
	size_t cuts[] = {0, T / 2 + 1, T / 2 + 2, T};
	for (size_t k = 0; k + 1 < sizeof cuts / sizeof *cuts; k++) {
		size_t pos = cuts[k], n = cuts[k + 1] - pos;
		for (size_t b = 0; b < c->B; b++)
			memcpy(piece + b * n * QKV, qkv + (b * T + pos) * QKV, n * QKV * sizeof(float));
		lora_kernels_attention_decode(att, kc, vc, scratch, piece, LORA_F32, pos, T, c->B, n, c->NH, c->NKV, c->HS,
		                              c->window, nthr);
		for (size_t b = 0; b < c->B; b++)
			memcpy(out + (b * T + pos) * QD, att + b * n * QD, n * QD * sizeof(float));
	}
	char w[160];
	snprintf(w, sizeof w, "%s, decoded", what);
	double r = twin(w, out, c->att, c->B * T * QD, 1e-5, 1e-6);
	free(kc), free(vc), free(out), free(piece), free(att);
	return r;
}

static void test_attention(size_t B, size_t T, size_t NH, size_t NKV, size_t HS, size_t window, size_t every)
{
	const int nthr = 2;
	size_t QD = NH * HS, QKV = QD + 2 * NKV * HS, n = B * T * QKV;
	float *qkv = falloc(n), *att = falloc(B * T * QD), *lse = falloc(B * NH * T), *g = falloc(B * T * QD);
	float *scratch = falloc((size_t)nthr * lora_kernels_attention_scratch(T, NH, NKV, HS, LORA_F32));
	fill(qkv, n, -1.5f, 1.5f);
	fill(g, B * T * QD, -1, 1);
	lora_kernels_attention_forward(att, lse, scratch, qkv, LORA_F32, B, T, NH, NKV, HS, window, nthr);
	attn_ctx c = {B, T, NH, NKV, HS, window, widen(qkv, n), dalloc(B * T * QD), dalloc(B * NH * T), dalloc(T), g};
	attention_naive(&c);
	char what[96];
	snprintf(what, sizeof what, "attention B%zu T%zu NH%zu NKV%zu HS%zu window %zu", B, T, NH, NKV, HS, window);
	double tw = twin(what, att, c.att, B * T * QD, 1e-5, 1e-6);
	tw = fmax(tw, twin(what, lse, c.lse, B * NH * T, 1e-5, 1e-6));
	tw = fmax(tw, attention_decode_check(what, &c, qkv, scratch, nthr));
	float *dqkv = falloc(n), *pre = falloc(n), *Dsum = falloc(B * NH * T);
	double *grad = dalloc(n);
	fill(pre, n, -1, 1);
	memcpy(dqkv, pre, n * sizeof(float));
	lora_kernels_attention_backward(dqkv, Dsum, scratch, g, att, lse, qkv, LORA_F32, B, T, NH, NKV, HS, window, nthr);
	added(grad, dqkv, pre, n);
	double fw = fd_check(what, c.qkv, n, every, grad, attn_loss, &c);
	report("attention", tw, fw);
	free(qkv), free(att), free(lse), free(g), free(scratch), free(c.qkv), free(c.att), free(c.lse), free(c.p),
		free(dqkv), free(pre), free(Dsum), free(grad);
}

/* bf16 attention: q, k, v in bf16, products in bf16 with f32 sums. Against
 * the naive attention of the same (rounded) values: the log-sum-exp to f32
 * accuracy, the output within the rounding of the probabilities to bf16;
 * decoding into a bf16 cache gives forward's rows; backward within the
 * rounding of its operands of f32 backward on the same values. */
static void test_attention_bf16(size_t B, size_t T, size_t NH, size_t NKV, size_t HS, size_t window)
{
	const int nthr = 2;
	size_t QD = NH * HS, KVD = NKV * HS, QKV = QD + 2 * KVD, n = B * T * QKV;
	float *qkv = falloc(n), *att = falloc(B * T * QD), *lse = falloc(B * NH * T), *g = falloc(B * T * QD);
	float *att32 = falloc(B * T * QD), *lse32 = falloc(B * NH * T), *Dsum = falloc(B * NH * T);
	float *d16 = falloc(n), *d32 = falloc(n), *dec = falloc(B * T * QD);
	uint16_t *qb = calloc(n, 2), *kc = calloc(B * T * KVD, 2), *vc = calloc(B * T * KVD, 2);
	float *scratch = falloc((size_t)nthr * lora_kernels_attention_scratch(T, NH, NKV, HS, LORA_BF16));
	float *scr32 = falloc((size_t)nthr * lora_kernels_attention_scratch(T, NH, NKV, HS, LORA_F32));
	fill(qkv, n, -1.5f, 1.5f);
	fill(g, B * T * QD, -1, 1);
	lora_dtype_from_f32(qb, qkv, LORA_BF16, n);
	lora_dtype_to_f32(qkv, qb, LORA_BF16, n);
	lora_kernels_attention_forward(att, lse, scratch, qb, LORA_BF16, B, T, NH, NKV, HS, window, nthr);
	attn_ctx c = {B, T, NH, NKV, HS, window, widen(qkv, n), dalloc(B * T * QD), dalloc(B * NH * T), dalloc(T), g};
	attention_naive(&c);
	char what[96];
	snprintf(what, sizeof what, "bf16 attention B%zu T%zu NH%zu NKV%zu HS%zu window %zu", B, T, NH, NKV, HS, window);
	double tw = twin(what, lse, c.lse, B * NH * T, 1e-5, 1e-6);
	tw = fmax(tw, twin(what, att, c.att, B * T * QD, 1e-2, 4e-3));
	lora_kernels_attention_decode(dec, kc, vc, scratch, qb, LORA_BF16, 0, T, B, T, NH, NKV, HS, window, nthr);
	double *want = widen(att, B * T * QD);
	tw = fmax(tw, twin(what, dec, want, B * T * QD, 1e-5, 1e-6));
	lora_kernels_attention_forward(att32, lse32, scr32, qkv, LORA_F32, B, T, NH, NKV, HS, window, nthr);
	lora_kernels_attention_backward(d32, Dsum, scr32, g, att32, lse32, qkv, LORA_F32, B, T, NH, NKV, HS, window, nthr);
	lora_kernels_attention_backward(d16, Dsum, scratch, g, att, lse, qb, LORA_BF16, B, T, NH, NKV, HS, window, nthr);
	double *grad = widen(d32, n);
	double bw = twin(what, d16, grad, n, 3e-2, 1e-2);
	report("attn bf16", tw, bw);
	free(qkv), free(att), free(lse), free(g), free(att32), free(lse32), free(Dsum), free(d16), free(d32), free(dec),
		free(qb), free(kc), free(vc), free(scratch), free(scr32), free(c.qkv), free(c.att), free(c.lse), free(c.p),
		free(want), free(grad);
}

/* ---- SwiGLU ---- */

typedef struct {
	double *gu, *h;
	const float *g;
	size_t N, F;
} swiglu_ctx;

static void swiglu_naive(swiglu_ctx *c)
{
	for (size_t i = 0; i < c->N; i++)
		for (size_t j = 0; j < c->F; j++) {
			double gate = c->gu[i * 2 * c->F + j], up = c->gu[i * 2 * c->F + c->F + j];
			c->h[i * c->F + j] = gate / (1 + exp(-gate)) * up;
		}
}

static double swiglu_loss(void *p)
{
	swiglu_ctx *c = p;
	swiglu_naive(c);
	return dot(c->g, c->h, c->N * c->F);
}

static void test_swiglu(size_t N, size_t F)
{
	float *gu = falloc(N * 2 * F), *h = falloc(N * F), *g = falloc(N * F), *dgu = falloc(N * 2 * F);
	fill(gu, N * 2 * F, -4, 4);
	fill(g, N * F, -1, 1);
	lora_kernels_swiglu_forward(h, NULL, gu, LORA_F32, N, F);
	swiglu_ctx c = {widen(gu, N * 2 * F), dalloc(N * F), g, N, F};
	swiglu_naive(&c);
	double tw = twin("swiglu forward", h, c.h, N * F, 1e-6, 1e-7);
	/* backward writes dgu: start it from garbage */
	fill(dgu, N * 2 * F, -100, 100);
	lora_kernels_swiglu_backward(dgu, NULL, g, gu, LORA_F32, N, F);
	double *grad = widen(dgu, N * 2 * F);
	double fw = fd_check("swiglu backward", c.gu, N * 2 * F, 1, grad, swiglu_loss, &c);
	report("swiglu", tw, fw);
	free(gu), free(h), free(g), free(dgu), free(c.gu), free(c.h), free(grad);
}

/* n bf16 values equal to x rounded, bit for bit. */
static void same_bf16(const char *what, const uint16_t *b, const float *x, size_t n)
{
	uint16_t *r = calloc(n, 2);
	lora_dtype_from_f32(r, x, LORA_BF16, n);
	size_t i = 0;
	while (i < n && r[i] == b[i])
		i++;
	CHECK(i == n, "%s: bf16 %#x at %zu, the f32 result rounds to %#x", what, i < n ? b[i] : 0, i, i < n ? r[i] : 0);
	free(r);
}

/* SwiGLU from gate and up in bf16 is SwiGLU of the widened values, and its
 * bf16 outputs are its f32 outputs rounded, across the pieces a row is
 * worked in (F past one). */
static void test_swiglu_bf16(size_t N, size_t F)
{
	size_t n = N * 2 * F;
	float *gu = falloc(n), *h = falloc(N * F), *h2 = falloc(N * F), *dh = falloc(N * F), *d = falloc(n);
	float *d2 = falloc(n);
	uint16_t *gub = calloc(n, 2), *h16 = calloc(N * F, 2), *d16 = calloc(n, 2);
	fill(gu, n, -4, 4);
	fill(dh, N * F, -1, 1);
	lora_dtype_from_f32(gub, gu, LORA_BF16, n);
	lora_dtype_to_f32(gu, gub, LORA_BF16, n);
	lora_kernels_swiglu_forward(h, NULL, gu, LORA_F32, N, F);
	lora_kernels_swiglu_forward(h2, h16, gub, LORA_BF16, N, F);
	CHECK(!memcmp(h, h2, N * F * sizeof *h), "swiglu from bf16 (N %zu F %zu) differs from f32", N, F);
	same_bf16("swiglu forward, bf16 out", h16, h, N * F);
	memset(h16, 0, N * F * 2);
	lora_kernels_swiglu_forward(NULL, h16, gu, LORA_F32, N, F);
	same_bf16("swiglu forward, bf16 out only", h16, h, N * F);
	lora_kernels_swiglu_backward(d, NULL, dh, gu, LORA_F32, N, F);
	lora_kernels_swiglu_backward(d2, d16, dh, gub, LORA_BF16, N, F);
	CHECK(!memcmp(d, d2, n * sizeof *d), "swiglu backward from bf16 (N %zu F %zu) differs from f32", N, F);
	same_bf16("swiglu backward, bf16 out", d16, d, n);
	memset(d16, 0, n * 2);
	lora_kernels_swiglu_backward(NULL, d16, dh, gub, LORA_BF16, N, F);
	same_bf16("swiglu backward, bf16 out only", d16, d, n);
	free(gu), free(h), free(h2), free(dh), free(d), free(d2), free(gub), free(h16), free(d16);
}

/* ---- cross-entropy ---- */

typedef struct {
	double *logits, *rowloss;
	const int32_t *targets;
	size_t N, V;
	double gscale;
} ce_ctx;

static void crossentropy_naive(ce_ctx *c)
{
	for (size_t i = 0; i < c->N; i++) {
		const double *l = c->logits + i * c->V;
		c->rowloss[i] = 0;
		if (c->targets[i] < 0)
			continue;
		double mx = -INFINITY, z = 0;
		for (size_t j = 0; j < c->V; j++)
			mx = fmax(mx, l[j]);
		for (size_t j = 0; j < c->V; j++)
			z += exp(l[j] - mx);
		c->rowloss[i] = mx + log(z) - l[c->targets[i]];
	}
}

/* gscale * the summed loss: what the fused backward differentiates. */
static double ce_loss(void *p)
{
	ce_ctx *c = p;
	crossentropy_naive(c);
	double s = 0;
	for (size_t i = 0; i < c->N; i++)
		s += c->rowloss[i];
	return c->gscale * s;
}

/* With large, row 3 holds large logits (the max is subtracted); finite
 * differences, whose step grows with the value, settle for them only in a
 * short row. */
static void test_crossentropy(size_t V, int large)
{
	enum { N = 5 };
	const int32_t targets[N] = {3, -1, 0, 12, 7};
	const float gscale = 0.37f;
	float *logits = falloc(N * V), *work = falloc(N * V);
	double rowloss[N];
	fill(logits, N * V, -3, 3);
	for (size_t j = 0; large && j < V; j++)
		logits[3 * V + j] = 40 + 10 * logits[3 * V + j];
	memcpy(work, logits, N * V * sizeof(float));
	lora_kernels_crossentropy_forward(rowloss, work, targets, 0, N, V);
	ce_ctx c = {widen(logits, N * V), dalloc(N), targets, N, V, gscale};
	crossentropy_naive(&c);
	double tw = 0;
	for (size_t i = 0; i < N; i++) {
		double r = fabs(rowloss[i] - c.rowloss[i]) / tol(rowloss[i], c.rowloss[i], 1e-5, 1e-6);
		CHECK(r <= 1, "cross-entropy row %zu: kernel %.9g vs naive %.9g", i, rowloss[i], c.rowloss[i]);
		tw = fmax(tw, r);
	}
	/* the fused backward: logits become gscale * (softmax - onehot) */
	memcpy(work, logits, N * V * sizeof(float));
	lora_kernels_crossentropy_forward(rowloss, work, targets, gscale, N, V);
	int zero = 1;
	for (size_t j = 0; j < V; j++)
		zero &= work[1 * V + j] == 0;
	CHECK(zero && rowloss[1] == 0, "an ignored target has loss 0 and gradient 0");
	double *grad = widen(work, N * V);
	double fw = fd_check("cross-entropy backward", c.logits, N * V, 1, grad, ce_loss, &c);
	report("crossentropy", tw, fw);
	free(logits), free(work), free(c.logits), free(c.rowloss), free(grad);
}

/* ---- dropout ---- */

/* The mask pinned to its published definition: element idx of a row-major
 * array is kept when the top 24 bits of SplitMix64's output function of
 * key + idx * the golden-ratio increment are >= floor(p * 2^24). A run resumed
 * by a later build draws the same masks. */
static int dropout_kept(uint64_t key, size_t idx, float p)
{
	uint64_t z = key + (uint64_t)idx * 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (z >> 40) >= (uint64_t)((double)p * 16777216.0);
}

/* Rows of C elements: a vector body, a shorter vector epilogue and a
 * scalar tail at every width. */
static void test_dropout(size_t N, size_t C)
{
	const float p = 0.3f;
	float *x = falloc(N * C), *y = falloc(N * C), *g = falloc(N * C), *dx = falloc(N * C), *pre = falloc(N * C);
	fill(x, N * C, 0.5f, 1.5f);
	fill(g, N * C, -1, 1);
	fill(pre, N * C, -1, 1);
	uint64_t key = lora_kernels_dropout_key(7, 3 << 8 | 2);
	CHECK(key != lora_kernels_dropout_key(8, 3 << 8 | 2) && key != lora_kernels_dropout_key(7, 3 << 8 | 1),
	      "dropout keys differ by seed and stream");
	lora_kernels_dropout_forward(y, x, key, p, N, C);
	size_t dropped = 0, wrong = 0;
	for (size_t i = 0; i < N * C; i++) {
		dropped += y[i] == 0;
		wrong += y[i] != (dropout_kept(key, i, p) ? x[i] * (1.0f / (1.0f - p)) : 0.0f);
	}
	CHECK(wrong == 0, "dropout %zux%zu: %zu elements differ from the hash's mask, kept ones scaled by 1/(1-p)", N, C,
	      wrong);
	/* Bernoulli(0.3) for each: within 4 standard deviations */
	double mean = 0.3 * (double)(N * C), sd = sqrt(0.21 * (double)(N * C));
	CHECK(fabs((double)dropped - mean) < 4 * sd, "dropout drops %zu of %zu", dropped, N * C);
	/* backward is the adjoint with the same mask: <D x, g> = <x, D^T g> */
	memcpy(dx, pre, N * C * sizeof(float));
	lora_kernels_dropout_backward(dx, g, key, p, N, C);
	double lhs = 0, rhs = 0;
	for (size_t i = 0; i < N * C; i++) {
		lhs += (double)g[i] * y[i];
		rhs += (double)x[i] * ((double)dx[i] - pre[i]);
	}
	CHECK(fabs(lhs - rhs) <= 1e-5 * fabs(lhs) + 1e-5, "dropout backward is the adjoint: %.9g vs %.9g", lhs, rhs);
	free(x), free(y), free(g), free(dx), free(pre);
}

/* ---- LoRA ---- */

typedef struct {
	double *x, *A, *B, *y;
	const float *y0, *bias, *g;
	double s;
	size_t N, in, out, r, ldy;
} lora_ctx;

/* y = y0 + s (x A^T) B^T + s bias on the first out columns, in double. */
static void lora_naive(lora_ctx *c)
{
	for (size_t i = 0; i < c->N; i++)
		for (size_t o = 0; o < c->ldy; o++) {
			double v = c->y0[i * c->ldy + o];
			if (o < c->out) {
				for (size_t k = 0; k < c->r; k++) {
					double u = 0;
					for (size_t j = 0; j < c->in; j++)
						u += c->x[i * c->in + j] * c->A[k * c->in + j];
					v += c->s * c->B[o * c->r + k] * u;
				}
				if (c->bias)
					v += c->s * c->bias[o];
			}
			c->y[i * c->ldy + o] = v;
		}
}

static double lora_loss(void *p)
{
	lora_ctx *c = p;
	lora_naive(c);
	return dot(c->g, c->y, c->N * c->ldy);
}

static void test_lora(void)
{
	/* y is the first out columns of a wider array, as q, k and v are */
	enum { N = 6, IN = 7, OUT = 5, R = 3, LDY = 9 };
	const float s = 0.75f;
	float *x = falloc(N * IN), *A = falloc(R * IN), *B = falloc(OUT * R), *bias = falloc(OUT);
	float *y0 = falloc(N * LDY), *y = falloc(N * LDY), *u = falloc(N * R), *g = falloc(N * LDY);
	fill(x, N * IN, -1, 1);
	fill(A, R * IN, -1, 1);
	fill(B, OUT * R, -1, 1);
	fill(bias, OUT, -1, 1);
	fill(y0, N * LDY, -1, 1);
	fill(g, N * LDY, -1, 1);
	memcpy(y, y0, N * LDY * sizeof(float));
	lora_kernels_lora_forward(y, u, x, A, B, bias, s, N, IN, OUT, R, LDY);
	lora_ctx c = {widen(x, N * IN), widen(A, R * IN), widen(B, OUT * R), dalloc(N * LDY), y0, bias, g, s,
	              N, IN, OUT, R, LDY};
	lora_naive(&c);
	double tw = twin("lora forward", y, c.y, N * LDY, 1e-5, 1e-6);
	/* Backward into non-zero gradients; the bias is frozen. */
	c.bias = NULL;
	float *dx = falloc(N * IN), *dA = falloc(R * IN), *dB = falloc(OUT * R), *du = falloc(N * R);
	float *px = falloc(N * IN), *pA = falloc(R * IN), *pB = falloc(OUT * R), *scratch = falloc(N * R);
	fill(px, N * IN, -1, 1);
	fill(pA, R * IN, -1, 1);
	fill(pB, OUT * R, -1, 1);
	memcpy(dx, px, sizeof(float) * N * IN);
	memcpy(dA, pA, sizeof(float) * R * IN);
	memcpy(dB, pB, sizeof(float) * OUT * R);
	lora_kernels_lora_backward(dx, dA, dB, du, scratch, g, x, A, B, s, N, IN, OUT, R, LDY);
	double *grad = dalloc(N * IN > R * IN ? N * IN : R * IN);
	added(grad, dx, px, N * IN);
	double fw = fd_check("lora backward dx", c.x, N * IN, 1, grad, lora_loss, &c);
	added(grad, dA, pA, R * IN);
	fw = fmax(fw, fd_check("lora backward dA", c.A, R * IN, 1, grad, lora_loss, &c));
	added(grad, dB, pB, OUT * R);
	fw = fmax(fw, fd_check("lora backward dB", c.B, OUT * R, 1, grad, lora_loss, &c));
	/* du is s dy B, which callers with a dropout mask rely on */
	double *du_naive = dalloc(N * R);
	for (size_t i = 0; i < N; i++)
		for (size_t k = 0; k < R; k++)
			for (size_t o = 0; o < OUT; o++)
				du_naive[i * R + k] += (double)s * g[i * LDY + o] * B[o * R + k];
	tw = fmax(tw, twin("lora backward du", du, du_naive, N * R, 1e-5, 1e-6));
	/* A frozen adapter: only dx. */
	memcpy(dx, px, sizeof(float) * N * IN);
	lora_kernels_lora_backward(dx, NULL, NULL, du, scratch, g, x, A, B, s, N, IN, OUT, R, LDY);
	added(grad, dx, px, N * IN);
	fw = fmax(fw, fd_check("lora backward dx (frozen)", c.x, N * IN, 1, grad, lora_loss, &c));
	report("lora", tw, fw);
	free(x), free(A), free(B), free(bias), free(y0), free(y), free(u), free(g), free(c.x), free(c.A), free(c.B),
		free(c.y), free(dx), free(dA), free(dB), free(du), free(px), free(pA), free(pB), free(scratch), free(grad),
		free(du_naive);
}

/* ---- thread count ---- */

/* Largest |one - two| against the largest |one| (a NaN fails). */
static void same_at_threads(const char *what, const float *one, const float *two, size_t n)
{
	double d = 0, mx = 0;
	for (size_t i = 0; i < n; i++) {
		double di = fabs((double)one[i] - two[i]);
		if (!(di <= d))
			d = di;
		mx = fmax(mx, fabs(one[i]));
	}
	CHECK(d <= 1e-6 * mx, "%s: 1 and 2 threads differ by %.3g (largest value %.3g)", what, d, mx);
}

/* Sizes past every kernel's threshold for threads: rows of C, F and V
 * elements, attention with two query blocks (G = 4) per row. */
enum { TN = 41, TC = 523, TF = 457, TV = 509, TB = 2, TT = 70, TNH = 8, TNKV = 2, THS = 14, TR = 5 };
#define TQD (TNH * THS)
#define TQKV (TQD + 2 * TNKV * THS)
#define TBT (TB * TT)

/* Inputs, and one run's outputs. */
typedef struct {
	float *x, *w, *g, *qkv, *datt, *gu, *dh, *logits, *A, *Bm, *cosv, *sinv;
	int32_t tok[TN], tgt[TN];
} thr_in;
typedef struct {
	float *emb, *rms, *rstd, *rmsre, *rmsdx, *rope, *ropeb, *att, *lse, *dqkv, *dec, *h, *dgu, *ce, *loss, *bias,
		*dropf, *dropb, *ly, *ldx, *ldA, *ldB, *ldu;
} thr_out;

/* Every kernel at nthr threads (the pool and the attention's count). */
static void kernels_at(int nthr, const thr_in *in, thr_out *o)
{
	float *kc = falloc(TBT * TNKV * THS), *vc = falloc(TBT * TNKV * THS), *Dsum = falloc(TB * TNH * TT);
	float *scratch = falloc((size_t)nthr * lora_kernels_attention_scratch(TT, TNH, TNKV, THS, LORA_F32));
	float *u = falloc(TN * TR);
	double rowloss[TN];
	lora_blas_set_threads(nthr);
	lora_kernels_embedding_forward(o->emb, in->tok, in->x, LORA_F32, TN, TC);
	lora_kernels_rmsnorm_forward(o->rms, o->rstd, in->x, in->w, 1e-5f, TN, TC);
	lora_kernels_rmsnorm_recompute(o->rmsre, in->x, in->w, o->rstd, TN, TC);
	lora_kernels_rmsnorm_backward(o->rmsdx, in->g, in->x, in->w, o->rstd, TN, TC);
	memcpy(o->rope, in->qkv, TBT * TQKV * sizeof(float));
	lora_kernels_rope_forward(o->rope, in->cosv, in->sinv, 0, TB, TT, TNH + TNKV, THS, TQKV);
	memcpy(o->ropeb, in->qkv, TBT * TQKV * sizeof(float));
	lora_kernels_rope_backward(o->ropeb, in->cosv, in->sinv, 0, TB, TT, TNH + TNKV, THS, TQKV);
	lora_kernels_attention_forward(o->att, o->lse, scratch, in->qkv, LORA_F32, TB, TT, TNH, TNKV, THS, 0, nthr);
	lora_kernels_attention_backward(o->dqkv, Dsum, scratch, in->datt, o->att, o->lse, in->qkv, LORA_F32, TB, TT, TNH,
	                                TNKV, THS, 0, nthr);
	lora_kernels_attention_decode(o->dec, kc, vc, scratch, in->qkv, LORA_F32, 0, TT, TB, TT, TNH, TNKV, THS, 0, nthr);
	lora_kernels_swiglu_forward(o->h, NULL, in->gu, LORA_F32, TN, TF);
	lora_kernels_swiglu_backward(o->dgu, NULL, in->dh, in->gu, LORA_F32, TN, TF);
	memcpy(o->ce, in->logits, TN * TV * sizeof(float));
	lora_kernels_crossentropy_forward(rowloss, o->ce, in->tgt, 0.5f, TN, TV);
	for (size_t i = 0; i < TN; i++)
		o->loss[i] = (float)rowloss[i];
	memcpy(o->bias, in->x, TN * TC * sizeof(float));
	lora_kernels_bias_forward(o->bias, in->w, 0.5f, TN, TC - 3, TC);
	lora_kernels_dropout_forward(o->dropf, in->x, 99, 0.2f, TN, TC);
	lora_kernels_dropout_backward(o->dropb, in->g, 99, 0.2f, TN, TC);
	lora_kernels_lora_forward(o->ly, u, in->x, in->A, in->Bm, in->w, 0.7f, TN, TC, TC, TR, TC);
	lora_kernels_lora_backward(o->ldx, o->ldA, o->ldB, o->ldu, u, in->g, in->x, in->A, in->Bm, 0.7f, TN, TC, TC, TR,
	                           TC);
	lora_blas_set_threads(2);
	free(kc), free(vc), free(Dsum), free(scratch), free(u);
}

static void thr_alloc(thr_out *o)
{
	*o = (thr_out){falloc(TN * TC), falloc(TN * TC), falloc(TN), falloc(TN * TC), falloc(TN * TC),
	               falloc(TBT * TQKV), falloc(TBT * TQKV), falloc(TBT * TQD), falloc(TB * TNH * TT),
	               falloc(TBT * TQKV), falloc(TBT * TQD), falloc(TN * TF), falloc(TN * 2 * TF), falloc(TN * TV),
	               falloc(TN), falloc(TN * TC), falloc(TN * TC), falloc(TN * TC), falloc(TN * TC), falloc(TN * TC),
	               falloc(TR * TC), falloc(TC * TR), falloc(TN * TR)};
}

static void test_threads(void)
{
	thr_in in;
	thr_out o[2];
	const lora_config cfg = {.head_dim = THS, .rope_theta = 10000, .rope_type = LORA_ROPE_DEFAULT};
	float *bufs[] = {in.x = falloc(TN * TC), in.w = falloc(TC), in.g = falloc(TN * TC), in.qkv = falloc(TBT * TQKV),
	                 in.datt = falloc(TBT * TQD), in.gu = falloc(TN * 2 * TF), in.dh = falloc(TN * TF),
	                 in.logits = falloc(TN * TV), in.A = falloc(TR * TC), in.Bm = falloc(TC * TR)};
	size_t sizes[] = {TN * TC, TC, TN * TC, TBT * TQKV, TBT * TQD, TN * 2 * TF, TN * TF, TN * TV, TR * TC, TC * TR};
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		fill(bufs[i], sizes[i], -2, 2);
	in.cosv = falloc(TT * THS / 2), in.sinv = falloc(TT * THS / 2);
	lora_kernels_rope_tables(in.cosv, in.sinv, &cfg, TT);
	for (size_t i = 0; i < TN; i++) {
		in.tok[i] = (int32_t)((i * 7) % TN);
		in.tgt[i] = i % 9 == 4 ? -1 : (int32_t)((i * 31) % TV);
	}
	for (int k = 0; k < 2; k++) {
		thr_alloc(&o[k]);
		kernels_at(k + 1, &in, &o[k]);
	}
	const struct {
		const char *what;
		size_t off, n; /* which thr_out member (in floats*) and its size */
	} outs[] = {
#define OUT(f, n) {#f, offsetof(thr_out, f), n}
		OUT(emb, TN * TC), OUT(rms, TN * TC), OUT(rstd, TN), OUT(rmsre, TN * TC), OUT(rmsdx, TN * TC),
		OUT(rope, TBT * TQKV), OUT(ropeb, TBT * TQKV), OUT(att, TBT * TQD), OUT(lse, TB * TNH * TT),
		OUT(dqkv, TBT * TQKV), OUT(dec, TBT * TQD), OUT(h, TN * TF), OUT(dgu, TN * 2 * TF), OUT(ce, TN * TV),
		OUT(loss, TN), OUT(bias, TN * TC), OUT(dropf, TN * TC), OUT(dropb, TN * TC), OUT(ly, TN * TC),
		OUT(ldx, TN * TC), OUT(ldA, TR * TC), OUT(ldB, TC * TR), OUT(ldu, TN * TR),
#undef OUT
	};
	for (size_t i = 0; i < sizeof outs / sizeof *outs; i++) {
		float *one = *(float **)((char *)&o[0] + outs[i].off), *two = *(float **)((char *)&o[1] + outs[i].off);
		same_at_threads(outs[i].what, one, two, outs[i].n);
	}
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		free(bufs[i]);
	free(in.cosv), free(in.sinv);
	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < sizeof outs / sizeof *outs; i++)
			free(*(float **)((char *)&o[k] + outs[i].off));
}

/* ---- the benchmark clock ---- */

static void test_clock(void)
{
	float x[2 * 40] = {0}, y[2 * 40], w[40] = {0}, r[2];
	double sec[LORA_KCLOCK_N];
	lora_kernels_clock_begin();
	lora_kernels_rmsnorm_forward(y, r, x, w, 1e-5f, 2, 40);
	lora_kernels_bias_forward(y, w, 1, 2, 40, 40);
	lora_kernels_clock_end(sec);
	int others = 0;
	for (int k = 0; k < LORA_KCLOCK_N; k++)
		others += k != LORA_KCLOCK_RMSNORM_FORWARD && k != LORA_KCLOCK_BIAS && sec[k] != 0;
	CHECK(sec[LORA_KCLOCK_RMSNORM_FORWARD] > 0 && sec[LORA_KCLOCK_BIAS] > 0 && others == 0,
	      "kernel clock: rmsnorm %g s, bias %g s, %d others", sec[LORA_KCLOCK_RMSNORM_FORWARD], sec[LORA_KCLOCK_BIAS],
	      others);
	lora_kernels_clock_begin();
	lora_kernels_clock_end(sec);
	lora_kernels_rmsnorm_forward(y, r, x, w, 1e-5f, 2, 40);
	lora_kernels_clock_end(sec);
	CHECK(sec[LORA_KCLOCK_RMSNORM_FORWARD] == 0, "kernel clock: counted while off");
	CHECK(!strcmp(lora_kernels_clock_name(LORA_KCLOCK_ATTENTION_BACKWARD), "attention_backward") &&
	          !strcmp(lora_kernels_clock_name(LORA_KCLOCK_DROPOUT), "dropout"),
	      "kernel clock names");
}

int main(void)
{
	lora_blas_set_threads(2);
	lora_rng_seed(&rng, 2024);
	test_embedding();
	/* Row lengths 12, 14/2, 9, 13 lie below one AVX-512 vector; 43 has a
	 * vector body, a shorter vector epilogue and a scalar tail at every
	 * width. */
	test_rmsnorm(4, 12);
	test_rmsnorm(3, 43);
	test_rope_tables();
	test_rope(8);
	test_rope(14);
	/* One block of queries: GQA; a window, more kv heads and a head size
	 * that is not a power of two; a window shorter than a short sequence.
	 * Several blocks: 8 heads per kv head (blocks of 32 positions, the
	 * last one short); 4 heads per kv head with a window that cuts both
	 * blocks; one (blocks of 256). */
	test_attention(2, 70, 2, 1, 4, 0, 3);
	test_attention(1, 70, 4, 2, 6, 20, 5);
	test_attention(2, 9, 4, 2, 6, 4, 1);
	test_attention(1, 70, 8, 1, 4, 0, 13);
	test_attention(2, 70, 16, 4, 6, 20, 97);
	test_attention(1, 300, 2, 2, 4, 0, 149);
	test_swiglu(3, 9);
	test_swiglu(2, 43);
	test_crossentropy(13, 1);
	test_crossentropy(43, 0);
	test_dropout(50, 91);
	test_lora();
	/* bf16 kernels (drawing their inputs last, so the others' stay as
	 * they were): attention where oneDNN multiplies bf16, with several
	 * blocks, GQA and a window across blocks; SwiGLU over one piece of a
	 * row and several */
	if (lora_blas_bf16() != LORA_BLAS_BF16_NONE) {
		test_attention_bf16(1, 70, 8, 1, 4, 0);
		test_attention_bf16(2, 70, 16, 4, 6, 20);
	}
	test_swiglu_bf16(3, 9);
	test_swiglu_bf16(2, 1100);
	test_threads();
	test_clock();
	DONE();
}
