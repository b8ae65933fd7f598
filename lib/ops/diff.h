/* diff: how two adapters, or two checkpoints, differ (lora-diff).
 *
 * Adapters are compared layer by layer from their small factors only: the
 * deltas dW = s B A (out x in) are never formed. Checkpoints are compared
 * tensor by tensor, one tensor in memory at a time. */
#ifndef LORA_DIFF_H
#define LORA_DIFF_H

#include <stddef.h>

#include "core/adapter.h"
#include "core/err.h"
#include "io/ckpt.h"
#include "ops/targets.h"

typedef struct {
	const char *name;       /* points into the first adapter */
	size_t out, in, rank_a, rank_b;
	double norm_a, norm_b;  /* ||dW_a||_F, ||dW_b||_F */
	double rel_diff;        /* ||dW_a - dW_b||_F / max(norm_a, norm_b); 0 when both are 0 */
	double cosine;          /* <dW_a, dW_b>_F / (norm_a norm_b); NaN when either is 0 */
	/* DoRA magnitude vectors and lora_B biases (times the scale), when
	 * either layer has one: the larger of their relative differences
	 * ||v_a - v_b|| / max(||v_a||, ||v_b||), a missing vector counting as
	 * zero for biases and as a difference of 1 for magnitudes; NaN when
	 * neither layer has any. */
	double vec_diff;
	/* With subspace similarity: phi(i, j) for i in 1..ka, j in 1..kb,
	 * row-major ka x kb, ka = min(rank_a, in) (A) or min(rank_a, out) (B). */
	double *phi_A;          /* right-singular vectors of A_a vs A_b (input space) */
	size_t phiA_rows, phiA_cols;
	double *phi_B;          /* left-singular vectors of B_a vs B_b (output space) */
	size_t phiB_rows, phiB_cols;
	size_t top;             /* k of the top-k comparison of dW_a and dW_b */
	double top_out, top_in; /* ||U_a,k^T U_b,k||_F^2 / k, same with V: 1 same, 0 orthogonal */
} lora_diff_layer;

typedef struct {
	lora_diff_layer *layers; /* common layers, in the first adapter's order */
	size_t nlayers;
	const char **only_a;     /* layer names only in the first / second adapter */
	size_t n_only_a;
	const char **only_b;
	size_t n_only_b;
} lora_diff_result;

/* Compare adapters a and b (named name_a, name_b in errors). A common layer
 * with different shapes is an error. A layer differs when rel_diff or
 * vec_diff exceeds the caller's tolerance. With subspace, also the paper's
 * phi(A1, A2, i, j) = ||U1_i^T U2_j||_F^2 / min(i, j) for the right-singular
 * vectors of A and the left-singular vectors of B, and the normalised
 * similarity of the top-k singular directions of the two deltas on both
 * sides, k = min(top, ranks) (top 0 = min of the ranks). The result points
 * into a and b: free it before them. */
int lora_diff_adapters(lora_diff_result *r, const lora_adapter *a, const char *name_a,
                       const lora_adapter *b, const char *name_b, int subspace, size_t top,
                       lora_err *e);
void lora_diff_result_free(lora_diff_result *r);

/* 1 if layer d differs beyond tol: its rel_diff, or its vec_diff when it
 * has one, above tol (NaN counts as above). */
int lora_diff_layer_differs(const lora_diff_layer *d, double tol);
/* The number of layers that differ; *same is 1 when none does and no
 * layer is in one input only (lora-diff's exit status 0). */
size_t lora_diff_count(const lora_diff_result *r, double tol, int *same);

/* Compare each layer of adapter a (named name_a) with the difference of
 * two checkpoints, D = W_tuned - W_base of the tensor "LAYER.weight": the
 * same numbers as lora_diff_adapters with D as the second update (norm_b =
 * ||D||_F, rank_b 0), from one dense tensor at a time. A layer without its
 * tensor in either checkpoint, or of another shape, is an error. only_b
 * lists the tensors (names ending in .weight, 2-D, selected by t when t is
 * not NULL) that changed but have no layer in a; only_a stays empty. The
 * result points into a and the models. */
int lora_diff_adapter_model(lora_diff_result *r, const lora_adapter *a, const char *name_a,
                            const lora_ckpt *base, const lora_ckpt *tuned, const lora_targets *t,
                            void (*progress)(void *ctx, size_t i, size_t n, const char *name),
                            void *ctx, lora_err *e);

/* phi(i, j) for all 1 <= i <= k1, 1 <= j <= k2 (row-major k1 x k2 into phi)
 * from two sets of orthonormal vectors given as rows: U1t (k1 x n), U2t
 * (k2 x n). Uses M = U1t U2t^T and running sums of M^2. */
int lora_diff_subspace_phi(double *phi, const double *U1t, size_t k1, const double *U2t, size_t k2,
                           size_t n, lora_err *e);

/* One tensor of a checkpoint comparison. */
typedef struct {
	const char *name;       /* points into the base model */
	size_t ndim;
	size_t shape[LORA_MAX_DIMS];
	int compared;           /* 0: a non-float dtype, compared byte for byte only */
	double norm;            /* ||W_tuned - W_base||_F (0 or 1 by bytes when !compared) */
	double base_norm;       /* ||W_base||_F */
	double relative;        /* norm / base_norm; 0 when norm is 0, inf when only base_norm is */
	long rank50, rank90, rank99; /* 2-D: rank keeping 50/90/99% of ||dW||_F^2; -1 otherwise */
} lora_diff_tensor;

typedef struct {
	lora_diff_tensor *tensors; /* common tensors, sorted by name */
	size_t ntensors;
	const char **only_base, **only_tuned;
	size_t n_only_base, n_only_tuned;
} lora_diff_models_result;

/* Compare every tensor of base with the same tensor of tuned (only
 * MODULE.weight tensors with MODULE selected by t, when t is not NULL).
 * The ranks come from the full spectrum of dW (lora_linalg_sq_svals). A shape
 * mismatch is an error naming the tensor and both paths; a non-finite
 * difference too. progress (may be NULL) is called before each tensor.
 * The result points into the models. */
int lora_diff_models(lora_diff_models_result *r, const lora_ckpt *base, const lora_ckpt *tuned,
                     const lora_targets *t,
                     void (*progress)(void *ctx, size_t i, size_t n, const char *name), void *ctx,
                     lora_err *e);
void lora_diff_models_free(lora_diff_models_result *r);

/* 1 if tensor d's relative difference is above tol (NaN counts as above). */
int lora_diff_tensor_differs(const lora_diff_tensor *d, double tol);
/* The number of tensors that differ; *same as lora_diff_count. */
size_t lora_diff_models_count(const lora_diff_models_result *r, double tol, int *same);

/* lora-diff from paths: two adapters a and b ("-": standard input, one
 * of them at most); or, with base and tuned, their tensors (without a) or
 * adapter a against their difference, over the modules targets or regex
 * selects (all when both are NULL). */
typedef struct {
	const char *a, *b;
	const char *base, *tuned;
	const char *targets, *regex;
	int subspace;        /* adapters: the phi tables (lora_diff_adapters) */
	size_t top;
	void (*progress)(void *ctx, size_t i, size_t n, const char *name); /* checkpoints; may be NULL */
	void *ctx;
} lora_diff_job;

typedef struct {
	int models;                      /* 1: tensors holds the result, else layers */
	lora_diff_result layers;
	lora_diff_models_result tensors;
	/* the inputs the results point into */
	lora_adapter *a, *b;
	lora_ckpt *base, *tuned;
} lora_diff_run;

/* Settings that do not go together, found before any work: LORA_EUSAGE
 * naming the options (have_top: --top was given). */
int lora_diff_job_check(const lora_diff_job *j, int have_top, lora_err *e);
/* Compare as j says; free r with lora_diff_run_free (also after an error). */
int lora_diff_run_job(lora_diff_run *r, const lora_diff_job *j, lora_err *e);
void lora_diff_run_free(lora_diff_run *r);

#endif
