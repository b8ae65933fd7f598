#include "ops/init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

static const char *const names[] = {"kaiming", "gaussian", "zeros"};

int lora_init_parse(const char *s, lora_init_kind *k)
{
	for (int i = 0; i < 3; i++)
		if (strcmp(s, names[i]) == 0) {
			*k = (lora_init_kind)i;
			return 0;
		}
	return -1;
}

const char *lora_init_name(lora_init_kind k) { return names[k]; }

int lora_init_from_model(lora_adapter *a, const lora_ckpt *m, const lora_targets *t,
                         size_t rank, double alpha, lora_err *e)
{
	char fp[17];
	size_t added = 0;
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *x = m->tensors[i];
		size_t n = strlen(x->name);
		if (n <= 7 || strcmp(x->name + n - 7, ".weight") != 0)
			continue;
		char module[1024];
		if (n - 7 >= sizeof module)
			continue;
		memcpy(module, x->name, n - 7);
		module[n - 7] = 0;
		int hit = lora_targets_match(t, module, e);
		if (hit < 0)
			return hit;
		if (!hit)
			continue;
		if (x->ndim != 2) {
			if (t->all_linear)
				continue; /* norms and other vectors are simply not linear layers */
			return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' is %zu-D; only 2-D linear weights can be adapted",
			                    m->path, x->name, x->ndim);
		}
		size_t out = x->shape[0], in = x->shape[1];
		if (rank > (out < in ? out : in))
			return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': rank %zu exceeds min(%zu, %zu)", m->path,
			                    x->name, rank, out, in);
		if (!lora_adapter_add(a, module, out, in, rank, alpha, 0, e))
			return e ? e->code : LORA_ENOMEM;
		added++;
	}
	if (!added)
		return lora_err_set(e, LORA_EINVAL, "%s: no tensor matches the targets", m->path);
	lora_ckpt_fingerprint(m, fp);
	free(a->base_name);
	free(a->base_fingerprint);
	a->base_name = m->name ? strdup(m->name) : NULL;
	a->base_fingerprint = strdup(fp);
	return 0;
}

void lora_init_weights(lora_adapter *a, lora_init_kind k, uint64_t seed)
{
	for (size_t i = 0; i < a->nlayers; i++) {
		lora_layer *l = &a->layers[i];
		size_t na = l->rank * l->in;
		lora_rng r;
		lora_rng_seed_name(&r, seed, l->name);
		float bound = (float)(1.0 / sqrt((double)l->in)), sd = (float)(1.0 / (double)l->rank);
		for (size_t j = 0; j < na; j++) {
			if (k == LORA_INIT_KAIMING)
				l->A[j] = (2.0f * lora_rng_uniform(&r) - 1.0f) * bound;
			else if (k == LORA_INIT_GAUSSIAN)
				l->A[j] = lora_rng_normal(&r) * sd;
			else
				l->A[j] = 0.0f;
		}
		memset(l->B, 0, l->out * l->rank * sizeof *l->B);
	}
}
