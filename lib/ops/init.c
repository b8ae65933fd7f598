#include "ops/init.h"

#include <cJSON.h>
#include <errno.h>
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

void lora_init_defaults(lora_init_opts *o)
{
	*o = (lora_init_opts){
		.rank = LORA_INIT_RANK,
		.alpha = LORA_INIT_ALPHA,
		.targets = LORA_INIT_TARGETS,
		.kind = LORA_INIT_KAIMING,
		.seed = LORA_INIT_SEED,
		.dtype = LORA_F32,
	};
}

int lora_init_record_targets(lora_adapter *a, const lora_targets *t, const char *regex, lora_err *e)
{
	int rc = 0;
	if (regex)
		rc = lora_adapter_add_target(a, regex, e);
	else
		for (size_t i = 0; i < t->nkeys && !rc; i++)
			rc = lora_adapter_add_target(a, t->keys[i], e);
	if (!rc && t->all_linear)
		rc = lora_adapter_add_target(a, "all-linear", e);
	return rc;
}

/* "NAME=OUTxIN" -> a layer. */
static int add_shape(lora_adapter *a, const char *spec, size_t rank, double alpha, lora_err *e)
{
	const char *eq = strrchr(spec, '=');
	char *end;
	if (!eq || eq == spec)
		goto bad;
	errno = 0;
	unsigned long long out = strtoull(eq + 1, &end, 10), in;
	if (errno || end == eq + 1 || *end != 'x' || out == 0 || eq[1] == '-')
		goto bad;
	const char *p = end + 1;
	in = strtoull(p, &end, 10);
	if (errno || end == p || *end || in == 0 || *p == '-' || out > (1ull << 31) || in > (1ull << 31))
		goto bad;
	char name[1024];
	size_t n = (size_t)(eq - spec);
	if (n >= sizeof name)
		goto bad;
	memcpy(name, spec, n);
	name[n] = 0;
	if (n > 7 && strcmp(name + n - 7, ".weight") == 0)
		name[n - 7] = 0;
	if (lora_adapter_find(a, name))
		return lora_err_set(e, LORA_EUSAGE, "--shape '%s': layer '%s' given twice", spec, name);
	if (rank > (out < in ? out : in))
		return lora_err_set(e, LORA_EINVAL, "--shape '%s': rank %zu exceeds min(%llu, %llu)", spec, rank, out, in);
	return lora_adapter_add(a, name, (size_t)out, (size_t)in, rank, alpha, 0, e) ? 0 : e->code;
bad:
	return lora_err_set(e, LORA_EUSAGE, "--shape '%s': expected NAME=OUTxIN, e.g. w=4096x1024", spec);
}

static char *provenance(const lora_ckpt *m, const lora_init_opts *o)
{
	cJSON *p = cJSON_CreateObject();
	char *s;
	cJSON_AddStringToObject(p, "tool", o->tool);
	if (m)
		cJSON_AddStringToObject(p, "model", m->path);
	cJSON_AddStringToObject(p, "init", lora_init_name(o->kind));
	cJSON_AddNumberToObject(p, "seed", (double)o->seed);
	s = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return s;
}

static int from_model(lora_adapter *a, const lora_ckpt *m, const lora_init_opts *o, lora_err *e)
{
	lora_targets t = {0};
	int rc = lora_targets_init(&t, o->regex ? NULL : o->targets, o->regex, e);
	if (!rc && o->layers)
		rc = lora_targets_set_layers(&t, o->layers, e);
	if (!rc)
		rc = lora_init_from_model(a, m, &t, o->rank, o->alpha, e);
	if (!rc)
		rc = lora_init_record_targets(a, &t, o->regex, e);
	lora_targets_free(&t);
	return rc;
}

int lora_init_new(lora_adapter **out, const lora_ckpt *m, char *const *shapes, size_t nshapes,
                  const lora_init_opts *o, lora_err *e)
{
	lora_adapter *a = lora_adapter_new();
	int rc = 0;
	*out = NULL;
	if (!a)
		return lora_err_nomem(e);
	a->dtype = o->dtype;
	a->rslora = o->rslora;
	if (m)
		rc = from_model(a, m, o, e);
	for (size_t i = 0; i < nshapes && !rc; i++)
		rc = add_shape(a, shapes[i], o->rank, o->alpha, e);
	if (!rc) {
		lora_init_weights(a, o->kind, o->seed);
		if (o->tool && !(a->provenance = provenance(m, o)))
			rc = lora_err_nomem(e);
	}
	if (rc)
		lora_adapter_free(a);
	else
		*out = a;
	return rc;
}
