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

#include "model/kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "math/blas.h"

/* Query rows per attention block: probabilities are held for QB x T at a
 * time per thread, never T x T per head. */
#define QB 64

/* Parallelise a loop over rows only when there is enough work. */
#define PAR_IF(n) if ((n) > 16384)

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

/* ---- embedding, RMSNorm ---- */

void lora_kernels_embedding_forward(float *out, const int32_t *inp, const float *wte, size_t N, size_t C)
{
#pragma omp parallel for PAR_IF(N * C)
	for (size_t i = 0; i < N; i++)
		memcpy(out + i * C, wte + (size_t)inp[i] * C, C * sizeof(float));
}

void lora_kernels_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, float eps,
                                  size_t N, size_t C)
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

void lora_kernels_rmsnorm_recompute(float *out, const float *inp, const float *weight, const float *rstd, size_t N,
                                    size_t C)
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

void lora_kernels_rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
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

size_t lora_kernels_attention_scratch(size_t T)
{
	/* Scores and their gradient for one query block; a multiple of 16
	 * floats keeps each thread's part on its own cache lines. */
	return (2 * (T < QB ? T : QB) * T + 15) / 16 * 16;
}

/* Valid keys of query t: [key_lo, t]. */
static inline size_t key_lo(size_t t, size_t window) { return window && t + 1 > window ? t + 1 - window : 0; }

static float attention_scale(size_t HS) { return (float)(1.0 / sqrt((double)HS)); }

/* One QB-row block of queries at a time: S = Q K^T * scale over the keys
 * the block can see, softmax per row, O = P V. */
void lora_kernels_attention_forward(float *att, float *lse, float *scratch, const float *qkv, size_t B, size_t T,
                                    size_t NH, size_t NKV, size_t HS, size_t window, int nthr)
{
	size_t QD = NH * HS, KVD = NKV * HS, QKV = QD + 2 * KVD, G = NH / NKV, stride = lora_kernels_attention_scratch(T);
	float scale = attention_scale(HS);
	long ntask = (long)(B * NH);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t b = (size_t)task / NH, h = (size_t)task % NH, g = h / G;
		float *S = scratch + (size_t)omp_get_thread_num() * stride;
		const float *base = qkv + b * T * QKV;
		const float *Q = base + h * HS, *K = base + QD + g * HS, *Vv = base + QD + KVD + g * HS;
		float *O = att + b * T * QD + h * HS, *L = lse + (b * NH + h) * T;
		for (size_t i0 = 0; i0 < T; i0 += QB) {
			size_t n = T - i0 < QB ? T - i0 : QB, k0 = key_lo(i0, window), kl = i0 + n - k0;
			lora_blas_sgemm(0, 1, n, kl, HS, scale, Q + i0 * QKV, QKV, K + k0 * QKV, QKV, 0, S, kl);
			for (size_t r = 0; r < n; r++) {
				size_t t = i0 + r;
				L[t] = softmax_row(S + r * kl, key_lo(t, window) - k0, t - k0 + 1, kl);
			}
			lora_blas_sgemm(0, 0, n, HS, kl, 1, S, kl, Vv + k0 * QKV, QKV, 0, O + i0 * QD, QD);
		}
	}
}

/* One task per (row, kv head) so that no two threads write the same dk/dv. */
void lora_kernels_attention_backward(float *dqkv, float *Dsum, float *scratch, const float *datt, const float *att,
                                     const float *lse, const float *qkv, size_t B, size_t T, size_t NH, size_t NKV,
                                     size_t HS, size_t window, int nthr)
{
	size_t QD = NH * HS, KVD = NKV * HS, QKV = QD + 2 * KVD, G = NH / NKV, stride = lora_kernels_attention_scratch(T);
	float scale = attention_scale(HS);
	long ntask = (long)(B * NKV);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
	for (long task = 0; task < ntask; task++) {
		size_t b = (size_t)task / NKV, g = (size_t)task % NKV;
		/* Blocks have at most min(T, QB) rows: the scratch is sized for that. */
		float *S = scratch + (size_t)omp_get_thread_num() * stride, *dP = S + (T < QB ? T : QB) * T;
		const float *base = qkv + b * T * QKV;
		const float *K = base + QD + g * HS, *Vv = base + QD + KVD + g * HS;
		float *dbase = dqkv + b * T * QKV;
		float *dK = dbase + QD + g * HS, *dV = dbase + QD + KVD + g * HS;
		for (size_t h = g * G; h < (g + 1) * G; h++) {
			const float *Q = base + h * HS, *O = att + b * T * QD + h * HS, *dO = datt + b * T * QD + h * HS;
			const float *L = lse + (b * NH + h) * T;
			float *dQ = dbase + h * HS, *D = Dsum + (b * NH + h) * T;
			for (size_t t = 0; t < T; t++) {
				float s = 0;
				const float *o = O + t * QD, *dO_t = dO + t * QD;
#pragma omp simd reduction(+ : s)
				for (size_t j = 0; j < HS; j++)
					s += o[j] * dO_t[j];
				D[t] = s;
			}
			for (size_t i0 = 0; i0 < T; i0 += QB) {
				size_t n = T - i0 < QB ? T - i0 : QB, k0 = key_lo(i0, window), kl = i0 + n - k0;
				lora_blas_sgemm(0, 1, n, kl, HS, scale, Q + i0 * QKV, QKV, K + k0 * QKV, QKV, 0, S, kl);
				for (size_t r = 0; r < n; r++) {
					size_t t = i0 + r;
					softmax_recompute_row(S + r * kl, key_lo(t, window) - k0, t - k0 + 1, kl, L[t]);
				}
				// dV += P^T dO; dP = dO V^T
				lora_blas_sgemm(1, 0, kl, HS, n, 1, S, kl, dO + i0 * QD, QD, 1, dV + k0 * QKV, QKV);
				lora_blas_sgemm(0, 1, n, kl, HS, 1, dO + i0 * QD, QD, Vv + k0 * QKV, QKV, 0, dP, kl);
				for (size_t r = 0; r < n; r++) {
					float *s = S + r * kl, *dp = dP + r * kl, Dt = D[i0 + r];
#pragma omp simd
					for (size_t j = 0; j < kl; j++)
						dp[j] = s[j] * (dp[j] - Dt);
				}
				// dQ += scale dS K; dK += scale dS^T Q
				lora_blas_sgemm(0, 0, n, HS, kl, scale, dP, kl, K + k0 * QKV, QKV, 1, dQ + i0 * QKV, QKV);
				lora_blas_sgemm(1, 0, kl, HS, n, scale, dP, kl, Q + i0 * QKV, QKV, 1, dK + k0 * QKV, QKV);
			}
		}
	}
}

void lora_kernels_attention_decode(float *att, float *kc, float *vc, float *scratch, const float *qkv, size_t pos,
                                   size_t maxT, size_t B, size_t T, size_t NH, size_t NKV, size_t HS, size_t window,
                                   int nthr)
{
	size_t QD = NH * HS, KVD = NKV * HS, QKV = QD + 2 * KVD, G = NH / NKV;
	size_t stride = lora_kernels_attention_scratch(maxT);
	float scale = attention_scale(HS);
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
		const float *Q = qkv + b * T * QKV + h * HS;
		const float *K = kc + b * maxT * KVD + g * HS, *Vv = vc + b * maxT * KVD + g * HS;
		float *O = att + b * T * QD + h * HS;
		for (size_t i0 = 0; i0 < T; i0 += QB) {
			size_t n = T - i0 < QB ? T - i0 : QB, k0 = key_lo(pos + i0, window), kl = pos + i0 + n - k0;
			lora_blas_sgemm(0, 1, n, kl, HS, scale, Q + i0 * QKV, QKV, K + k0 * KVD, KVD, 0, S, kl);
			for (size_t r = 0; r < n; r++) {
				size_t t = pos + i0 + r;
				softmax_row(S + r * kl, key_lo(t, window) - k0, t - k0 + 1, kl);
			}
			lora_blas_sgemm(0, 0, n, HS, kl, 1, S, kl, Vv + k0 * KVD, KVD, 0, O + i0 * QD, QD);
		}
	}
}

/* ---- SwiGLU, cross-entropy, bias ---- */

void lora_kernels_swiglu_forward(float *h, const float *gu, size_t N, size_t F)
{
#pragma omp parallel for PAR_IF(N * F)
	for (size_t i = 0; i < N; i++)
		swiglu_row(h + i * F, gu + i * 2 * F, gu + i * 2 * F + F, F);
}

void lora_kernels_swiglu_backward(float *dgu, const float *dh, const float *gu, size_t N, size_t F)
{
#pragma omp parallel for PAR_IF(N * F)
	for (size_t i = 0; i < N; i++)
		swiglu_backward_row(dgu + i * 2 * F, dgu + i * 2 * F + F, dh + i * F, gu + i * 2 * F, gu + i * 2 * F + F, F);
}

void lora_kernels_crossentropy_forward(double *rowloss, float *logits, const int32_t *targets, float gscale,
                                       size_t N, size_t V)
{
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
}

void lora_kernels_bias_forward(float *y, const float *bias, float s, size_t N, size_t n, size_t ldy)
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

uint64_t lora_kernels_dropout_key(uint64_t seed, uint64_t stream)
{
	return mix64(seed ^ mix64(stream + 0x5851f42d4c957f2dull));
}

// out (N,C) = x * mask / (1-p), or out += x * mask / (1-p)
static void dropout(float *out, const float *x, uint64_t key, float p, size_t N, size_t C, int accumulate)
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
