/* svd: truncated SVDs as LoRA factors (lora-svd, lora-merge --combine svd).
 *
 * Two jobs. Extraction: for each target tensor of two checkpoints,
 * dW = W_tuned - W_base = U S V^T truncated to rank r and stored as
 * B = U_r S_r^(1/2), A = S_r^(1/2) V_r^T with alpha = r (scaling 1).
 * Re-ranking: the same for the product s B A of an existing layer, from the
 * small factors only. The rank is fixed or, per layer, the smallest keeping
 * a fraction of the energy ||dW||_F^2. Every dense operation goes through
 * linalg. */
#ifndef LORA_SVD_H
#define LORA_SVD_H

#include <stddef.h>
#include <stdint.h>

#include "core/adapter.h"
#include "core/err.h"
#include "io/ckpt.h"
#include "ops/targets.h"
#include "core/dtype.h"

typedef enum { LORA_SVD_RANDOMIZED, LORA_SVD_EXACT } lora_svd_method;

typedef struct {
	size_t rank;            /* fixed rank, clamped to min(out, in) per layer; 0 = by energy */
	double energy;          /* with rank 0: fraction in (0, 1] of ||dW||_F^2 to keep */
	size_t max_rank;        /* with energy: cap on the chosen rank (0 = none) */
	lora_svd_method method; /* extraction only; re-ranking is always exact */
	size_t oversample;      /* randomized: P extra test vectors (default 10) */
	size_t power_iters;     /* randomized: Q subspace iterations (default 2) */
	uint64_t seed;          /* randomized: per layer mixed with the layer name */
	lora_dtype dtype;       /* storage dtype of the result (default f32) */
	/* Called before each tensor is processed (may be NULL). */
	void (*progress)(void *ctx, size_t i, size_t n, const char *name);
	void *progress_ctx;
} lora_svd_opts;

/* Defaults: rank 0, energy 0 (the caller sets one), randomized, P 10, Q 2,
 * seed 0, f32. */
void lora_svd_opts_init(lora_svd_opts *o);
const char *lora_svd_method_name(lora_svd_method m);
/* Parse "randomized" / "exact"; 0 or -1. */
int lora_svd_method_parse(const char *s, lora_svd_method *m);

/* What happened to one layer. */
typedef struct {
	char *name;
	size_t out, in;
	size_t old_rank;  /* re-ranking: the input rank; extraction: 0 */
	size_t rank;      /* rank written */
	double norm;      /* ||dW||_F */
	double energy;    /* sum of the kept s_i^2 / ||dW||_F^2 (1 when dW = 0) */
	double rel_error; /* ||dW - B A||_F / ||dW||_F of the factors as stored (0 when dW = 0);
	                     re-ranking to f32 takes it from the dropped singular values */
} lora_svd_layer_report;

typedef struct {
	lora_svd_layer_report *layers;
	size_t nlayers;
	char **skipped;   /* extraction: target tensors whose difference is exactly zero */
	size_t nskipped;
} lora_svd_report;

void lora_svd_report_free(lora_svd_report *r);

/* Rank for an energy rule: the smallest k >= 1 with
 * s2[0] + ... + s2[k-1] >= energy * total (s2 descending squared singular
 * values, n of them), capped at cap (0 = n); n (or cap) if never reached. */
size_t lora_svd_pick_rank(const double *s2, size_t n, double total, double energy, size_t cap);

/* Factor one dense matrix dW (m x n f32, row-major) by o's rule and method:
 * *B (m x *rank) and *A (*rank x n) are allocated (caller frees), already
 * rounded to o->dtype, so that rep (may be NULL) describes what is stored.
 * seed is the randomized method's seed for this matrix. dW must not be
 * all zero. */
int lora_svd_factor(float **B, float **A, size_t *rank, const float *dW, size_t m, size_t n,
                    const lora_svd_opts *o, uint64_t seed, lora_svd_layer_report *rep, lora_err *e);

/* Re-rank every layer of in (rank rule of o; method ignored): QR of B and
 * A^T, SVD of the r x r product of the R factors, in double. The result has
 * scaling 1 (alpha = rank, rslora off) with the old scale folded into the
 * factors, so its delta equals the input's exactly (to f32 rounding) when
 * the new rank is >= the old one (missing directions are zero) and is the
 * optimal truncation otherwise. A layer whose delta is zero keeps rank 1
 * under an energy rule. Metadata (base model, targets, fan_in_fan_out,
 * DoRA magnitudes, extra tensors) is copied and lora_B biases are scaled by
 * the old scale as the factors are; provenance and
 * the imported PEFT config are not. dtype is o->dtype. Caller frees *out;
 * rep (may be NULL) gets one entry per layer. */
int lora_svd_rerank(lora_adapter **out, const lora_adapter *in, const lora_svd_opts *o,
                    lora_svd_report *rep, lora_err *e);

/* Extract an adapter from two checkpoints: for every tensor of base named
 * MODULE.weight with MODULE selected by t, read the same tensor of tuned,
 * form dW = W_tuned - W_base in f32 one tensor at a time (memory: a few
 * copies of the largest tensor) and factor it (lora_svd_factor, seed mixed
 * with the module name). Tensors whose difference is exactly zero are
 * skipped and listed in rep. Errors name the tensor and both paths: missing
 * in tuned, shape mismatch, non-float dtype, a non-2-D target (unless
 * all-linear), non-finite difference, nothing selected, nothing differing.
 * Records the base model's name and fingerprint. Caller frees *out. */
int lora_svd_extract(lora_adapter **out, const lora_ckpt *base, const lora_ckpt *tuned,
                     const lora_targets *t, const lora_svd_opts *o, lora_svd_report *rep,
                     lora_err *e);

/* lora-svd from paths: extraction from base and tuned (targets: the
 * suffix list, "all-linear" when neither it nor regex is given; layers: a
 * block filter), or re-ranking of the adapter at input ("-": standard
 * input; with keep_dtype the result keeps its dtype). out, the output path
 * (may be NULL), is refused when it is one of the models' files: with -f
 * it would replace an input being read. The result records the targets
 * and a provenance naming tool, inputs and settings (and the input's own
 * provenance as "from"). Caller frees *a and rep. */
typedef struct {
	const char *base, *tuned;
	const char *input;
	const char *targets, *regex, *layers;
	const char *out;
	const char *tool;  /* "lora-svd 0.1.0" */
	int keep_dtype;
	lora_svd_opts o;
} lora_svd_job;

int lora_svd_job_run(const lora_svd_job *j, lora_adapter **a, lora_svd_report *rep, lora_err *e);
/* Settings that do not go together, found before any work: LORA_EUSAGE
 * naming the options. random names the first option of the randomized
 * method given (or NULL), extract_only the first extraction-only option
 * given (or NULL). */
int lora_svd_job_check(const lora_svd_job *j, const char *random, const char *extract_only, lora_err *e);

/* The spectrum of one layer's update s B A. */
typedef struct {
	double norm; /* ||s B A||_F */
	double *sv;  /* its singular values, descending: min(rank, out, in) of them */
	size_t nsv;
} lora_svd_spectrum;

/* One spectrum per layer of a (read with its factors), from the factors
 * only (lora_linalg_lowrank_svals). *out has a->nlayers entries; free with
 * lora_svd_spectra_free. An error names the layer. */
int lora_svd_spectra(lora_svd_spectrum **out, const lora_adapter *a, lora_err *e);
void lora_svd_spectra_free(lora_svd_spectrum *s, size_t n);

/* Deep copy of an adapter's metadata and extra tensors (no layers):
 * dtype, rslora, base model, targets, fan_in_fan_out, extras. Provenance
 * and PEFT config are not copied. */
int lora_svd_copy_meta(lora_adapter *dst, const lora_adapter *src, lora_err *e);

#endif
