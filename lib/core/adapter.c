#include "core/adapter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* Arrays grow by doubling (capacity: the next power of two of the count),
 * so appending n entries costs O(n), not O(n^2) copies; returns 0 or -1. */
static int grow(void *pp, size_t n, size_t size)
{
	if (n & (n - 1))
		return 0;
	void *p = realloc(*(void **)pp, (n ? 2 * n : 1) * size);
	if (!p)
		return -1;
	*(void **)pp = p;
	return 0;
}

static size_t slot_of(const lora_adapter *a, const char *name)
{
	return (size_t)lora_rng_fnv1a(LORA_FNV_INIT, name, strlen(name)) & (a->nslots - 1);
}

/* Linear probing puts a later layer of the same name after the earlier
 * one, so lookups find the first, as a scan in order would. */
static void slot_put(lora_adapter *a, size_t i)
{
	size_t s = slot_of(a, a->layers[i].name);
	while (a->slots[s])
		s = (s + 1) & (a->nslots - 1);
	a->slots[s] = i + 1;
}

/* Room for layer n (0-based) in the index: 0, or -1 out of memory. */
static int index_room(lora_adapter *a, size_t n)
{
	if (2 * (n + 1) <= a->nslots)
		return 0;
	size_t ns = a->nslots ? 2 * a->nslots : 16;
	size_t *s = calloc(ns, sizeof *s);
	if (!s)
		return -1;
	free(a->slots);
	a->slots = s, a->nslots = ns;
	for (size_t i = 0; i < n; i++)
		slot_put(a, i);
	return 0;
}

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
	free(a->slots);
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
	if (grow(&a->layers, a->nlayers, sizeof *a->layers) || index_room(a, a->nlayers))
		goto nomem;
	lora_layer *l = &a->layers[a->nlayers];
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
	slot_put(a, a->nlayers++);
	return l;
nomem:
	lora_err_set(e, LORA_ENOMEM, "layer '%s': out of memory", name);
	return NULL;
}

int lora_adapter_add_target(lora_adapter *a, const char *target, lora_err *e)
{
	if (grow(&a->targets, a->ntargets, sizeof *a->targets) || !(a->targets[a->ntargets] = strdup(target)))
		return lora_err_nomem(e);
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
	if (!a->nslots)
		return NULL;
	for (size_t s = slot_of(a, name); a->slots[s]; s = (s + 1) & (a->nslots - 1))
		if (strcmp(a->layers[a->slots[s] - 1].name, name) == 0)
			return &a->layers[a->slots[s] - 1];
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
	if (grow(&a->extras, a->nextras, sizeof *a->extras))
		goto nomem;
	lora_extra *x = &a->extras[a->nextras];
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

static int cmp_name(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* n names at a stride of size bytes from the first: the one that appears
 * twice (NULL if none; *nomem = 1 when memory ran out). Sorting keeps it
 * O(n log n) for any number of layers. */
static const char *dup_name(const void *first, size_t n, size_t size, int *nomem)
{
	const char *dup = NULL;
	*nomem = 0;
	if (n < 2)
		return NULL;
	const char **v = malloc(n * sizeof *v);
	if (!v) {
		*nomem = 1;
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		v[i] = *(char *const *)((const char *)first + i * size);
	qsort(v, n, sizeof *v, cmp_name);
	for (size_t i = 1; i < n && !dup; i++)
		if (strcmp(v[i - 1], v[i]) == 0)
			dup = v[i];
	free(v);
	return dup;
}

const char *lora_adapter_dup_layer(const lora_adapter *a, int *nomem)
{
	return dup_name(a->nlayers ? &a->layers[0].name : NULL, a->nlayers, sizeof *a->layers, nomem);
}

const char *lora_adapter_dup_extra(const lora_adapter *a, int *nomem)
{
	return dup_name(a->nextras ? &a->extras[0].name : NULL, a->nextras, sizeof *a->extras, nomem);
}
