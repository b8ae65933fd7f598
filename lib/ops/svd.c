#include "ops/svd.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/load.h"
#include "math/linalg.h"
#include "ops/init.h"
#include "core/rng.h"


void lora_svd_opts_init(lora_svd_opts *o)
{
	memset(o, 0, sizeof *o);
	o->method = LORA_SVD_RANDOMIZED;
	o->oversample = 10;
	o->power_iters = 2;
	o->dtype = LORA_F32;
}

static const char *const method_names[] = {"randomized", "exact"};

const char *lora_svd_method_name(lora_svd_method m) { return method_names[m]; }

int lora_svd_method_parse(const char *s, lora_svd_method *m)
{
	for (int i = 0; i < 2; i++)
		if (strcmp(s, method_names[i]) == 0) {
			*m = (lora_svd_method)i;
			return 0;
		}
	return -1;
}

void lora_svd_report_free(lora_svd_report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nlayers; i++)
		free(r->layers[i].name);
	for (size_t i = 0; i < r->nskipped; i++)
		free(r->skipped[i]);
	free(r->layers);
	free(r->skipped);
	memset(r, 0, sizeof *r);
}

static lora_svd_layer_report *report_add(lora_svd_report *r, const char *name, lora_err *e)
{
	if (!r)
		return NULL;
	lora_svd_layer_report *l = realloc(r->layers, (r->nlayers + 1) * sizeof *l);
	if (!l) {
		lora_err_nomem(e);
		return NULL;
	}
	r->layers = l;
	l += r->nlayers;
	memset(l, 0, sizeof *l);
	if (!(l->name = strdup(name))) {
		lora_err_nomem(e);
		return NULL;
	}
	r->nlayers++;
	return l;
}

static int report_skip(lora_svd_report *r, const char *name, lora_err *e)
{
	if (!r)
		return 0;
	char **s = realloc(r->skipped, (r->nskipped + 1) * sizeof *s);
	if (!s)
		return lora_err_nomem(e);
	r->skipped = s;
	if (!(s[r->nskipped] = strdup(name)))
		return lora_err_nomem(e);
	r->nskipped++;
	return 0;
}

size_t lora_svd_pick_rank(const double *s2, size_t n, double total, double energy, size_t cap)
{
	size_t lim = cap && cap < n ? cap : n;
	double want = energy * total, cum = 0;
	for (size_t k = 0; k < lim; k++) {
		cum += s2[k];
		if (cum >= want)
			return k + 1;
	}
	return lim ? lim : 1;
}

/* Round x to dtype t and back, so the numbers we report are those stored. */
static void round_to(float *x, size_t n, lora_dtype t)
{
	if (t == LORA_F32)
		return;
	enum { CH = 4096 };
	uint16_t buf[CH];
	for (size_t i = 0; i < n; i += CH) {
		size_t k = n - i < CH ? n - i : CH;
		lora_dtype_from_f32(buf, x + i, t, k);
		lora_dtype_to_f32(x + i, buf, t, k);
	}
}

/* B = U_k S_k^(1/2) (m x k), A = S_k^(1/2) Vt_k (k x n), U (m x ku), Vt
 * (kv x n) with their first k vectors used. */
static void split_sqrt(float *B, float *A, const float *U, size_t ku, const double *S, const float *Vt,
                       size_t m, size_t n, size_t k)
{
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < k; j++)
			B[i * k + j] = (float)(U[i * ku + j] * sqrt(S[j]));
	for (size_t j = 0; j < k; j++) {
		float r = (float)sqrt(S[j]);
		for (size_t c = 0; c < n; c++)
			A[j * n + c] = r * Vt[j * n + c];
	}
}

int lora_svd_factor(float **Bout, float **Aout, size_t *rank, const float *dW, size_t m, size_t n,
                    const lora_svd_opts *o, uint64_t seed, lora_svd_layer_report *rep, lora_err *e)
{
	size_t p = lora_shape_min(m, n), cap = o->rank ? lora_shape_min(o->rank, p) : (o->max_rank ? lora_shape_min(o->max_rank, p) : p);
	size_t k = 0, kt;
	double total = lora_linalg_sumsq(dW, m * n), *S = lora_shape_alloc(p, sizeof *S), *s2 = NULL;
	float *U = NULL, *Vt = NULL, *B = NULL, *A = NULL;
	int rc = 0, exact = o->method == LORA_SVD_EXACT;
	*Bout = *Aout = NULL;
	if (!S || !(s2 = lora_shape_alloc(p, sizeof *s2))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	/* Randomized with an energy rule: the rank is not known up front, so
	 * sketch for kt directions, doubling kt until the kept energy is reached
	 * or the cap is; once the sketch would span most of the matrix the exact
	 * SVD is cheaper. */
	kt = o->rank ? cap : lora_shape_min(cap, 32);
	for (;;) {
		if (!exact && !o->rank && kt + o->oversample >= p)
			exact = 1;
		size_t want = exact ? cap : kt;
		free(U), free(Vt);
		U = lora_shape_alloc(m * want, sizeof *U);
		Vt = lora_shape_alloc(n * want, sizeof *Vt);
		if (!U || !Vt) {
			rc = lora_err_nomem(e);
			goto out;
		}
		size_t ns;
		if (exact) {
			rc = lora_linalg_svd_exact(U, S, Vt, dW, m, n, want, e);
			ns = p;
		} else {
			rc = lora_linalg_svd_randomized(U, S, Vt, dW, m, n, want, o->oversample, o->power_iters, seed, e);
			ns = want;
		}
		if (rc)
			goto out;
		for (size_t i = 0; i < ns; i++)
			s2[i] = S[i] * S[i];
		if (o->rank) {
			k = cap;
		} else {
			k = lora_svd_pick_rank(s2, lora_shape_min(ns, want), total, o->energy, cap);
			double cum = 0;
			for (size_t i = 0; i < k; i++)
				cum += s2[i];
			/* Sketch too small: the energy was not reached inside it. */
			if (!exact && k == want && want < cap && cum < o->energy * total) {
				kt = lora_shape_min(2 * kt, cap);
				continue;
			}
		}
		kt = want;
		break;
	}
	if (!(B = lora_shape_alloc(m * k, sizeof *B)) || !(A = lora_shape_alloc(k * n, sizeof *A))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	split_sqrt(B, A, U, kt, S, Vt, m, n, k);
	round_to(B, m * k, o->dtype);
	round_to(A, k * n, o->dtype);
	if (rep) {
		double res, kept = 0;
		if ((rc = lora_linalg_residual_sq(&res, dW, 1.0f, B, A, m, k, n, e)))
			goto out;
		for (size_t i = 0; i < k; i++)
			kept += s2[i];
		rep->out = m, rep->in = n, rep->rank = k;
		rep->norm = sqrt(total);
		rep->energy = total > 0 ? fmin(kept / total, 1.0) : 1;
		rep->rel_error = total > 0 ? sqrt(res / total) : 0;
	}
	*Bout = B, *Aout = A, *rank = k;
	B = A = NULL;
out:
	free(S), free(s2), free(U), free(Vt), free(B), free(A);
	return rc;
}

/* ---- re-ranking ---- */

int lora_svd_copy_meta(lora_adapter *dst, const lora_adapter *src, lora_err *e)
{
	dst->dtype = src->dtype;
	dst->rslora = src->rslora;
	dst->fan_in_fan_out = src->fan_in_fan_out;
	if ((src->base_name && !(dst->base_name = strdup(src->base_name))) ||
	    (src->base_fingerprint && !(dst->base_fingerprint = strdup(src->base_fingerprint))))
		return lora_err_nomem(e);
	for (size_t i = 0; i < src->ntargets; i++)
		if (lora_adapter_add_target(dst, src->targets[i], e))
			return e ? e->code : LORA_ENOMEM;
	for (size_t i = 0; i < src->nextras; i++) {
		const lora_extra *x = &src->extras[i];
		if (!lora_adapter_add_extra(dst, x->name, x->dtype, x->ndim, x->shape, x->data, e))
			return e ? e->code : LORA_ENOMEM;
	}
	return 0;
}

static float *dup_floats(const float *x, size_t n)
{
	float *y = lora_shape_alloc(n, sizeof *y);
	if (y)
		memcpy(y, x, n * sizeof *y);
	return y;
}

/* Re-rank one layer of src (scale s) into a new layer of dst. */
static int rerank_layer(lora_adapter *dst, const lora_layer *l, double s, const lora_svd_opts *o,
                        lora_svd_report *rep, lora_err *e)
{
	size_t m = l->out, n = l->in, kk = lora_shape_min(lora_shape_min(m, n), l->rank), p = lora_shape_min(m, n);
	double *U = lora_shape_alloc(m * kk, sizeof *U), *S = lora_shape_alloc(kk, sizeof *S);
	double *Vt = lora_shape_alloc(kk * n, sizeof *Vt), *s2 = lora_shape_alloc(kk, sizeof *s2);
	int rc = 0;
	if (!U || !S || !Vt || !s2) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if ((rc = lora_linalg_lowrank_svd(U, S, Vt, l->B, l->A, m, l->rank, n, e))) {
		lora_err_prefix(e, "layer '%s'", l->name);
		goto out;
	}
	/* Fold the scale: s B A = U (|s| S) V^T, its sign going to U. */
	double total = 0;
	for (size_t i = 0; i < kk; i++) {
		S[i] *= fabs(s);
		s2[i] = S[i] * S[i];
		total += s2[i];
	}
	size_t k = o->rank ? lora_shape_min(o->rank, p)
	           : total > 0 ? lora_svd_pick_rank(s2, kk, total, o->energy, o->max_rank) : 1;
	lora_layer *nl = lora_adapter_add(dst, l->name, m, n, k, (double)k, 0, e);
	if (!nl) {
		rc = e ? e->code : LORA_ENOMEM;
		goto out;
	}
	size_t kept = lora_shape_min(k, kk); /* directions beyond kk stay zero: B A has no more */
	double sign = s < 0 ? -1.0 : 1.0;
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < kept; j++)
			nl->B[i * k + j] = (float)(sign * U[i * kk + j] * sqrt(S[j]));
	for (size_t j = 0; j < kept; j++)
		for (size_t c = 0; c < n; c++)
			nl->A[j * n + c] = (float)(sqrt(S[j]) * Vt[j * n + c]);
	round_to(nl->B, m * k, o->dtype);
	round_to(nl->A, k * n, o->dtype);
	if ((l->magnitude && !(nl->magnitude = dup_floats(l->magnitude, m))) ||
	    (l->bias && !(nl->bias = dup_floats(l->bias, m)))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	/* PEFT scales lora_B's output, bias included: fold s into it as well. */
	for (size_t i = 0; nl->bias && i < m; i++)
		nl->bias[i] = (float)(s * nl->bias[i]);
	nl->has_magnitude = nl->magnitude != NULL;
	nl->has_bias = nl->bias != NULL;
	if (rep) {
		lora_svd_layer_report *r = report_add(rep, l->name, e);
		double d, kept_e = 0;
		if (!r) {
			rc = e ? e->code : LORA_ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < kept; i++)
			kept_e += s2[i];
		/* In f32 the dropped tail of the spectrum is the error, up to f32
		 * rounding; f16/bf16 rounding is larger, so then it is measured on
		 * the stored factors (QR of the stacked factors: costs about as
		 * much as the re-rank itself). */
		if (o->dtype == LORA_F32) {
			d = 0;
			for (size_t i = kept; i < kk; i++)
				d += s2[i];
			d = sqrt(d);
		} else if ((rc = lora_linalg_lowrank_dist(&d, s, l->B, l->A, l->rank, 1.0, nl->B, nl->A, k, m, n, e))) {
			lora_err_prefix(e, "layer '%s'", l->name);
			goto out;
		}
		r->out = m, r->in = n, r->old_rank = l->rank, r->rank = k;
		r->norm = sqrt(total);
		r->energy = total > 0 ? kept_e / total : 1;
		r->rel_error = total > 0 ? d / sqrt(total) : 0;
	}
out:
	free(U), free(S), free(Vt), free(s2);
	return rc;
}

int lora_svd_rerank(lora_adapter **out, const lora_adapter *in, const lora_svd_opts *o,
                    lora_svd_report *rep, lora_err *e)
{
	lora_adapter *a = lora_adapter_new();
	int rc = 0;
	*out = NULL;
	if (!a)
		return lora_err_nomem(e);
	if ((rc = lora_svd_copy_meta(a, in, e)))
		goto fail;
	a->dtype = o->dtype;
	a->rslora = 0;
	for (size_t i = 0; i < in->nlayers; i++) {
		const lora_layer *l = &in->layers[i];
		if (o->progress)
			o->progress(o->progress_ctx, i, in->nlayers, l->name);
		if ((rc = rerank_layer(a, l, lora_adapter_layer_scale(in, l), o, rep, e)))
			goto fail;
	}
	*out = a;
	return 0;
fail:
	lora_adapter_free(a);
	return rc;
}

/* ---- extraction ---- */


/* dW = tuned - base in f32, converting base a chunk at a time. */
static void difference(float *dW, const lora_st_tensor *base, const lora_st_tensor *tuned, float *tmp,
                       size_t chunk)
{
	size_t n = tuned->nelem, es = lora_dtype_size(base->dtype);
	lora_dtype_to_f32(dW, tuned->data, tuned->dtype, n);
	for (size_t i = 0; i < n; i += chunk) {
		size_t k = n - i < chunk ? n - i : chunk;
		lora_dtype_to_f32(tmp, (const unsigned char *)base->data + i * es, base->dtype, k);
		for (size_t j = 0; j < k; j++)
			dW[i + j] -= tmp[j];
	}
}

/* Module name of a tensor "MODULE.weight" into buf, or 0 if it is not one. */
static int module_of(const char *tensor, char *buf, size_t n)
{
	size_t len = strlen(tensor);
	if (len <= 7 || strcmp(tensor + len - 7, ".weight") != 0 || len - 7 >= n)
		return 0;
	memcpy(buf, tensor, len - 7);
	buf[len - 7] = 0;
	return 1;
}

int lora_svd_extract(lora_adapter **out, const lora_ckpt *base, const lora_ckpt *tuned,
                     const lora_targets *t, const lora_svd_opts *o, lora_svd_report *rep,
                     lora_err *e)
{
	enum { CHUNK = 1 << 16 };
	lora_adapter *a = lora_adapter_new();
	const lora_st_tensor **sel = calloc(base->ntensors ? base->ntensors : 1, sizeof *sel);
	float *dW = NULL, *tmp = malloc(CHUNK * sizeof *tmp), *B = NULL, *A = NULL;
	size_t nsel = 0, maxel = 0;
	char module[1024], s1[64], s2[64];
	int rc = 0;
	*out = NULL;
	if (!a || !sel || !tmp) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	a->dtype = o->dtype;
	/* Check every selected tensor before the first (slow) factorisation. */
	for (size_t i = 0; i < base->ntensors; i++) {
		const lora_st_tensor *x = base->tensors[i], *y;
		int hit = module_of(x->name, module, sizeof module) ? lora_targets_match(t, module, e) : 0;
		if (hit < 0) {
			rc = hit;
			goto fail;
		}
		if (!hit)
			continue;
		if (x->ndim != 2) {
			if (t->all_linear)
				continue;
			rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' is %zu-D; only 2-D linear weights can be adapted",
			                  base->path, x->name, x->ndim);
			goto fail;
		}
		if (!(y = lora_ckpt_find(tuned, x->name))) {
			rc = lora_err_set(e, LORA_EINVAL, "%s: no tensor '%s' (it is in %s)", tuned->path, x->name,
			                  base->path);
			goto fail;
		}
		if (y->ndim != 2 || y->shape[0] != x->shape[0] || y->shape[1] != x->shape[1]) {
			lora_shape_format(s1, sizeof s1, x->shape, x->ndim);
			lora_shape_format(s2, sizeof s2, y->shape, y->ndim);
			rc = lora_err_set(e, LORA_EINVAL, "tensor '%s': shape %s in %s but %s in %s", x->name, s1,
			                  base->path, s2, tuned->path);
			goto fail;
		}
		const lora_st_tensor *bad = !lora_dtype_is_float(x->dtype) ? x : !lora_dtype_is_float(y->dtype) ? y : NULL;
		if (bad) {
			rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 can be differenced",
			                  bad == x ? base->path : tuned->path, x->name, lora_dtype_st_name(bad->dtype));
			goto fail;
		}
		sel[nsel++] = x;
		if (x->nelem > maxel)
			maxel = x->nelem;
	}
	if (!nsel) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: no tensor matches the targets", base->path);
		goto fail;
	}
	if (!(dW = lora_shape_alloc(maxel, sizeof *dW))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	for (size_t i = 0; i < nsel; i++) {
		const lora_st_tensor *x = sel[i], *y = lora_ckpt_find(tuned, x->name);
		size_t m = x->shape[0], n = x->shape[1], k;
		module_of(x->name, module, sizeof module);
		if (o->progress)
			o->progress(o->progress_ctx, i, nsel, x->name);
		difference(dW, x, y, tmp, CHUNK);
		/* Only dW is needed from here: keep the resident size at one tensor. */
		lora_st_release(x);
		lora_st_release(y);
		double ss = lora_linalg_sumsq(dW, m * n);
		if (!isfinite(ss)) {
			rc = lora_err_set(e, LORA_EINVAL, "tensor '%s': the difference of %s and %s is not finite",
			                  x->name, tuned->path, base->path);
			goto fail;
		}
		if (ss == 0) {
			if ((rc = report_skip(rep, module, e)))
				goto fail;
			continue;
		}
		lora_svd_layer_report *r = rep ? report_add(rep, module, e) : NULL;
		if (rep && !r) {
			rc = e ? e->code : LORA_ENOMEM;
			goto fail;
		}
		if ((rc = lora_svd_factor(&B, &A, &k, dW, m, n, o, o->seed ^ lora_rng_fnv1a(LORA_FNV_INIT, module, strlen(module)), r, e))) {
			lora_err_prefix(e, "tensor '%s'", x->name);
			goto fail;
		}
		lora_layer *l = lora_adapter_add(a, module, m, n, k, (double)k, 1, e);
		if (!l) {
			rc = e ? e->code : LORA_ENOMEM;
			goto fail;
		}
		l->B = B, l->A = A;
		B = A = NULL;
	}
	if (!a->nlayers) {
		rc = lora_err_set(e, LORA_EINVAL, "%s and %s do not differ in any target tensor", base->path,
		                  tuned->path);
		goto fail;
	}
	char fp[17];
	lora_ckpt_fingerprint(base, fp);
	if ((base->name && !(a->base_name = strdup(base->name))) || !(a->base_fingerprint = strdup(fp))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	*out = a;
	a = NULL;
	goto done;
fail:
	lora_adapter_free(a);
done:
	free(sel), free(dW), free(tmp), free(B), free(A);
	return rc;
}

void lora_svd_spectra_free(lora_svd_spectrum *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++)
		free(s[i].sv);
	free(s);
}

int lora_svd_spectra(lora_svd_spectrum **out, const lora_adapter *a, lora_err *e)
{
	lora_svd_spectrum *st = calloc(a->nlayers ? a->nlayers : 1, sizeof *st);
	*out = NULL;
	if (!st)
		return lora_err_nomem(e);
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		size_t k = l->rank < l->out ? l->rank : l->out;
		k = k < l->in ? k : l->in;
		if (!(st[i].sv = malloc((k ? k : 1) * sizeof(double)))) {
			lora_svd_spectra_free(st, a->nlayers);
			return lora_err_nomem(e);
		}
		st[i].nsv = k;
		int rc = lora_linalg_lowrank_svals(st[i].sv, l->B, l->A, l->out, l->rank, l->in, e);
		if (rc) {
			lora_svd_spectra_free(st, a->nlayers);
			return lora_err_prefix(e, "layer '%s'", l->name);
		}
		double s = fabs(lora_adapter_layer_scale(a, l)), sum = 0;
		for (size_t j = 0; j < k; j++) {
			st[i].sv[j] *= s;
			sum += st[i].sv[j] * st[i].sv[j];
		}
		st[i].norm = sqrt(sum);
	}
	*out = st;
	return 0;
}

int lora_svd_job_check(const lora_svd_job *j, const char *random, const char *extract_only, lora_err *e)
{
	const char *bad = NULL;
	if (!j->o.rank == !(j->o.energy > 0))
		bad = j->o.rank ? "-r and --energy are exclusive" : "need -r R or --energy E";
	else if (j->o.max_rank && j->o.rank)
		bad = "--max-rank goes with --energy, not -r";
	else if (!j->base != !j->tuned)
		bad = j->base ? "-m BASE needs --tuned TUNED" : "--tuned TUNED needs -m BASE";
	else if (j->base && j->input)
		return lora_err_set(e, LORA_EUSAGE, "unexpected operand '%s' with -m and --tuned", j->input);
	else if (j->base && j->targets && j->regex)
		bad = "-t and --target-regex are exclusive";
	else if (j->base && j->o.method == LORA_SVD_EXACT && random)
		bad = "--oversample, --power-iters and --seed go with --method randomized";
	else if (!j->base && extract_only)
		return lora_err_set(e, LORA_EUSAGE, "%s goes with -m and --tuned (re-ranking is always exact)", extract_only);
	return bad ? lora_err_set(e, LORA_EUSAGE, "%s", bad) : 0;
}

static char *provenance(const lora_svd_job *j, const lora_adapter *in)
{
	const lora_svd_opts *o = &j->o;
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "tool", j->tool);
	if (j->base) {
		cJSON_AddStringToObject(p, "base", j->base);
		cJSON_AddStringToObject(p, "tuned", j->tuned);
		cJSON_AddStringToObject(p, "method", lora_svd_method_name(o->method));
	} else {
		cJSON_AddStringToObject(p, "input", j->input);
	}
	if (o->rank)
		cJSON_AddNumberToObject(p, "rank", (double)o->rank);
	else
		cJSON_AddNumberToObject(p, "energy", o->energy);
	if (o->max_rank)
		cJSON_AddNumberToObject(p, "max_rank", (double)o->max_rank);
	if (j->base && o->method == LORA_SVD_RANDOMIZED) {
		cJSON_AddNumberToObject(p, "oversample", (double)o->oversample);
		cJSON_AddNumberToObject(p, "power_iters", (double)o->power_iters);
		cJSON_AddNumberToObject(p, "seed", (double)o->seed);
	}
	cJSON *from = in && in->provenance ? cJSON_Parse(in->provenance) : NULL;
	if (from)
		cJSON_AddItemToObject(p, "from", from);
	char *txt = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return txt;
}

/* 1 if path is one of m's files. */
static int is_model_file(const lora_ckpt *m, const char *path)
{
	struct stat a, b;
	if (stat(path, &a) != 0)
		return 0;
	for (size_t i = 0; i < m->nshards; i++)
		if (stat(m->shards[i]->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return 1;
	return m->index_path && stat(m->index_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int extract_files(const lora_svd_job *j, lora_adapter **out, lora_svd_report *rep, lora_err *e)
{
	lora_ckpt *base = NULL, *tuned = NULL;
	lora_targets t = {0};
	const char *list = j->regex ? NULL : j->targets ? j->targets : "all-linear";
	int rc;
	if ((rc = lora_targets_init(&t, list, j->regex, e)) || (j->layers && (rc = lora_targets_set_layers(&t, j->layers, e))))
		goto out;
	if ((rc = lora_ckpt_open(&base, j->base, e)) || (rc = lora_ckpt_open(&tuned, j->tuned, e)))
		goto out;
	if (j->out && (is_model_file(base, j->out) || is_model_file(tuned, j->out))) {
		rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite an input model", j->out);
		goto out;
	}
	if (!(rc = lora_svd_extract(out, base, tuned, &t, &j->o, rep, e)))
		rc = lora_init_record_targets(*out, &t, j->regex, e);
out:
	lora_targets_free(&t);
	lora_ckpt_close(base);
	lora_ckpt_close(tuned);
	return rc;
}

int lora_svd_job_run(const lora_svd_job *j, lora_adapter **a, lora_svd_report *rep, lora_err *e)
{
	lora_adapter *in = NULL;
	int rc;
	*a = NULL;
	if (j->base) {
		rc = extract_files(j, a, rep, e);
	} else if (!(rc = lora_load_adapter(&in, j->input, e))) {
		lora_svd_opts o = j->o;
		if (j->keep_dtype)
			o.dtype = in->dtype;
		rc = lora_svd_rerank(a, in, &o, rep, e);
	}
	if (!rc && !((*a)->provenance = provenance(j, in)))
		rc = lora_err_nomem(e);
	lora_adapter_free(in);
	return rc;
}
