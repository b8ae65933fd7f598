#include "core/adapter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lora_adapter *lora_adapter_new(void)
{
	lora_adapter *a = calloc(1, sizeof *a);
	if (a)
		a->dtype = LORA_F32;
	return a;
}

void lora_adapter_free(lora_adapter *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->nlayers; i++) {
		free(a->layers[i].name);
		free(a->layers[i].A);
		free(a->layers[i].B);
		free(a->layers[i].magnitude);
		free(a->layers[i].bias);
	}
	for (size_t i = 0; i < a->nextras; i++) {
		free(a->extras[i].name);
		free(a->extras[i].data);
	}
	free(a->extras);
	free(a->peft_config);
	for (size_t i = 0; i < a->ntargets; i++)
		free(a->targets[i]);
	free(a->layers);
	free(a->targets);
	free(a->base_name);
	free(a->base_fingerprint);
	free(a->provenance);
	free(a);
}

lora_layer *lora_adapter_add(lora_adapter *a, const char *name, size_t out, size_t in,
                             size_t rank, double alpha, int header_only, lora_err *e)
{
	size_t na, nb;
	if (lora_shape_mul(rank, in, &na) || lora_shape_mul(na, sizeof(float), &na) ||
	    lora_shape_mul(out, rank, &nb) || lora_shape_mul(nb, sizeof(float), &nb)) {
		lora_err_set(e, LORA_EFORMAT, "layer '%s': shape %zux%zu at rank %zu is too large", name,
		             out, in, rank);
		return NULL;
	}
	lora_layer *ls = realloc(a->layers, (a->nlayers + 1) * sizeof *ls);
	if (!ls)
		goto nomem;
	a->layers = ls;
	lora_layer *l = &ls[a->nlayers];
	memset(l, 0, sizeof *l);
	l->out = out, l->in = in, l->rank = rank, l->alpha = alpha;
	l->name = strdup(name);
	if (!l->name)
		goto nomem;
	if (!header_only) {
		/* calloc(0) may return NULL legitimately; allocate at least one. */
		l->A = calloc(na ? na : 1, 1);
		l->B = calloc(nb ? nb : 1, 1);
		if (!l->A || !l->B) {
			free(l->A);
			free(l->B);
			free(l->name);
			goto nomem;
		}
	}
	a->nlayers++;
	return l;
nomem:
	lora_err_set(e, LORA_ENOMEM, "layer '%s': out of memory", name);
	return NULL;
}

int lora_adapter_add_target(lora_adapter *a, const char *target, lora_err *e)
{
	char **t = realloc(a->targets, (a->ntargets + 1) * sizeof *t);
	if (!t || !(t[a->ntargets] = strdup(target))) {
		if (t)
			a->targets = t;
		return lora_err_nomem(e);
	}
	a->targets = t;
	a->ntargets++;
	return 0;
}

double lora_adapter_layer_scale(const lora_adapter *a, const lora_layer *l)
{
	return a->rslora ? l->alpha / sqrt((double)l->rank) : l->alpha / (double)l->rank;
}

uint64_t lora_adapter_params(const lora_adapter *a)
{
	uint64_t n = 0;
	for (size_t i = 0; i < a->nlayers; i++)
		n += (uint64_t)a->layers[i].rank * (a->layers[i].in + a->layers[i].out);
	return n;
}

uint64_t lora_adapter_raw_bytes(const lora_adapter *a)
{
	return lora_adapter_params(a) * lora_dtype_size(a->dtype);
}

lora_layer *lora_adapter_find(const lora_adapter *a, const char *name)
{
	for (size_t i = 0; i < a->nlayers; i++)
		if (strcmp(a->layers[i].name, name) == 0)
			return &a->layers[i];
	return NULL;
}

lora_extra *lora_adapter_add_extra(lora_adapter *a, const char *name, lora_dtype dtype, size_t ndim,
                                   const size_t *shape, const void *data, lora_err *e)
{
	size_t nbytes;
	if ((unsigned)dtype >= LORA_DTYPE_COUNT || ndim > LORA_MAX_DIMS ||
	    lora_shape_bytes(shape, ndim, lora_dtype_size(dtype), &nbytes)) {
		lora_err_set(e, LORA_EFORMAT, "tensor '%s': shape is too large", name);
		return NULL;
	}
	lora_extra *xs = realloc(a->extras, (a->nextras + 1) * sizeof *xs);
	if (!xs)
		goto nomem;
	a->extras = xs;
	lora_extra *x = &xs[a->nextras];
	memset(x, 0, sizeof *x);
	x->dtype = dtype;
	x->ndim = ndim;
	for (size_t i = 0; i < ndim; i++)
		x->shape[i] = shape[i];
	x->nbytes = nbytes;
	if (!(x->name = strdup(name)))
		goto nomem;
	if (data) {
		if (!(x->data = malloc(nbytes ? nbytes : 1))) {
			free(x->name);
			goto nomem;
		}
		memcpy(x->data, data, nbytes);
	}
	a->nextras++;
	return x;
nomem:
	lora_err_set(e, LORA_ENOMEM, "tensor '%s': out of memory", name);
	return NULL;
}

size_t lora_adapter_dora_layers(const lora_adapter *a)
{
	size_t n = 0;
	for (size_t i = 0; i < a->nlayers; i++)
		n += a->layers[i].magnitude || a->layers[i].has_magnitude;
	return n;
}

size_t lora_adapter_bias_layers(const lora_adapter *a)
{
	size_t n = 0;
	for (size_t i = 0; i < a->nlayers; i++)
		n += a->layers[i].bias || a->layers[i].has_bias;
	return n;
}
