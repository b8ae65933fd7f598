/* checkmerge: recompute a merge independently and compare, for tests.
 *
 *   checkmerge [--subtract] BASE MERGED ADAPTER[:SCALE]...
 *   checkmerge --restored BASE BACK MERGED
 *
 * For every tensor of MERGED: adapted weights must equal W + sum k*s*B*A
 * computed naively in double (per PEFT: transposed for fan_in_fan_out, DoRA
 * rows rescaled to the magnitude, lora_B bias added to the bias) and rounded
 * once to MERGED's dtype, within one unit in the last place; every other
 * tensor must hold exactly BASE's values (same bytes when the dtype is
 * unchanged). Prints "ok N tensors, M adapted, max ulp U" or the first
 * mismatch, exit 0 or 1.
 *
 * --restored checks a merge followed by --subtract: BACK must equal BASE
 * within one rounding step, i.e. half an ulp of the merged value (the
 * rounding the merge did) plus half an ulp of the base value (the rounding
 * the subtraction did). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/load.h"
#include "io/ckpt.h"

static double scale_of(const lora_adapter *a, const lora_layer *l)
{
	return a->rslora ? l->alpha / sqrt((double)l->rank) : l->alpha / (double)l->rank;
}

/* One unit in the last place of dtype t at the magnitude of v. */
static double ulp_of(double v, lora_dtype t)
{
	int ex;
	frexp(v, &ex);
	int mant = t == LORA_F32 ? 24 : t == LORA_F16 ? 11 : 8;
	double min = t == LORA_F32 ? 0x1p-149 : t == LORA_F16 ? 0x1p-24 : 0x1p-133;
	double ulp = ldexp(1.0, ex - mant);
	return ulp < min ? min : ulp;
}

static int restored(const char *basep, const char *backp, const char *mergedp)
{
	lora_ckpt *m[3];
	const char *p[3] = {basep, backp, mergedp};
	lora_err e;
	for (int j = 0; j < 3; j++)
		if (lora_ckpt_open(&m[j], p[j], &e)) {
			fprintf(stderr, "checkmerge: %s\n", e.msg);
			return 2;
		}
	double worst = 0;
	for (size_t t = 0; t < m[0]->ntensors; t++) {
		const lora_st_tensor *W = m[0]->tensors[t], *B = lora_ckpt_find(m[1], W->name),
		                     *M = lora_ckpt_find(m[2], W->name);
		if (!B || !M || B->nelem != W->nelem || !lora_dtype_is_float(W->dtype))
			continue;
		float *w = malloc(W->nelem * 4), *b = malloc(W->nelem * 4), *mm = malloc(W->nelem * 4);
		lora_dtype_to_f32(w, W->data, W->dtype, W->nelem);
		lora_dtype_to_f32(b, B->data, B->dtype, B->nelem);
		lora_dtype_to_f32(mm, M->data, M->dtype, M->nelem);
		for (size_t x = 0; x < W->nelem; x++) {
			double step = 0.5 * ulp_of(mm[x], B->dtype) + 0.5 * ulp_of(w[x], B->dtype) + 1e-6 * fabs(mm[x]);
			double d = fabs((double)b[x] - w[x]);
			if (d > step) {
				printf("tensor '%s' [%zu]: restored %.9g, base %.9g, merged %.9g\n", W->name, x, b[x], w[x], mm[x]);
				return 1;
			}
			if (step > 0 && d / step > worst)
				worst = d / step;
		}
		free(w), free(b), free(mm);
	}
	printf("ok restored within %.2f rounding steps\n", worst);
	for (int j = 0; j < 3; j++)
		lora_ckpt_close(m[j]);
	return 0;
}

int main(int argc, char **argv)
{
	int subtract = 0, i = 1;
	lora_err e;
	if (argc == 5 && strcmp(argv[1], "--restored") == 0)
		return restored(argv[2], argv[3], argv[4]);
	if (argc > 1 && strcmp(argv[1], "--subtract") == 0)
		subtract = 1, i++;
	if (argc - i < 3) {
		fprintf(stderr, "usage: checkmerge [--subtract] BASE MERGED ADAPTER[:SCALE]...\n");
		return 2;
	}
	lora_ckpt *base, *merged;
	if (lora_ckpt_open(&base, argv[i], &e) || lora_ckpt_open(&merged, argv[i + 1], &e)) {
		fprintf(stderr, "checkmerge: %s\n", e.msg);
		return 2;
	}
	int na = argc - i - 2;
	lora_adapter **ad = calloc((size_t)na, sizeof *ad);
	double *k = calloc((size_t)na, sizeof *k);
	for (int j = 0; j < na; j++) {
		char *path;
		lora_load_spec(argv[i + 2 + j], &path, &k[j], &e);
		if (lora_load_adapter(&ad[j], path, &e)) {
			fprintf(stderr, "checkmerge: %s\n", e.msg);
			return 2;
		}
		if (subtract)
			k[j] = -k[j];
		free(path);
	}
	if (merged->ntensors != base->ntensors) {
		printf("tensor count %zu, base has %zu\n", merged->ntensors, base->ntensors);
		return 1;
	}
	size_t adapted = 0;
	double maxu = 0;
	for (size_t t = 0; t < merged->ntensors; t++) {
		const lora_st_tensor *M = merged->tensors[t], *W = lora_ckpt_find(base, M->name);
		if (!W || W->nelem != M->nelem || W->ndim != M->ndim) {
			printf("tensor '%s' missing or reshaped\n", M->name);
			return 1;
		}
		if (!lora_dtype_is_float(W->dtype)) {
			if (W->dtype != M->dtype || memcmp(W->data, M->data, W->nbytes)) {
				printf("tensor '%s' changed\n", M->name);
				return 1;
			}
			continue;
		}
		double *want = malloc(W->nelem * sizeof *want), *mag = malloc(W->nelem * sizeof *mag);
		float *wf = malloc(W->nelem * sizeof *wf), *mf = malloc(M->nelem * sizeof *mf);
		lora_dtype_to_f32(wf, W->data, W->dtype, W->nelem);
		lora_dtype_to_f32(mf, M->data, M->dtype, M->nelem);
		for (size_t x = 0; x < W->nelem; x++)
			want[x] = wf[x], mag[x] = fabs(wf[x]);
		int touched = 0;
		for (int j = 0; j < na; j++) {
			const lora_adapter *a = ad[j];
			for (size_t li = 0; li < a->nlayers; li++) {
				const lora_layer *l = &a->layers[li];
				char wname[1100], bname[1100];
				snprintf(wname, sizeof wname, "%s.weight", l->name);
				snprintf(bname, sizeof bname, "%s.bias", l->name);
				double c = k[j] * scale_of(a, l);
				if (strcmp(M->name, bname) == 0 && l->bias) {
					for (size_t o = 0; o < l->out; o++)
						want[o] += c * l->bias[o], mag[o] += fabs(c * l->bias[o]);
					touched = 1;
				}
				if (strcmp(M->name, wname) != 0)
					continue;
				touched = 1;
				for (size_t o = 0; o < l->out; o++)
					for (size_t in = 0; in < l->in; in++) {
						double d = 0, absd = 0;
						for (size_t r = 0; r < l->rank; r++) {
							d += (double)l->B[o * l->rank + r] * l->A[r * l->in + in];
							absd += fabs((double)l->B[o * l->rank + r] * l->A[r * l->in + in]);
						}
						size_t at = a->fan_in_fan_out ? in * l->out + o : o * l->in + in;
						want[at] += c * d;
						mag[at] += fabs(c) * absd;
					}
				if (l->magnitude)
					for (size_t o = 0; o < l->out; o++) {
						double ss = 0;
						for (size_t in = 0; in < l->in; in++) {
							double v = want[a->fan_in_fan_out ? in * l->out + o : o * l->in + in];
							ss += v * v;
						}
						for (size_t in = 0; in < l->in; in++) {
							size_t at = a->fan_in_fan_out ? in * l->out + o : o * l->in + in;
							want[at] *= l->magnitude[o] / sqrt(ss);
							mag[at] *= fabs(l->magnitude[o]) / sqrt(ss);
						}
					}
			}
		}
		adapted += (size_t)touched;
		if (!touched && M->dtype == W->dtype && memcmp(M->data, W->data, W->nbytes)) {
			printf("tensor '%s' is not adapted but its bytes changed\n", M->name);
			return 1;
		}
		for (size_t x = 0; x < W->nelem; x++) {
			/* The merge sums in f32, in another order than this double
			 * reference: allow f32 rounding of the terms' magnitudes (a few
			 * units of 2^-24 of |W| + sum |c B A|, which covers cancellation),
			 * then the one rounding to the output dtype (half an ulp, plus
			 * one for a tie the f32 sum may push either way). */
			double slack = touched ? 16 * 0x1p-24 * mag[x] : 0;
			double tol = touched ? (M->dtype == LORA_F32 ? 0.5 : 1.0) : 0.5;
			double over = fabs((double)mf[x] - want[x]) - slack;
			double uu = over > 0 ? over / ulp_of(want[x], M->dtype) : 0;
			if (uu > tol) {
				printf("tensor '%s' [%zu]: got %.9g, want %.9g (%.1f ulp beyond f32 slack)\n", M->name, x, mf[x],
				       want[x], uu);
				return 1;
			}
			if (touched && uu > maxu)
				maxu = uu;
		}
		free(want), free(mag), free(wf), free(mf);
	}
	printf("ok %zu tensors, %zu adapted, max ulp %.2f\n", merged->ntensors, adapted, maxu);
	for (int j = 0; j < na; j++)
		lora_adapter_free(ad[j]);
	free(ad);
	free(k);
	lora_ckpt_close(base);
	lora_ckpt_close(merged);
	return 0;
}
