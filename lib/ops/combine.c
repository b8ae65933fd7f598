#include "ops/combine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *label(const char *const *names, size_t i, char *buf, size_t n)
{
	if (names && names[i])
		return names[i];
	snprintf(buf, n, "adapter %zu", i + 1);
	return buf;
}

static int has_target(const lora_adapter *a, const char *t)
{
	for (size_t i = 0; i < a->ntargets; i++)
		if (strcmp(a->targets[i], t) == 0)
			return 1;
	return 0;
}

/* Check the inputs can be summed; fill the output's metadata. */
static int prepare(lora_adapter *o, lora_adapter *const *in, const char *const *names, size_t n,
                   lora_err *e)
{
	char b1[32], b2[32];
	const char *fp = NULL;
	size_t fpi = 0;
	for (size_t i = 0; i < n; i++) {
		const lora_adapter *a = in[i];
		if (a->nextras)
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: tensor '%s' is not a LoRA factor pair and cannot be combined",
			                    label(names, i, b1, sizeof b1), a->extras[0].name);
		if (a->fan_in_fan_out != in[0]->fan_in_fan_out)
			return lora_err_set(e, LORA_EINVAL, "%s has fan_in_fan_out %s but %s has it %s",
			                    label(names, i, b1, sizeof b1), a->fan_in_fan_out ? "on" : "off",
			                    label(names, 0, b2, sizeof b2), in[0]->fan_in_fan_out ? "on" : "off");
		if (a->base_fingerprint) {
			if (fp && strcmp(fp, a->base_fingerprint) != 0)
				return lora_err_set(e, LORA_EINVAL,
				                    "%s was made for another base model (fingerprint %s, %s has %s)",
				                    label(names, i, b1, sizeof b1), a->base_fingerprint,
				                    label(names, fpi, b2, sizeof b2), fp);
			if (!fp)
				fp = a->base_fingerprint, fpi = i;
		}
		for (size_t j = 0; j < a->nlayers; j++)
			if (a->layers[j].magnitude || a->layers[j].has_magnitude)
				return lora_err_set(e, LORA_EINVAL,
				                    "%s: layer '%s' is DoRA (magnitude vector): it cannot be combined linearly",
				                    label(names, i, b1, sizeof b1), a->layers[j].name);
		for (size_t j = 0; j < a->ntargets; j++)
			if (!has_target(o, a->targets[j]) && lora_adapter_add_target(o, a->targets[j], e))
				return e ? e->code : LORA_ENOMEM;
	}
	o->dtype = in[0]->dtype;
	o->rslora = 0;
	o->fan_in_fan_out = in[0]->fan_in_fan_out;
	const char *name = NULL;
	for (size_t i = 0; i < n && !name; i++)
		if (in[i]->base_fingerprint || in[i]->base_name)
			name = in[i]->base_name;
	if ((name && !(o->base_name = strdup(name))) || (fp && !(o->base_fingerprint = strdup(fp))))
		return lora_err_nomem(e);
	return 0;
}

int lora_combine_cat(lora_adapter **out, lora_adapter *const *in, const double *weights,
                     const char *const *names, size_t n, lora_err *e)
{
	lora_adapter *o = lora_adapter_new();
	char b1[32], b2[32];
	int rc = 0;
	*out = NULL;
	if (!o)
		return lora_err_nomem(e);
	if (!n) {
		rc = lora_err_set(e, LORA_EUSAGE, "no adapters to combine");
		goto fail;
	}
	if ((rc = prepare(o, in, names, n, e)))
		goto fail;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < in[i]->nlayers; j++) {
			const lora_layer *l = &in[i]->layers[j];
			if (lora_adapter_find(o, l->name))
				continue;
			/* First appearance: gather this layer from input i on. */
			size_t rank = 0;
			int bias = 0;
			for (size_t q = i; q < n; q++) {
				const lora_layer *x = lora_adapter_find(in[q], l->name);
				if (!x)
					continue;
				if (x->out != l->out || x->in != l->in) {
					rc = lora_err_set(e, LORA_EINVAL, "layer '%s': shape %zux%zu in %s but %zux%zu in %s",
					                  l->name, l->out, l->in, label(names, i, b1, sizeof b1), x->out,
					                  x->in, label(names, q, b2, sizeof b2));
					goto fail;
				}
				if (rank + x->rank < rank) {
					rc = lora_err_set(e, LORA_EINVAL, "layer '%s': combined rank overflows", l->name);
					goto fail;
				}
				rank += x->rank;
				bias |= x->bias != NULL;
			}
			lora_layer *c = lora_adapter_add(o, l->name, l->out, l->in, rank, (double)rank, 0, e);
			if (!c) {
				rc = e ? e->code : LORA_ENOMEM;
				goto fail;
			}
			if (bias && !(c->bias = calloc(l->out, sizeof *c->bias))) {
				rc = lora_err_nomem(e);
				goto fail;
			}
			c->has_bias = bias;
			size_t off = 0;
			for (size_t q = i; q < n; q++) {
				const lora_layer *x = lora_adapter_find(in[q], l->name);
				if (!x)
					continue;
				double s = (weights ? weights[q] : 1.0) * lora_adapter_layer_scale(in[q], x);
				for (size_t r = 0; r < l->out; r++)
					memcpy(c->B + r * rank + off, x->B + r * x->rank, x->rank * sizeof *c->B);
				for (size_t r = 0; r < x->rank; r++)
					for (size_t k = 0; k < l->in; k++)
						c->A[(off + r) * l->in + k] = (float)(s * x->A[r * l->in + k]);
				if (x->bias)
					for (size_t r = 0; r < l->out; r++)
						c->bias[r] = (float)(c->bias[r] + s * x->bias[r]);
				off += x->rank;
			}
		}
	*out = o;
	return 0;
fail:
	lora_adapter_free(o);
	return rc;
}

int lora_combine_svd(lora_adapter **out, lora_adapter *const *in, const double *weights,
                     const char *const *names, size_t n, const lora_svd_opts *o,
                     lora_svd_report *rep, lora_err *e)
{
	lora_adapter *cat = NULL;
	*out = NULL;
	int rc = lora_combine_cat(&cat, in, weights, names, n, e);
	if (rc)
		return rc;
	rc = lora_svd_rerank(out, cat, o, rep, e);
	lora_adapter_free(cat);
	return rc;
}

int lora_combine_inputs(lora_adapter **out, const lora_merge_input *in, size_t n, int svd, size_t rank,
                        double energy, lora_err *e)
{
	lora_adapter **a = calloc(n ? n : 1, sizeof *a);
	const char **names = calloc(n ? n : 1, sizeof *names);
	double *w = calloc(n ? n : 1, sizeof *w);
	int rc;
	*out = NULL;
	if (!a || !names || !w) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		a[i] = (lora_adapter *)in[i].a, names[i] = in[i].path, w[i] = in[i].scale;
	if (!svd) {
		rc = lora_combine_cat(out, a, w, names, n, e);
	} else {
		lora_svd_opts so;
		lora_svd_opts_init(&so);
		so.rank = rank;
		so.energy = energy;
		so.dtype = a[0]->dtype;
		rc = lora_combine_svd(out, a, w, names, n, &so, NULL, e);
	}
out:
	free(a), free(names), free(w);
	return rc;
}
