#include "ops/diff.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/load.h"
#include "math/linalg.h"
#include "ops/svd.h"


static int push_name(const char ***list, size_t *n, const char *name, lora_err *e)
{
	const char **l = realloc(*list, (*n + 1) * sizeof *l);
	if (!l)
		return lora_err_nomem(e);
	l[(*n)++] = name;
	*list = l;
	return 0;
}

int lora_diff_subspace_phi(double *phi, const double *U1t, size_t k1, const double *U2t, size_t k2,
                           size_t n, lora_err *e)
{
	double *M = lora_shape_alloc(k1 * k2, sizeof *M);
	if (!M)
		return lora_err_nomem(e);
	lora_linalg_dgemm(0, 1, k1, k2, n, 1.0, U1t, U2t, 0.0, M);
	/* P(i, j) = sum of M(a, b)^2 over a <= i, b <= j, built row by row. */
	for (size_t i = 0; i < k1; i++) {
		double row = 0;
		for (size_t j = 0; j < k2; j++) {
			row += M[i * k2 + j] * M[i * k2 + j];
			phi[i * k2 + j] = row + (i ? phi[(i - 1) * k2 + j] : 0);
		}
	}
	/* Divide only after the running sums are complete. */
	for (size_t i = k1; i-- > 0;)
		for (size_t j = 0; j < k2; j++)
			phi[i * k2 + j] /= (double)(i < j ? i + 1 : j + 1);
	free(M);
	return 0;
}

static void transpose(double *dst, const double *src, size_t rows, size_t cols)
{
	for (size_t i = 0; i < rows; i++)
		for (size_t j = 0; j < cols; j++)
			dst[j * rows + i] = src[i * cols + j];
}

/* ||X1_k X2_k^T||_F^2 / k for the first k rows of X1 (k1 x n) and X2 (k2 x n). */
static double top_similarity(const double *X1, const double *X2, size_t k, size_t n, lora_err *e, int *rc)
{
	double *M = lora_shape_alloc(k * k, sizeof *M), s = 0;
	if (!M) {
		*rc = lora_err_nomem(e);
		return 0;
	}
	lora_linalg_dgemm(0, 1, k, k, n, 1.0, X1, X2, 0.0, M);
	for (size_t i = 0; i < k * k; i++)
		s += M[i] * M[i];
	free(M);
	return k ? s / (double)k : 0;
}

/* Right-singular vectors of A (as rows, k x n) or left-singular vectors of
 * B (as rows, k x m), k = min(rank, side). */
static double *singular_rows(const lora_layer *l, int of_B, size_t *k, lora_err *e)
{
	size_t side = of_B ? l->out : l->in, r = l->rank;
	double *S = NULL, *V = NULL, *T = NULL;
	*k = lora_shape_min(r, side);
	S = lora_shape_alloc(*k, sizeof *S);
	V = lora_shape_alloc(*k * side, sizeof *V);
	if (!S || !V)
		goto fail;
	if (of_B) {
		if (!(T = lora_shape_alloc(*k * side, sizeof *T)))
			goto fail;
		if (lora_linalg_lowrank_svd(T, S, NULL, l->B, NULL, side, r, r, e))
			goto err;
		transpose(V, T, side, *k);
		free(T);
	} else if (lora_linalg_lowrank_svd(NULL, S, V, NULL, l->A, r, r, side, e)) {
		goto err;
	}
	free(S);
	return V;
fail:
	lora_err_nomem(e);
err:
	free(S), free(V), free(T);
	return NULL;
}

static int subspace(lora_diff_layer *d, const lora_layer *la, const lora_layer *lb, size_t top, lora_err *e)
{
	int rc = 0;
	double *Va = NULL, *Vb = NULL, *Ua = NULL, *Ub = NULL, *Sa = NULL, *Sb = NULL;
	double *Wa = NULL, *Wb = NULL, *UaT = NULL, *UbT = NULL;
	size_t ka, kb, m = la->out, n = la->in;
	for (int side = 0; side < 2; side++) {
		double **phi = side ? &d->phi_B : &d->phi_A;
		size_t *rows = side ? &d->phiB_rows : &d->phiA_rows, *cols = side ? &d->phiB_cols : &d->phiA_cols;
		if (!(Va = singular_rows(la, side, &ka, e)) || !(Vb = singular_rows(lb, side, &kb, e))) {
			rc = e ? e->code : LORA_ENOMEM;
			goto out;
		}
		if (!(*phi = lora_shape_alloc(ka * kb, sizeof **phi))) {
			rc = lora_err_nomem(e);
			goto out;
		}
		*rows = ka, *cols = kb;
		if ((rc = lora_diff_subspace_phi(*phi, Va, ka, Vb, kb, side ? m : n, e)))
			goto out;
		free(Va), free(Vb);
		Va = Vb = NULL;
	}
	/* Top-k singular directions of the deltas themselves. */
	ka = lora_shape_min(lora_shape_min(m, n), la->rank), kb = lora_shape_min(lora_shape_min(m, n), lb->rank);
	size_t k = lora_shape_min(ka, kb);
	if (top && top < k)
		k = top;
	d->top = k;
	Sa = lora_shape_alloc(ka, sizeof *Sa), Sb = lora_shape_alloc(kb, sizeof *Sb);
	Ua = lora_shape_alloc(m * ka, sizeof *Ua), Ub = lora_shape_alloc(m * kb, sizeof *Ub);
	Wa = lora_shape_alloc(ka * n, sizeof *Wa), Wb = lora_shape_alloc(kb * n, sizeof *Wb);
	UaT = lora_shape_alloc(m * ka, sizeof *UaT), UbT = lora_shape_alloc(m * kb, sizeof *UbT);
	if (!Sa || !Sb || !Ua || !Ub || !Wa || !Wb || !UaT || !UbT) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if ((rc = lora_linalg_lowrank_svd(Ua, Sa, Wa, la->B, la->A, m, la->rank, n, e)) ||
	    (rc = lora_linalg_lowrank_svd(Ub, Sb, Wb, lb->B, lb->A, m, lb->rank, n, e)))
		goto out;
	transpose(UaT, Ua, m, ka);
	transpose(UbT, Ub, m, kb);
	d->top_out = top_similarity(UaT, UbT, k, m, e, &rc);
	if (!rc)
		d->top_in = top_similarity(Wa, Wb, k, n, e, &rc);
out:
	free(Va), free(Vb), free(Ua), free(Ub), free(Sa), free(Sb);
	free(Wa), free(Wb), free(UaT), free(UbT);
	return rc;
}

static int same_layer(const lora_layer *x, double sx, const lora_layer *y, double sy)
{
	return x->rank == y->rank && sx == sy && !memcmp(x->A, y->A, x->rank * x->in * sizeof *x->A) &&
	       !memcmp(x->B, y->B, x->out * x->rank * sizeof *x->B);
}

/* Relative difference of two vectors (either may be NULL = absent). */
static double vec_rel(const float *x, double sx, const float *y, double sy, size_t n)
{
	double d = 0, nx = 0, ny = 0;
	for (size_t i = 0; i < n; i++) {
		double a = x ? sx * x[i] : 0, b = y ? sy * y[i] : 0;
		d += (a - b) * (a - b);
		nx += a * a;
		ny += b * b;
	}
	double mx = sqrt(nx > ny ? nx : ny);
	return mx > 0 ? sqrt(d) / mx : 0;
}

static double vectors_diff(const lora_layer *la, double sa, const lora_layer *lb, double sb)
{
	double v = NAN;
	if (la->magnitude || lb->magnitude)
		v = la->magnitude && lb->magnitude ? vec_rel(la->magnitude, 1, lb->magnitude, 1, la->out) : 1;
	if (la->bias || lb->bias) {
		double b = vec_rel(la->bias, sa, lb->bias, sb, la->out);
		v = isnan(v) || b > v ? b : v;
	}
	return v;
}

static int compare_layer(lora_diff_layer *d, const lora_layer *la, double sa, const lora_layer *lb,
                         double sb, lora_err *e)
{
	size_t m = la->out, n = la->in;
	double aa, bb, ab, dist;
	int rc;
	d->name = la->name;
	d->out = m, d->in = n, d->rank_a = la->rank, d->rank_b = lb->rank;
	if ((rc = lora_linalg_lowrank_inner(&aa, la->B, la->A, la->rank, la->B, la->A, la->rank, m, n, e)) ||
	    (rc = lora_linalg_lowrank_inner(&bb, lb->B, lb->A, lb->rank, lb->B, lb->A, lb->rank, m, n, e)) ||
	    (rc = lora_linalg_lowrank_inner(&ab, la->B, la->A, la->rank, lb->B, lb->A, lb->rank, m, n, e)))
		return rc;
	d->norm_a = fabs(sa) * sqrt(aa > 0 ? aa : 0);
	d->norm_b = fabs(sb) * sqrt(bb > 0 ? bb : 0);
	if (same_layer(la, sa, lb, sb))
		dist = 0;
	else if ((rc = lora_linalg_lowrank_dist(&dist, sa, la->B, la->A, la->rank, sb, lb->B, lb->A, lb->rank, m, n, e)))
		return rc;
	double mx = d->norm_a > d->norm_b ? d->norm_a : d->norm_b;
	d->rel_diff = mx > 0 ? dist / mx : 0;
	d->vec_diff = vectors_diff(la, sa, lb, sb);
	if (d->norm_a > 0 && d->norm_b > 0) {
		double c = sa * sb * ab / (d->norm_a * d->norm_b);
		d->cosine = c > 1 ? 1 : c < -1 ? -1 : c;
	} else {
		d->cosine = NAN;
	}
	return 0;
}

int lora_diff_adapters(lora_diff_result *r, const lora_adapter *a, const char *name_a,
                       const lora_adapter *b, const char *name_b, int subspace_on, size_t top,
                       lora_err *e)
{
	int rc = 0;
	memset(r, 0, sizeof *r);
	if (!(r->layers = calloc(a->nlayers ? a->nlayers : 1, sizeof *r->layers)))
		return lora_err_nomem(e);
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *la = &a->layers[i], *lb = lora_adapter_find(b, la->name);
		if (!lb) {
			if ((rc = push_name(&r->only_a, &r->n_only_a, la->name, e)))
				goto fail;
			continue;
		}
		if (la->out != lb->out || la->in != lb->in) {
			rc = lora_err_set(e, LORA_EINVAL, "layer '%s': shape %zux%zu in %s but %zux%zu in %s", la->name,
			                  la->out, la->in, name_a, lb->out, lb->in, name_b);
			goto fail;
		}
		lora_diff_layer *d = &r->layers[r->nlayers++];
		double sa = lora_adapter_layer_scale(a, la), sb = lora_adapter_layer_scale(b, lb);
		if ((rc = compare_layer(d, la, sa, lb, sb, e)) || (subspace_on && (rc = subspace(d, la, lb, top, e)))) {
			lora_err_prefix(e, "layer '%s'", la->name);
			goto fail;
		}
	}
	for (size_t i = 0; i < b->nlayers; i++)
		if (!lora_adapter_find(a, b->layers[i].name) &&
		    (rc = push_name(&r->only_b, &r->n_only_b, b->layers[i].name, e)))
			goto fail;
	return 0;
fail:
	lora_diff_result_free(r);
	return rc;
}

void lora_diff_result_free(lora_diff_result *r)
{
	for (size_t i = 0; i < r->nlayers; i++) {
		free(r->layers[i].phi_A);
		free(r->layers[i].phi_B);
	}
	free(r->layers);
	free(r->only_a);
	free(r->only_b);
	memset(r, 0, sizeof *r);
}

/* ---- checkpoints ---- */

/* 1 if t selects the module of a weight tensor, 0 if not, or an error. */
static int selected(const lora_targets *t, const char *tensor, lora_err *e)
{
	if (!t)
		return 1;
	size_t len = strlen(tensor);
	char module[1024];
	if (len <= 7 || strcmp(tensor + len - 7, ".weight") != 0 || len - 7 >= sizeof module)
		return 0;
	memcpy(module, tensor, len - 7);
	module[len - 7] = 0;
	return lora_targets_match(t, module, e);
}


static int same_shape(const lora_st_tensor *x, const lora_st_tensor *y)
{
	if (x->ndim != y->ndim)
		return 0;
	for (size_t i = 0; i < x->ndim; i++)
		if (x->shape[i] != y->shape[i])
			return 0;
	return 1;
}

/* D = W_tuned - W_base in f32, the base converted a chunk at a time;
 * returns ||W_base||_F^2. */
static double tensor_difference(float *D, const lora_st_tensor *x, const lora_st_tensor *y, float *tmp,
                                size_t chunk)
{
	size_t n = x->nelem, es = lora_dtype_size(x->dtype);
	double bn = 0;
	lora_dtype_to_f32(D, y->data, y->dtype, n);
	for (size_t j = 0; j < n; j += chunk) {
		size_t k = n - j < chunk ? n - j : chunk;
		lora_dtype_to_f32(tmp, (const unsigned char *)x->data + j * es, x->dtype, k);
		bn += lora_linalg_sumsq(tmp, k);
		for (size_t q = 0; q < k; q++)
			D[j + q] -= tmp[q];
	}
	return bn;
}

int lora_diff_models(lora_diff_models_result *r, const lora_ckpt *base, const lora_ckpt *tuned,
                     const lora_targets *t,
                     void (*progress)(void *ctx, size_t i, size_t n, const char *name), void *ctx,
                     lora_err *e)
{
	enum { CHUNK = 1 << 16 };
	float *dW = NULL, *tmp = malloc(CHUNK * sizeof *tmp);
	double *ev = NULL;
	size_t maxel = 0, maxp = 0;
	char s1[64], s2s[64];
	int rc = 0;
	memset(r, 0, sizeof *r);
	if (!tmp || !(r->tensors = calloc(base->ntensors ? base->ntensors : 1, sizeof *r->tensors))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	/* Validate everything first, so trouble shows before the slow part. */
	for (size_t i = 0; i < base->ntensors; i++) {
		const lora_st_tensor *x = base->tensors[i], *y;
		int hit = selected(t, x->name, e);
		if (hit < 0) {
			rc = hit;
			goto fail;
		}
		if (!hit)
			continue;
		if (!(y = lora_ckpt_find(tuned, x->name))) {
			if ((rc = push_name(&r->only_base, &r->n_only_base, x->name, e)))
				goto fail;
			continue;
		}
		if (!same_shape(x, y)) {
			lora_shape_format(s1, sizeof s1, x->shape, x->ndim);
			lora_shape_format(s2s, sizeof s2s, y->shape, y->ndim);
			rc = lora_err_set(e, LORA_EINVAL, "tensor '%s': shape %s in %s but %s in %s", x->name, s1,
			                  base->path, s2s, tuned->path);
			goto fail;
		}
		lora_diff_tensor *d = &r->tensors[r->ntensors++];
		d->name = x->name;
		d->ndim = x->ndim;
		memcpy(d->shape, x->shape, sizeof d->shape);
		d->compared = lora_dtype_is_float(x->dtype) && lora_dtype_is_float(y->dtype);
		if (x->nelem > maxel)
			maxel = x->nelem;
		if (x->ndim == 2 && lora_shape_min(x->shape[0], x->shape[1]) > maxp)
			maxp = lora_shape_min(x->shape[0], x->shape[1]);
	}
	for (size_t i = 0; i < tuned->ntensors; i++) {
		const char *name = tuned->tensors[i]->name;
		int hit = selected(t, name, e);
		if (hit < 0) {
			rc = hit;
			goto fail;
		}
		if (hit && !lora_ckpt_find(base, name) && (rc = push_name(&r->only_tuned, &r->n_only_tuned, name, e)))
			goto fail;
	}
	if (!(dW = lora_shape_alloc(maxel, sizeof *dW)) || !(ev = lora_shape_alloc(maxp, sizeof *ev))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	for (size_t i = 0; i < r->ntensors; i++) {
		lora_diff_tensor *d = &r->tensors[i];
		const lora_st_tensor *x = lora_ckpt_find(base, d->name), *y = lora_ckpt_find(tuned, d->name);
		if (progress)
			progress(ctx, i, r->ntensors, d->name);
		d->rank50 = d->rank90 = d->rank99 = -1;
		if (!d->compared) {
			int same = x->dtype == y->dtype && x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes);
			d->norm = d->base_norm = NAN;
			d->relative = same ? 0 : INFINITY;
			lora_st_release(x);
			lora_st_release(y);
			continue;
		}
		size_t n = x->nelem;
		double bn = tensor_difference(dW, x, y, tmp, CHUNK);
		lora_st_release(x);
		lora_st_release(y);
		double ss = lora_linalg_sumsq(dW, n);
		if (!isfinite(ss)) {
			rc = lora_err_set(e, LORA_EINVAL, "tensor '%s': the difference of %s and %s is not finite",
			                  d->name, tuned->path, base->path);
			goto fail;
		}
		d->norm = sqrt(ss);
		d->base_norm = sqrt(bn);
		d->relative = ss == 0 ? 0 : bn > 0 ? d->norm / d->base_norm : INFINITY;
		if (d->ndim != 2)
			continue;
		size_t rows = d->shape[0], cols = d->shape[1], p = lora_shape_min(rows, cols);
		if (ss == 0) {
			d->rank50 = d->rank90 = d->rank99 = 0;
			continue;
		}
		if ((rc = lora_linalg_sq_svals(ev, dW, rows, cols, e))) {
			lora_err_prefix(e, "tensor '%s'", d->name);
			goto fail;
		}
		double tot = 0;
		for (size_t j = 0; j < p; j++)
			tot += ev[j];
		d->rank50 = (long)lora_svd_pick_rank(ev, p, tot, 0.5, 0);
		d->rank90 = (long)lora_svd_pick_rank(ev, p, tot, 0.9, 0);
		d->rank99 = (long)lora_svd_pick_rank(ev, p, tot, 0.99, 0);
	}
	goto out;
fail:
	lora_diff_models_free(r);
out:
	free(dW), free(tmp), free(ev);
	return rc;
}

/* Does tensor x differ from y (same shape)? Bytes first; values when the
 * dtypes differ. */
static int tensor_changed(const lora_st_tensor *x, const lora_st_tensor *y, float *t1, float *t2, size_t chunk)
{
	if (x->dtype == y->dtype)
		return memcmp(x->data, y->data, x->nbytes) != 0;
	if (!lora_dtype_is_float(x->dtype) || !lora_dtype_is_float(y->dtype))
		return 1;
	size_t ex = lora_dtype_size(x->dtype), ey = lora_dtype_size(y->dtype);
	for (size_t j = 0; j < x->nelem; j += chunk) {
		size_t k = x->nelem - j < chunk ? x->nelem - j : chunk;
		lora_dtype_to_f32(t1, (const unsigned char *)x->data + j * ex, x->dtype, k);
		lora_dtype_to_f32(t2, (const unsigned char *)y->data + j * ey, y->dtype, k);
		for (size_t q = 0; q < k; q++)
			if (t1[q] != t2[q])
				return 1;
	}
	return 0;
}

int lora_diff_adapter_model(lora_diff_result *r, const lora_adapter *a, const char *name_a,
                            const lora_ckpt *base, const lora_ckpt *tuned, const lora_targets *t,
                            void (*progress)(void *ctx, size_t i, size_t n, const char *name),
                            void *ctx, lora_err *e)
{
	enum { CHUNK = 1 << 16 };
	const lora_st_tensor **xs = calloc(a->nlayers ? a->nlayers : 1, sizeof *xs);
	const lora_st_tensor **ys = calloc(a->nlayers ? a->nlayers : 1, sizeof *ys);
	float *D = NULL, *T = NULL, *t1 = malloc(CHUNK * sizeof *t1), *t2 = malloc(CHUNK * sizeof *t2);
	size_t maxel = 0, maxr = 0;
	char tn[1100], s1[64];
	int rc = 0;
	memset(r, 0, sizeof *r);
	if (!xs || !ys || !t1 || !t2 || !(r->layers = calloc(a->nlayers ? a->nlayers : 1, sizeof *r->layers))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	/* Every layer must find its tensor, of its shape, before any work. */
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		const lora_ckpt *ms[2] = {base, tuned};
		snprintf(tn, sizeof tn, "%s.weight", l->name);
		for (int k = 0; k < 2; k++) {
			const lora_st_tensor *x = lora_ckpt_find(ms[k], tn);
			if (!x) {
				rc = lora_err_set(e, LORA_EINVAL, "layer '%s' of %s: no tensor '%s' in %s", l->name, name_a, tn,
				                  ms[k]->path);
				goto fail;
			}
			if (x->ndim != 2 || x->shape[0] != l->out || x->shape[1] != l->in) {
				lora_shape_format(s1, sizeof s1, x->shape, x->ndim);
				rc = lora_err_set(e, LORA_EINVAL, "layer '%s': shape %zux%zu in %s but %s in %s", l->name, l->out,
				                  l->in, name_a, s1, ms[k]->path);
				goto fail;
			}
			if (!lora_dtype_is_float(x->dtype)) {
				rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 can be differenced",
				                  ms[k]->path, tn, lora_dtype_st_name(x->dtype));
				goto fail;
			}
			(k ? ys : xs)[i] = x;
		}
		if (xs[i]->nelem > maxel)
			maxel = xs[i]->nelem;
		if (l->out * l->rank > maxr)
			maxr = l->out * l->rank;
	}
	if (!(D = lora_shape_alloc(maxel, sizeof *D)) || !(T = lora_shape_alloc(maxr, sizeof *T))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		lora_diff_layer *d = &r->layers[r->nlayers++];
		size_t m = l->out, n = l->in;
		double s = lora_adapter_layer_scale(a, l), aa, res;
		if (progress)
			progress(ctx, i, a->nlayers, l->name);
		tensor_difference(D, xs[i], ys[i], t1, CHUNK);
		lora_st_release(xs[i]);
		lora_st_release(ys[i]);
		double dd = lora_linalg_sumsq(D, m * n);
		if (!isfinite(dd)) {
			rc = lora_err_set(e, LORA_EINVAL, "tensor '%s': the difference of %s and %s is not finite",
			                  xs[i]->name, tuned->path, base->path);
			goto fail;
		}
		d->name = l->name;
		d->out = m, d->in = n, d->rank_a = l->rank, d->rank_b = 0;
		d->vec_diff = NAN;
		/* <s B A, D> = s sum (B o (D A^T)); ||s B A - D|| by row blocks. */
		lora_linalg_sgemm(0, 1, m, l->rank, n, 1.0f, D, l->A, 0.0f, T);
		double ip = 0;
		for (size_t q = 0; q < m * l->rank; q++)
			ip += (double)l->B[q] * T[q];
		ip *= s;
		if ((rc = lora_linalg_lowrank_inner(&aa, l->B, l->A, l->rank, l->B, l->A, l->rank, m, n, e)) ||
		    (rc = lora_linalg_residual_sq(&res, D, (float)s, l->B, l->A, m, l->rank, n, e))) {
			lora_err_prefix(e, "layer '%s'", l->name);
			goto fail;
		}
		d->norm_a = fabs(s) * sqrt(aa > 0 ? aa : 0);
		d->norm_b = sqrt(dd);
		double mx = d->norm_a > d->norm_b ? d->norm_a : d->norm_b;
		d->rel_diff = mx > 0 ? sqrt(res) / mx : 0;
		if (d->norm_a > 0 && d->norm_b > 0) {
			double c = ip / (d->norm_a * d->norm_b);
			d->cosine = c > 1 ? 1 : c < -1 ? -1 : c;
		} else {
			d->cosine = NAN;
		}
	}
	/* Changed weights the adapter does not cover. */
	for (size_t i = 0; i < base->ntensors; i++) {
		const lora_st_tensor *x = base->tensors[i], *y;
		size_t len = strlen(x->name);
		if (x->ndim != 2 || len <= 7 || strcmp(x->name + len - 7, ".weight") != 0)
			continue;
		int hit = selected(t, x->name, e);
		if (hit < 0) {
			rc = hit;
			goto fail;
		}
		if (!hit)
			continue;
		snprintf(tn, sizeof tn, "%.*s", (int)(len - 7), x->name);
		if (lora_adapter_find(a, tn) || !(y = lora_ckpt_find(tuned, x->name)) || !same_shape(x, y))
			continue;
		int changed = tensor_changed(x, y, t1, t2, CHUNK);
		lora_st_release(x);
		lora_st_release(y);
		if (changed && (rc = push_name(&r->only_b, &r->n_only_b, x->name, e)))
			goto fail;
	}
	goto out;
fail:
	lora_diff_result_free(r);
out:
	free(xs), free(ys), free(D), free(T), free(t1), free(t2);
	return rc;
}

void lora_diff_models_free(lora_diff_models_result *r)
{
	free(r->tensors);
	free(r->only_base);
	free(r->only_tuned);
	memset(r, 0, sizeof *r);
}

int lora_diff_layer_differs(const lora_diff_layer *d, double tol)
{
	return !(d->rel_diff <= tol) || (!isnan(d->vec_diff) && !(d->vec_diff <= tol));
}

size_t lora_diff_count(const lora_diff_result *r, double tol, int *same)
{
	size_t n = 0;
	for (size_t i = 0; i < r->nlayers; i++)
		n += (size_t)lora_diff_layer_differs(&r->layers[i], tol);
	*same = !n && !r->n_only_a && !r->n_only_b;
	return n;
}

int lora_diff_tensor_differs(const lora_diff_tensor *d, double tol) { return !(d->relative <= tol); }

size_t lora_diff_models_count(const lora_diff_models_result *r, double tol, int *same)
{
	size_t n = 0;
	for (size_t i = 0; i < r->ntensors; i++)
		n += (size_t)lora_diff_tensor_differs(&r->tensors[i], tol);
	*same = !n && !r->n_only_base && !r->n_only_tuned;
	return n;
}

void lora_diff_run_free(lora_diff_run *r)
{
	lora_diff_result_free(&r->layers);
	lora_diff_models_free(&r->tensors);
	lora_adapter_free(r->a);
	lora_adapter_free(r->b);
	lora_ckpt_close(r->base);
	lora_ckpt_close(r->tuned);
	memset(r, 0, sizeof *r);
}

int lora_diff_job_check(const lora_diff_job *j, int have_top, lora_err *e)
{
	if (j->base || j->tuned) {
		if (!j->base || !j->tuned)
			return lora_err_set(e, LORA_EUSAGE, j->base ? "-m BASE needs --tuned TUNED" : "--tuned TUNED needs -m BASE");
		if (j->b)
			return lora_err_set(e, LORA_EUSAGE, "unexpected operand '%s': -m and --tuned take one adapter at most", j->b);
		if (j->subspace || have_top)
			return lora_err_set(e, LORA_EUSAGE, "%s compares adapters, not checkpoints",
			                    j->subspace ? "--subspace" : "--top");
		if (j->targets && j->regex)
			return lora_err_set(e, LORA_EUSAGE, "-t and --target-regex are exclusive");
		return 0;
	}
	if (!j->b)
		return lora_err_set(e, LORA_EUSAGE, j->a ? "need a second adapter B" : "need two adapters A and B, or -m and --tuned");
	if (j->targets || j->regex)
		return lora_err_set(e, LORA_EUSAGE, "%s goes with -m and --tuned", j->targets ? "-t" : "--target-regex");
	if (have_top && !j->subspace)
		return lora_err_set(e, LORA_EUSAGE, "--top goes with --subspace");
	return 0;
}

static const char *display(const char *path) { return strcmp(path, "-") ? path : "standard input"; }

int lora_diff_run_job(lora_diff_run *r, const lora_diff_job *j, lora_err *e)
{
	lora_targets t = {0};
	int rc = 0, has_t = j->targets || j->regex;
	memset(r, 0, sizeof *r);
	if (!j->base) {
		if (strcmp(j->a, "-") == 0 && strcmp(j->b, "-") == 0)
			return lora_err_set(e, LORA_EUSAGE, "only one of A and B can be standard input");
		if ((rc = lora_load_adapter(&r->a, j->a, e)) || (rc = lora_load_adapter(&r->b, j->b, e)))
			return rc;
		return lora_diff_adapters(&r->layers, r->a, display(j->a), r->b, display(j->b), j->subspace, j->top, e);
	}
	if (has_t && (rc = lora_targets_init(&t, j->targets, j->regex, e)))
		return rc;
	if (j->a && (rc = lora_load_adapter(&r->a, j->a, e)))
		goto out;
	if ((rc = lora_ckpt_open(&r->base, j->base, e)) || (rc = lora_ckpt_open(&r->tuned, j->tuned, e)))
		goto out;
	r->models = !j->a;
	if (j->a)
		rc = lora_diff_adapter_model(&r->layers, r->a, display(j->a), r->base, r->tuned, has_t ? &t : NULL,
		                             j->progress, j->ctx, e);
	else
		rc = lora_diff_models(&r->tensors, r->base, r->tuned, has_t ? &t : NULL, j->progress, j->ctx, e);
out:
	lora_targets_free(&t);
	return rc;
}
