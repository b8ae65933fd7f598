/* kernels: the numerical kernels of the transformer, forward and backward
 * (contracts and the shape letters in kernels.h).
 *
 * Shape letters: B batch rows, T positions per row, N = B*T rows, C model
 * width, F MLP width, V vocabulary, NH query heads, NKV key/value heads,
 * HS head size, QD = NH*HS, KVD = NKV*HS, QKV = QD + 2*KVD, r LoRA rank,
 * in/out a linear module's input/output width.
 *
 * The elementwise kernels are plain loops that must vectorise. Under the
 * default -ftrapping-math GCC refuses to if-convert the clamps and the
 * float-to-int conversion of exp_fast, which leaves every loop that calls
 * it scalar; no code here relies on floating-point exceptions. */
#pragma GCC optimize("no-trapping-math")

#include "model/kernels_internal.h"

#include "core/dtype.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "math/blas.h"

/* Parallelise a loop over rows only when there is enough work. */
#define PAR_IF(n) if ((n) > 16384)

/* ---- the benchmark clock (kernels_internal.h) ---- */

static volatile int clocking;
static double clocked[LORA_KCLOCK_N];
static const char *const clock_names[LORA_KCLOCK_N] = {
	"embedding", "rmsnorm_forward", "rmsnorm_recompute", "rmsnorm_backward", "rope", "attention_forward",
	"attention_backward", "attention_decode", "swiglu_forward", "swiglu_backward", "crossentropy", "bias", "dropout"};

static double tick(void) { return clocking ? omp_get_wtime() : 0; }

static void tock(int k, double t0)
{
	if (clocking)
		clocked[k] += omp_get_wtime() - t0;
}

void lora_kernels_clock_begin(void)
{
	memset(clocked, 0, sizeof clocked);
	clocking = 1;
}

void lora_kernels_clock_end(double *sec)
{
	clocking = 0;
	memcpy(sec, clocked, sizeof clocked);
}

const char *lora_kernels_clock_name(int k) { return k >= 0 && k < LORA_KCLOCK_N ? clock_names[k] : "?"; }

/* ---- fast exp: Cephes' expf, branch-free so loops vectorise ---- */

/* For x <= 0 (a rounding error above is harmless): every caller subtracts
 * a maximum first, or takes -|x|. Below -87 it gives e^-87, still a normal
 * number: GCC if-converts the clamp by computing the clamped branch for
 * every lane, and a subnormal there would take a microcode assist on each
 * vector (ten times slower) whether or not any lane needs it. */
static inline float exp_fast(float x)
{
	x = x < -87.0f ? -87.0f : x;
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

/* 1 / (1 + e^-x) from e = e^-|x| <= 1: e / (1 + e) for negative x, so no
 * lane ever computes a huge e^-x and its subnormal reciprocal. */
static inline float sigmoid(float x)
{
	float e = exp_fast(-fabsf(x)), r = 1.0f / (1.0f + e);
	return x >= 0 ? r : e * r;
}

/* The row kernels that dominate the elementwise time (softmax over the
 * vocabulary and over attention rows, SwiGLU, the dropout hash) are
 * compiled for AVX-512 (x86-64-v4: its 64-bit multiply vectorises the
 * hash), AVX2 and the baseline, and the best one is picked when the
 * program starts; the build itself stays generic. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ROWK __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), noinline))
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
 * log-sum-exp. Rows are short (attention keys) and the valid range
 * differs by row: every pass runs over all of [0, n) with the range as a
 * mask, so that no row ends in a scalar tail of exponentials and no lane
 * takes e^x of a masked score (x > 0 could be anything). */
ROWK static float softmax_row(float *s, size_t lo, size_t hi, size_t n)
{
	float mx = -INFINITY, sum = 0;
#pragma omp simd reduction(max : mx)
	for (size_t j = 0; j < n; j++) {
		float v = j >= lo && j < hi ? s[j] : -INFINITY;
		mx = v > mx ? v : mx;
	}
#pragma omp simd reduction(+ : sum)
	for (size_t j = 0; j < n; j++) {
		int in = j >= lo && j < hi;
		float e = exp_fast(in ? s[j] - mx : -INFINITY);
		s[j] = in ? e : 0.0f;
		sum += s[j];
	}
	float inv = 1.0f / sum;
#pragma omp simd
	for (size_t j = 0; j < n; j++)
		s[j] *= inv;
	return mx + logf(sum);
}

/* Probabilities recomputed from scores and the log-sum-exp (masked as
 * softmax_row). */
ROWK static void softmax_recompute_row(float *s, size_t lo, size_t hi, size_t n, float lse)
{
#pragma omp simd
	for (size_t j = 0; j < n; j++) {
		int in = j >= lo && j < hi;
		float e = exp_fast(in ? s[j] - lse : -INFINITY);
		s[j] = in ? e : 0.0f;
	}
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

/* ---- embedding, RMSNorm ---- */

void lora_kernels_embedding_forward(float *out, const int32_t *inp, const void *wte, lora_dtype dt, size_t N,
                                    size_t C)
{
	size_t row = C * lora_dtype_size(dt);
	double t0 = tick();
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++)
		lora_dtype_to_f32(out + i * C, (const char *)wte + (size_t)inp[i] * row, dt, C);
	tock(LORA_KCLOCK_EMBEDDING, t0);
}

void lora_kernels_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, float eps,
                                  size_t N, size_t C)
{
	double t0 = tick();
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
	tock(LORA_KCLOCK_RMSNORM_FORWARD, t0);
}

void lora_kernels_rmsnorm_recompute(float *out, const float *inp, const float *weight, const float *rstd, size_t N,
                                    size_t C)
{
	double t0 = tick();
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++) {
		const float *x = inp + i * C;
		float *o = out + i * C, r = rstd[i];
#pragma omp simd
		for (size_t j = 0; j < C; j++)
			o[j] = x[j] * r * weight[j];
	}
	tock(LORA_KCLOCK_RMSNORM_RECOMPUTE, t0);
}

void lora_kernels_rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                                   const float *rstd, size_t N, size_t C)
{
	double t0 = tick();
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
	tock(LORA_KCLOCK_RMSNORM_BACKWARD, t0);
}

/* ---- RoPE ---- */

void lora_kernels_rope_tables(float *cosv, float *sinv, const lora_config *c, size_t T)
{
	size_t half = c->head_dim / 2;
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
			cosv[t * half + i] = cosf(ang);
			sinv[t * half + i] = sinf(ang);
		}
	}
}

/* Forward (dir 1) and backward (dir -1, the transposed rotation) share
 * one loop. */
static void rope(float *qkv, const float *cosv, const float *sinv, size_t pos0, size_t B, size_t T, size_t nrot,
                 size_t HS, size_t ldq, float dir)
{
	double t0 = tick();
	size_t half = HS / 2, N = B * T;
#pragma omp parallel for PAR_IF(N * nrot * HS)
	for (size_t i = 0; i < N; i++) {
		size_t t = pos0 + i % T;
		const float *cs = cosv + t * half, *sn = sinv + t * half;
		for (size_t h = 0; h < nrot; h++) {
			float *x = qkv + i * ldq + h * HS;
#pragma omp simd
			for (size_t j = 0; j < half; j++) {
				float a = x[j], b = x[j + half], s = dir * sn[j];
				x[j] = a * cs[j] - b * s;
				x[j + half] = b * cs[j] + a * s;
			}
		}
	}
	tock(LORA_KCLOCK_ROPE, t0);
}

void lora_kernels_rope_forward(float *qkv, const float *cosv, const float *sinv, size_t pos0, size_t B, size_t T,
                               size_t nrot, size_t HS, size_t ldq)
{
	rope(qkv, cosv, sinv, pos0, B, T, nrot, HS, ldq, 1);
}

void lora_kernels_rope_backward(float *dqkv, const float *cosv, const float *sinv, size_t pos0, size_t B, size_t T,
                                size_t nrot, size_t HS, size_t ldq)
{
	rope(dqkv, cosv, sinv, pos0, B, T, nrot, HS, ldq, -1);
}

/* ---- attention ---- */

/* The G = NH/NKV query heads that share a key/value head are attended
 * together: nn positions of all G heads are packed as nn*G rows (position
 * major, so one position's G heads are one contiguous run of qkv) and each
 * product is G times taller than one head's: oneDNN runs products of a
 * few dozen rows at half its rate or less, and each call costs some
 * microseconds besides. About QROWS packed rows make a block (more gain
 * nothing and waste more of the causal triangle): S holds QROWS x T scores
 * per thread, never T x T per head.
 *
 * In bf16 the queries, keys and values come in bf16 and the probabilities
 * and score gradients are rounded to bf16 for the products that take them,
 * as autocast runs attention; scores, softmax and every sum stay f32. */
#define QROWS 256

/* The shapes of one attention call. */
typedef struct {
	size_t HS, G, QD, KVD, QKV;
	size_t n;      /* positions per block */
	size_t R, RT;  /* packed rows per block, floats of one score block */
	size_t T;      /* positions the scratch holds */
	size_t stride; /* floats of scratch per thread */
	size_t window;
	float scale;
	lora_dtype dt; /* of q, k, v and the operands of the products */
	size_t es;     /* its bytes */
} attn;

/* Positions per block for T positions and G heads per key/value head. */
static size_t block_positions(size_t T, size_t G)
{
	size_t n = (QROWS + G - 1) / G;
	return n < T ? n : T;
}

size_t lora_kernels_attention_scratch(size_t T, size_t NH, size_t NKV, size_t HS, lora_dtype dt)
{
	/* Scores and their gradient (R, T), packed queries, outputs and query
	 * gradients (R, HS), packed keys, values and their gradients (T, HS),
	 * in bf16 one (R, T) block of bf16 operands; a multiple of 16 floats
	 * keeps each thread's part on its own cache lines. */
	size_t R = NH / NKV * block_positions(T ? T : 1, NH / NKV), RT = R * T;
	return (2 * RT + 3 * R * HS + 4 * T * HS + (dt == LORA_BF16 ? (RT + 1) / 2 : 0) + 15) / 16 * 16;
}

/* T positions of each row; the scratch was sized for maxT. */
static attn attn_shape(size_t T, size_t NH, size_t NKV, size_t HS, size_t window, size_t maxT, lora_dtype dt)
{
	attn a = {.HS = HS, .G = NH / NKV, .window = window, .dt = dt, .es = lora_dtype_size(dt)};
	a.QD = NH * HS, a.KVD = NKV * HS, a.QKV = a.QD + 2 * a.KVD;
	a.n = block_positions(T, a.G);
	a.R = a.G * block_positions(maxT, a.G);
	a.RT = a.R * maxT;
	a.T = maxT;
	a.stride = lora_kernels_attention_scratch(maxT, NH, NKV, HS, dt);
	a.scale = (float)(1.0 / sqrt((double)HS));
	return a;
}

/* Valid keys of query t: [key_lo, t]. */
static inline size_t key_lo(size_t t, size_t window) { return window && t + 1 > window ? t + 1 - window : 0; }

/* nn rows of w bytes: dst (rows ldd bytes apart) = src (rows lds apart). */
static void copy_rows(void *dst, size_t ldd, const void *src, size_t lds, size_t nn, size_t w)
{
	for (size_t t = 0; t < nn; t++)
		memcpy((char *)dst + t * ldd, (const char *)src + t * lds, w);
}

/* Element i of x (type a->dt). */
static const void *at(const attn *a, const void *x, size_t i) { return (const char *)x + i * a->es; }

/* A thread's scratch, in the order of lora_kernels_attention_scratch. */
typedef struct {
	float *S, *dP, *Qp, *dOp, *dQp, *Kp, *Vp, *dKp, *dVp;
	void *b; /* bf16 operands */
} parts;

static parts parts_of(const attn *a, float *scratch)
{
	parts p = {.S = scratch};
	p.dP = p.S + a->RT, p.Qp = p.dP + a->RT, p.dOp = p.Qp + a->R * a->HS, p.dQp = p.dOp + a->R * a->HS;
	p.Kp = p.dQp + a->R * a->HS, p.Vp = p.Kp + a->T * a->HS, p.dKp = p.Vp + a->T * a->HS;
	p.dVp = p.dKp + a->T * a->HS, p.b = p.dVp + a->T * a->HS;
	return p;
}

/* The rows x n floats of x as the operand of a product: x itself in f32,
 * else rounded into the scratch's bf16 block. */
static const void *operand_of(const attn *a, const parts *p, const float *x, size_t rows, size_t n)
{
	if (a->dt == LORA_F32)
		return x;
	lora_dtype_from_f32(p->b, x, a->dt, rows * n);
	return p->b;
}

/* Keys and values of positions k0..k0+kl-1 (rows ld elements apart) into
 * the scratch, rows HS apart: oneDNN reads bf16 operands whose rows are
 * QKV apart at a fifth of its rate (f32 too, less so). */
static void pack_kv(const attn *a, const parts *p, const void *K, const void *V, size_t ld, size_t k0, size_t kl)
{
	size_t w = a->HS * a->es;
	copy_rows(p->Kp, w, at(a, K, k0 * ld), ld * a->es, kl, w);
	copy_rows(p->Vp, w, at(a, V, k0 * ld), ld * a->es, kl, w);
}

/* C (M, N; ldc) = beta C + alpha op(A) op(B), A and B of type a->dt. */
static void gemm(const attn *a, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const void *A, size_t lda,
                 const void *B, size_t ldb, float beta, float *C, size_t ldc)
{
	lora_blas_gemm(ta, tb, M, N, K, alpha, A, a->dt, lda, B, a->dt, ldb, beta, C, ldc);
}

/* One block: queries at positions p0..p0+nn-1 of the G heads of one key/
 * value head, over keys K and values V (rows ldkv elements apart, from
 * position 0). Q (nn, G*HS) rows QKV apart; O (nn, G*HS) rows QD apart; L
 * (G, ldl): the log-sum-exp of head h' at position p0 + i is
 * L[h' * ldl + i]; L may be NULL. */
static void attend(const attn *a, float *scratch, float *O, float *L, size_t ldl, const void *Q, const void *K,
                   const void *V, size_t ldkv, size_t p0, size_t nn)
{
	size_t G = a->G, HS = a->HS, es = a->es, rows = nn * G, k0 = key_lo(p0, a->window), kl = p0 + nn - k0;
	parts p = parts_of(a, scratch);
	float *S = p.S, *Op = p.dOp;
	copy_rows(p.Qp, G * HS * es, Q, a->QKV * es, nn, G * HS * es);
	pack_kv(a, &p, K, V, ldkv, k0, kl);
	gemm(a, 0, 1, rows, kl, HS, a->scale, p.Qp, HS, p.Kp, HS, 0, S, kl);
	for (size_t r = 0; r < rows; r++) {
		size_t t = p0 + r / G;
		float l = softmax_row(S + r * kl, key_lo(t, a->window) - k0, t - k0 + 1, kl);
		if (L)
			L[r % G * ldl + r / G] = l;
	}
	gemm(a, 0, 0, rows, HS, kl, 1, operand_of(a, &p, S, rows, kl), kl, p.Vp, HS, 0, Op, HS);
	copy_rows(O, a->QD * 4, Op, G * HS * 4, nn, G * HS * 4);
}

/* One task per (row, kv head, block), the blocks with the most keys
 * first. */
void lora_kernels_attention_forward(float *att, float *lse, float *scratch, const void *qkv, lora_dtype dt, size_t B,
                                    size_t T, size_t NH, size_t NKV, size_t HS, size_t window, int nthr)
{
	double t0 = tick();
	attn a = attn_shape(T, NH, NKV, HS, window, T, dt);
	size_t nb = (T + a.n - 1) / a.n;
	long ntask = (long)(B * NKV * nb);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t blk = nb - 1 - (size_t)task % nb, b = (size_t)task / nb / NKV, g = (size_t)task / nb % NKV;
		size_t i0 = blk * a.n, nn = T - i0 < a.n ? T - i0 : a.n, h0 = g * a.G;
		const void *base = at(&a, qkv, b * T * a.QKV);
		attend(&a, scratch + (size_t)omp_get_thread_num() * a.stride, att + (b * T + i0) * a.QD + h0 * HS,
		       lse + (b * NH + h0) * T + i0, T, at(&a, base, i0 * a.QKV + h0 * HS), at(&a, base, a.QD + g * HS),
		       at(&a, base, a.QD + a.KVD + g * HS), a.QKV, i0, nn);
	}
	tock(LORA_KCLOCK_ATTENTION_FORWARD, t0);
}

/* The backward of one block (as attend's), over the keys and values the
 * scratch holds (pack_kv of every position): the scratch's dK, dV += the
 * block's part; dQ (nn, G*HS) rows QKV apart +=. D (G, ldl) work space
 * like L. dO and O are f32, Q of type a->dt. */
static void attend_backward(const attn *a, const parts *p, float *dQ, float *D, const float *L, size_t ldl,
                            const float *dO, const float *O, const void *Q, size_t p0, size_t nn)
{
	size_t G = a->G, HS = a->HS, es = a->es, rows = nn * G, k0 = key_lo(p0, a->window), kl = p0 + nn - k0;
	float *S = p->S, *dP = p->dP;
	const void *Kp = at(a, p->Kp, k0 * HS), *Vp = at(a, p->Vp, k0 * HS);
	copy_rows(p->Qp, G * HS * es, Q, a->QKV * es, nn, G * HS * es);
	for (size_t r = 0; r < rows; r++) {
		const float *o = O + r / G * a->QD + r % G * HS, *d = dO + r / G * a->QD + r % G * HS;
		float s = 0;
#pragma omp simd reduction(+ : s)
		for (size_t j = 0; j < HS; j++)
			s += o[j] * d[j];
		D[r % G * ldl + r / G] = s;
		lora_dtype_from_f32((char *)p->dOp + r * HS * es, d, a->dt, HS);
	}
	gemm(a, 0, 1, rows, kl, HS, a->scale, p->Qp, HS, Kp, HS, 0, S, kl);
	for (size_t r = 0; r < rows; r++) {
		size_t t = p0 + r / G;
		softmax_recompute_row(S + r * kl, key_lo(t, a->window) - k0, t - k0 + 1, kl, L[r % G * ldl + r / G]);
	}
	// dV += P^T dO; dP = dO V^T
	gemm(a, 1, 0, kl, HS, rows, 1, operand_of(a, p, S, rows, kl), kl, p->dOp, HS, 1, p->dVp + k0 * HS, HS);
	gemm(a, 0, 1, rows, kl, HS, 1, p->dOp, HS, Vp, HS, 0, dP, kl);
	for (size_t r = 0; r < rows; r++) {
		float *pr = S + r * kl, *dp = dP + r * kl, Dr = D[r % G * ldl + r / G];
#pragma omp simd
		for (size_t j = 0; j < kl; j++)
			dp[j] = pr[j] * (dp[j] - Dr);
	}
	// dQ += scale dS K; dK += scale dS^T Q
	const void *dS = operand_of(a, p, dP, rows, kl);
	gemm(a, 0, 0, rows, HS, kl, a->scale, dS, kl, Kp, HS, 0, p->dQp, HS);
	for (size_t t = 0; t < nn; t++) {
		float *dq = dQ + t * a->QKV;
		const float *src = p->dQp + t * G * HS;
#pragma omp simd
		for (size_t j = 0; j < G * HS; j++)
			dq[j] += src[j];
	}
	gemm(a, 1, 0, kl, HS, rows, a->scale, dS, kl, p->Qp, HS, 1, p->dKp + k0 * HS, HS);
}

/* One task per (row, kv head), so that no two threads write the same dK,
 * dV. */
void lora_kernels_attention_backward(float *dqkv, float *Dsum, float *scratch, const float *datt, const float *att,
                                     const float *lse, const void *qkv, lora_dtype dt, size_t B, size_t T, size_t NH,
                                     size_t NKV, size_t HS, size_t window, int nthr)
{
	double t0 = tick();
	attn a = attn_shape(T, NH, NKV, HS, window, T, dt);
	long ntask = (long)(B * NKV);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t b = (size_t)task / NKV, g = (size_t)task % NKV, h0 = g * a.G, QKV = a.QKV, QD = a.QD;
		parts p = parts_of(&a, scratch + (size_t)omp_get_thread_num() * a.stride);
		const void *base = at(&a, qkv, b * T * QKV), *K = at(&a, base, QD + g * HS);
		float *dbase = dqkv + b * T * QKV, *dK = dbase + QD + g * HS, *dV = dK + a.KVD;
		pack_kv(&a, &p, K, at(&a, K, a.KVD), QKV, 0, T);
		memset(p.dKp, 0, 2 * T * HS * sizeof(float));
		for (size_t i0 = 0; i0 < T; i0 += a.n) {
			size_t nn = T - i0 < a.n ? T - i0 : a.n, row = b * T + i0;
			attend_backward(&a, &p, dbase + i0 * QKV + h0 * HS, Dsum + (b * NH + h0) * T + i0,
			                lse + (b * NH + h0) * T + i0, T, datt + row * QD + h0 * HS, att + row * QD + h0 * HS,
			                at(&a, base, i0 * QKV + h0 * HS), i0, nn);
		}
		for (size_t t = 0; t < T; t++) {
			float *dk = dK + t * QKV, *dv = dV + t * QKV;
			const float *sk = p.dKp + t * HS, *sv = p.dVp + t * HS;
#pragma omp simd
			for (size_t j = 0; j < HS; j++) {
				dk[j] += sk[j];
				dv[j] += sv[j];
			}
		}
	}
	tock(LORA_KCLOCK_ATTENTION_BACKWARD, t0);
}

void lora_kernels_attention_decode(float *att, void *kc, void *vc, float *scratch, const void *qkv, lora_dtype dt,
                                   size_t pos, size_t maxT, size_t B, size_t T, size_t NH, size_t NKV, size_t HS,
                                   size_t window, int nthr)
{
	double t0 = tick();
	attn a = attn_shape(T, NH, NKV, HS, window, maxT, dt);
	size_t QD = a.QD, KVD = a.KVD, QKV = a.QKV, es = a.es, nb = (T + a.n - 1) / a.n;
	for (size_t b = 0; b < B; b++)
		for (size_t t = 0; t < T; t++) {
			const void *row = at(&a, qkv, (b * T + t) * QKV + QD);
			memcpy((char *)kc + (b * maxT + pos + t) * KVD * es, row, KVD * es);
			memcpy((char *)vc + (b * maxT + pos + t) * KVD * es, at(&a, row, KVD), KVD * es);
		}
	long ntask = (long)(B * NKV * nb);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t blk = nb - 1 - (size_t)task % nb, b = (size_t)task / nb / NKV, g = (size_t)task / nb % NKV;
		size_t i0 = blk * a.n, nn = T - i0 < a.n ? T - i0 : a.n, h0 = g * a.G;
		attend(&a, scratch + (size_t)omp_get_thread_num() * a.stride, att + (b * T + i0) * QD + h0 * HS, NULL, 0,
		       at(&a, qkv, (b * T + i0) * QKV + h0 * HS), at(&a, kc, b * maxT * KVD + g * HS),
		       at(&a, vc, b * maxT * KVD + g * HS), KVD, pos + i0, nn);
	}
	tock(LORA_KCLOCK_ATTENTION_DECODE, t0);
}

/* ---- SwiGLU, cross-entropy, bias ---- */

/* SwiGLU reads gate and up in f32 or bf16 (the copy bf16 training keeps)
 * and writes f32 and/or bf16 (the operand of the product after it), a
 * piece of a row at a time through buffers that stay in L1: no pass over
 * memory only converts. */
#define SW_CHUNK 512

/* x[i, i+n) (type dt) as f32: in place, or widened into buf. */
static const float *widen(float *buf, const void *x, lora_dtype dt, size_t i, size_t n)
{
	if (dt == LORA_F32)
		return (const float *)x + i;
	lora_dtype_to_f32(buf, (const uint16_t *)x + i, dt, n);
	return buf;
}

void lora_kernels_swiglu_forward(float *h, uint16_t *h16, const void *gu, lora_dtype dt, size_t N, size_t F)
{
	double t0 = tick();
#pragma omp parallel for PAR_IF(N * F)
	for (size_t i = 0; i < N; i++)
		for (size_t j = 0; j < F; j += SW_CHUNK) {
			size_t n = F - j < SW_CHUNK ? F - j : SW_CHUNK, row = i * 2 * F;
			float gb[SW_CHUNK], ub[SW_CHUNK], hb[SW_CHUNK], *hp = h ? h + i * F + j : hb;
			swiglu_row(hp, widen(gb, gu, dt, row + j, n), widen(ub, gu, dt, row + F + j, n), n);
			if (h16)
				lora_dtype_from_f32(h16 + i * F + j, hp, LORA_BF16, n);
		}
	tock(LORA_KCLOCK_SWIGLU_FORWARD, t0);
}

void lora_kernels_swiglu_backward(float *dgu, uint16_t *dgu16, const float *dh, const void *gu, lora_dtype dt,
                                  size_t N, size_t F)
{
	double t0 = tick();
#pragma omp parallel for PAR_IF(N * F)
	for (size_t i = 0; i < N; i++)
		for (size_t j = 0; j < F; j += SW_CHUNK) {
			size_t n = F - j < SW_CHUNK ? F - j : SW_CHUNK, row = i * 2 * F;
			float gb[SW_CHUNK], ub[SW_CHUNK], dgb[SW_CHUNK], dub[SW_CHUNK];
			float *dg = dgu ? dgu + row + j : dgb, *du = dgu ? dgu + row + F + j : dub;
			swiglu_backward_row(dg, du, dh + i * F + j, widen(gb, gu, dt, row + j, n),
			                    widen(ub, gu, dt, row + F + j, n), n);
			if (dgu16) {
				lora_dtype_from_f32(dgu16 + row + j, dg, LORA_BF16, n);
				lora_dtype_from_f32(dgu16 + row + F + j, du, LORA_BF16, n);
			}
		}
	tock(LORA_KCLOCK_SWIGLU_BACKWARD, t0);
}

void lora_kernels_crossentropy_forward(double *rowloss, float *logits, const int32_t *targets, float gscale,
                                       size_t N, size_t V)
{
	double t0 = tick();
#pragma omp parallel for schedule(static) PAR_IF(N * V)
	for (size_t i = 0; i < N; i++) {
		float *l = logits + i * V;
		if (targets[i] < 0) {
			rowloss[i] = 0;
			if (gscale != 0)
				memset(l, 0, V * sizeof(float));
		} else {
			rowloss[i] = crossentropy_row(l, V, targets[i], gscale);
		}
	}
	tock(LORA_KCLOCK_CROSSENTROPY, t0);
}

void lora_kernels_bias_forward(float *y, const float *bias, float s, size_t N, size_t n, size_t ldy)
{
	double t0 = tick();
#pragma omp parallel for PAR_IF(N * n)
	for (size_t i = 0; i < N; i++) {
		float *row = y + i * ldy;
#pragma omp simd
		for (size_t j = 0; j < n; j++)
			row[j] += s * bias[j];
	}
	tock(LORA_KCLOCK_BIAS, t0);
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

uint64_t lora_kernels_dropout_key(uint64_t seed, uint64_t stream)
{
	return mix64(seed ^ mix64(stream + 0x5851f42d4c957f2dull));
}

// out (C) = x (C) * mask / (1-p), or out += that; the row's first element
// has index idx
ROWK static void dropout_row(float *out, const float *x, uint64_t key, size_t idx, uint32_t thresh, float inv,
                             size_t C, int accumulate)
{
	if (accumulate) {
#pragma omp simd
		for (size_t j = 0; j < C; j++)
			out[j] += dropout_keep(key, idx + j, thresh) ? x[j] * inv : 0.0f;
	} else {
#pragma omp simd
		for (size_t j = 0; j < C; j++)
			out[j] = dropout_keep(key, idx + j, thresh) ? x[j] * inv : 0.0f;
	}
}

// out (N,C) = x * mask / (1-p), or out += x * mask / (1-p)
static void dropout(float *out, const float *x, uint64_t key, float p, size_t N, size_t C, int accumulate)
{
	double t0 = tick();
	uint32_t thresh = (uint32_t)((double)p * 16777216.0);
	float inv = 1.0f / (1.0f - p);
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++)
		dropout_row(out + i * C, x + i * C, key, i * C, thresh, inv, C, accumulate);
	tock(LORA_KCLOCK_DROPOUT, t0);
}

void lora_kernels_dropout_forward(float *out, const float *x, uint64_t key, float p, size_t N, size_t C)
{
	dropout(out, x, key, p, N, C, 0);
}

void lora_kernels_dropout_backward(float *dx, const float *dout, uint64_t key, float p, size_t N, size_t C)
{
	dropout(dx, dout, key, p, N, C, 1);
}

/* ---- LoRA ---- */

void lora_kernels_lora_forward(float *y, float *u, const float *x, const float *A, const float *B,
                               const float *bias, float s, size_t N, size_t in, size_t out, size_t r, size_t ldy)
{
	lora_blas_sgemm(0, 1, N, r, in, 1, x, in, A, in, 0, u, r);
	lora_blas_sgemm(0, 1, N, out, r, s, u, r, B, r, 1, y, ldy);
	if (bias)
		lora_kernels_bias_forward(y, bias, s, N, out, ldy);
}

void lora_kernels_lora_backward(float *dx, float *dA, float *dB, float *du, float *u, const float *dy,
                                const float *x, const float *A, const float *B, float s, size_t N, size_t in,
                                size_t out, size_t r, size_t ldy)
{
	// du = s dy B   (N, r)
	lora_blas_sgemm(0, 0, N, r, out, s, dy, ldy, B, r, 0, du, r);
	if (dA) {
		// u = x A^T recomputed; dB += s dy^T u; dA += du^T x
		lora_blas_sgemm(0, 1, N, r, in, 1, x, in, A, in, 0, u, r);
		lora_blas_sgemm(1, 0, out, r, N, s, dy, ldy, u, r, 1, dB, r);
		lora_blas_sgemm(1, 0, r, in, N, 1, du, r, x, in, 1, dA, in);
	}
	if (dx)
		lora_blas_sgemm(0, 0, N, in, r, 1, du, r, A, in, 1, dx, in);
}
