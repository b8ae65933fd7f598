/* mkpeft: write a PEFT LoRA adapter directory (adapter_config.json and
 * adapter_model.safetensors) with chosen options, for tests; or dump a
 * safetensors file's tensors for byte comparison.
 *
 *   mkpeft [options] OUTDIR MODULE=OUTxINxRANK[:s1,s2,...] ...
 *   mkpeft --dump FILE.safetensors
 *
 * Without a spectrum a layer's values are uniform in [-0.5, 0.5) from a
 * generator seeded with the seed and the tensor key, rounded to the dtype.
 * With one, B = [s1 e_1, s2 e_2, ...] and A = [e_{in-1}; e_{in-2}; ...], so
 * B A has exactly the singular values |s_k| (as in mkadapter). DoRA
 * magnitudes are uniform in [0.5, 1.5), biases like the factors. */
#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "fixture.h"
#include "core/outfile.h"
#include "core/rng.h"
#include "io/safetensors.h"

enum {
	O_R = 256, O_ALPHA, O_RANKP, O_ALPHAP, O_RSLORA, O_FIFO, O_DORA, O_BIAS, O_EMB, O_EXTRA, O_DTYPE,
	O_DTYPEB, O_SEED, O_TYPE, O_NOCONFIG, O_BASE, O_TARGETS, O_DROP, O_POISON, O_REVERSE, O_DUMP
};

static const lora_opt opts[] = {
	{O_R, 0, "r", "N", "config r (default: the first layer's rank)", NULL},
	{O_ALPHA, 0, "alpha", "A", "config lora_alpha (default 8)", NULL},
	{O_RANKP, 0, "rank-pattern", "KEY=N", "rank_pattern entry (repeatable, kept in order)", NULL},
	{O_ALPHAP, 0, "alpha-pattern", "KEY=A", "alpha_pattern entry (repeatable, kept in order)", NULL},
	{O_RSLORA, 0, "rslora", NULL, "use_rslora: true", NULL},
	{O_FIFO, 0, "fan-in-fan-out", NULL, "fan_in_fan_out: true", NULL},
	{O_DORA, 0, "dora", NULL, "use_dora: true, with a lora_magnitude_vector per layer", NULL},
	{O_BIAS, 0, "lora-bias", NULL, "lora_bias: true, with a lora_B.bias per layer", NULL},
	{O_EMB, 0, "embedding", "MODULE=VOCABxDIMxRANK", "add an embedding LoRA (lora_embedding_A/B)", NULL},
	{O_EXTRA, 0, "extra", "KEY=DTYPE:D0xD1...", "add any tensor under KEY (e.g. modules_to_save)", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "dtype of every LoRA tensor: f32 (default), f16, bf16", NULL},
	{O_DTYPEB, 0, "dtype-b", "ST", "safetensors dtype of lora_B weights only (F32, F64, ...)", NULL},
	{O_SEED, 0, "seed", "N", "random seed (default 1)", NULL},
	{O_TYPE, 0, "peft-type", "T", "peft_type (default LORA)", NULL},
	{O_NOCONFIG, 0, "no-config", NULL, "do not write adapter_config.json", NULL},
	{O_BASE, 0, "base", "NAME", "base_model_name_or_path", NULL},
	{O_TARGETS, 0, "targets", "LIST", "target_modules (default: the modules' last name parts)", NULL},
	{O_DROP, 0, "drop", "KEY", "leave tensor KEY out (repeatable)", NULL},
	{O_POISON, 0, "poison", "KEY@I", "make element I of tensor KEY (a float tensor) NaN", NULL},
	{O_REVERSE, 0, "reverse", NULL, "store tensors in reverse name order", NULL},
	{O_DUMP, 0, "dump", "FILE", "print each tensor of FILE: key, dtype, shape, bytes in hex; exit", "@file"},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"mkpeft", "[options] OUTDIR MODULE=OUTxINxRANK[:s1,s2,...]...",
	"Write a PEFT LoRA adapter directory for tests.", NULL, opts, "@dir",
};

typedef struct {
	char key[512];
	lora_dtype dtype;
	size_t ndim, shape[LORA_MAX_DIMS];
	unsigned char *data;
	size_t nbytes;
} tensor;

static tensor *ts;
static size_t nts;

static tensor *add(const char *key, lora_dtype t, size_t ndim, const size_t *shape)
{
	ts = realloc(ts, (nts + 1) * sizeof *ts);
	tensor *x = &ts[nts++];
	memset(x, 0, sizeof *x);
	snprintf(x->key, sizeof x->key, "%s", key);
	x->dtype = t;
	x->ndim = ndim;
	memcpy(x->shape, shape, ndim * sizeof *shape);
	lora_shape_bytes(shape, ndim, lora_dtype_size(t), &x->nbytes);
	x->data = calloc(x->nbytes + 1, 1);
	return x;
}

/* Fill x with lo + width * U[0,1) from the key's own stream (f32 values
 * given in f when not NULL). */
static void fill(tensor *x, uint64_t seed, float lo, float width, const float *f)
{
	size_t n = x->nbytes / lora_dtype_size(x->dtype);
	lora_rng r;
	lora_rng_seed_name(&r, seed, x->key);
	if (!lora_dtype_is_float(x->dtype)) {
		for (size_t i = 0; i < x->nbytes; i++)
			x->data[i] = (unsigned char)lora_rng_u64(&r);
		return;
	}
	if (x->dtype == LORA_F64) {
		for (size_t i = 0; i < n; i++) {
			double v = f ? f[i] : lo + width * lora_rng_uniform(&r);
			memcpy(x->data + 8 * i, &v, 8);
		}
		return;
	}
	float *v = malloc((n + 1) * sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = f ? f[i] : lo + width * lora_rng_uniform(&r);
	lora_dtype_from_f32(x->data, v, x->dtype, n);
	free(v);
}

static int cmp_key(const void *a, const void *b)
{
	return strcmp(((const tensor *)a)->key, ((const tensor *)b)->key);
}

static int dump(const char *path)
{
	lora_st *st;
	lora_err e;
	if (lora_st_open(&st, path, &e)) {
		fprintf(stderr, "mkpeft: %s\n", e.msg);
		return 1;
	}
	const lora_st_tensor **v = malloc((st->ntensors + 1) * sizeof *v);
	for (size_t i = 0; i < st->ntensors; i++)
		v[i] = &st->tensors[i];
	for (size_t i = 1; i < st->ntensors; i++)
		for (size_t j = i; j > 0 && strcmp(v[j - 1]->name, v[j]->name) > 0; j--) {
			const lora_st_tensor *t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	for (size_t i = 0; i < st->ntensors; i++) {
		printf("%s %s ", v[i]->name, lora_dtype_st_name(v[i]->dtype));
		for (size_t d = 0; d < v[i]->ndim; d++)
			printf("%s%zu", d ? "x" : "", v[i]->shape[d]);
		printf(" ");
		for (size_t k = 0; k < v[i]->nbytes; k++)
			printf("%02x", ((const unsigned char *)v[i]->data)[k]);
		printf("\n");
	}
	free(v);
	lora_st_close(st);
	return 0;
}

/* "KEY=VALUE" into an object, value a number. */
static void add_pattern(cJSON *o, const char *spec)
{
	const char *eq = strrchr(spec, '=');
	if (!eq)
		lora_cli_usage_error(&tool, "pattern '%s': expected KEY=VALUE", spec);
	char key[512];
	snprintf(key, sizeof key, "%.*s", (int)(eq - spec), spec);
	cJSON_AddNumberToObject(o, key, atof(eq + 1));
}

int main(int argc, char **argv)
{
	const char *outdir = NULL, *ptype = "LORA", *base = NULL, *targets = NULL;
	const char **layers = NULL, **embs = NULL, **extras = NULL, **drops = NULL, **poisons = NULL;
	size_t nlayers = 0, nembs = 0, nextras = 0, ndrops = 0, npoisons = 0;
	long long r = -1;
	double alpha = 8;
	int rslora = 0, fifo = 0, dora = 0, bias = 0, noconfig = 0, reverse = 0, id;
	lora_dtype dtype = LORA_F32, dtype_b;
	int have_dtype_b = 0;
	unsigned long long seed = 1;
	cJSON *rankp = cJSON_CreateObject(), *alphap = cJSON_CreateObject();
	lora_cli c;
	lora_cli_init(&c, &tool, argc, argv);
#define PUSH(v, n) (v = realloc(v, (n + 1) * sizeof *v), v[n++] = c.arg)
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_R: r = lora_cli_int(&tool, "--r", c.arg, 0, 1ll << 31); break;
		case O_ALPHA: alpha = lora_cli_double(&tool, "--alpha", c.arg); break;
		case O_RANKP: add_pattern(rankp, c.arg); break;
		case O_ALPHAP: add_pattern(alphap, c.arg); break;
		case O_RSLORA: rslora = 1; break;
		case O_FIFO: fifo = 1; break;
		case O_DORA: dora = 1; break;
		case O_BIAS: bias = 1; break;
		case O_EMB: PUSH(embs, nembs); break;
		case O_EXTRA: PUSH(extras, nextras); break;
		case O_DROP: PUSH(drops, ndrops); break;
		case O_POISON: PUSH(poisons, npoisons); break;
		case O_DTYPE:
			if (lora_dtype_parse(c.arg, &dtype))
				lora_cli_usage_error(&tool, "--dtype: '%s' is not f32, f16 or bf16", c.arg);
			break;
		case O_DTYPEB:
			if (lora_dtype_from_st(c.arg, &dtype_b))
				lora_cli_usage_error(&tool, "--dtype-b: '%s' is not a safetensors dtype", c.arg);
			have_dtype_b = 1;
			break;
		case O_SEED: seed = (unsigned long long)lora_cli_int(&tool, "--seed", c.arg, 0, LLONG_MAX); break;
		case O_TYPE: ptype = c.arg; break;
		case O_NOCONFIG: noconfig = 1; break;
		case O_BASE: base = c.arg; break;
		case O_TARGETS: targets = c.arg; break;
		case O_REVERSE: reverse = 1; break;
		case O_DUMP:
			cJSON_Delete(rankp);
			cJSON_Delete(alphap);
			return dump(c.arg);
		case LORA_OPT_OPERAND:
			if (!outdir)
				outdir = c.arg;
			else
				PUSH(layers, nlayers);
			break;
		}
	}
	if (!outdir)
		lora_cli_usage_error(&tool, "missing OUTDIR");
	cJSON *tm = cJSON_CreateArray();
	for (size_t i = 0; i < nlayers; i++) {
		char name[256], key[512];
		size_t out, in, rank;
		int used = 0;
		if (sscanf(layers[i], "%255[^=]=%zux%zux%zu%n", name, &out, &in, &rank, &used) != 4)
			lora_cli_usage_error(&tool, "bad layer spec '%s'", layers[i]);
		if (r < 0)
			r = (long long)rank;
		const char *spec = layers[i][used] == ':' ? layers[i] + used + 1 : NULL;
		lora_dtype tb = have_dtype_b ? dtype_b : dtype;
		size_t sa[2] = {rank, in}, sb[2] = {out, rank}, sv[1] = {out};
		float *fa = NULL, *fb = NULL;
		if (spec) {
			fa = calloc(rank * in + 1, sizeof *fa);
			fb = calloc(out * rank + 1, sizeof *fb);
			char *p = (char *)spec;
			for (size_t k = 0; k < rank && k < in && k < out; k++) {
				fb[k * rank + k] = strtof(p, &p);
				fa[k * in + (in - 1 - k)] = 1.0f;
				if (*p == ',')
					p++;
			}
		}
		snprintf(key, sizeof key, "base_model.model.%s.lora_A.weight", name);
		fill(add(key, dtype, 2, sa), seed, -0.5f, 1.0f, fa);
		snprintf(key, sizeof key, "base_model.model.%s.lora_B.weight", name);
		fill(add(key, tb, 2, sb), seed, -0.5f, 1.0f, fb);
		if (dora) {
			snprintf(key, sizeof key, "base_model.model.%s.lora_magnitude_vector", name);
			fill(add(key, dtype, 1, sv), seed, 0.5f, 1.0f, NULL);
		}
		if (bias) {
			snprintf(key, sizeof key, "base_model.model.%s.lora_B.bias", name);
			fill(add(key, dtype, 1, sv), seed, -0.5f, 1.0f, NULL);
		}
		free(fa);
		free(fb);
		const char *last = strrchr(name, '.');
		last = last ? last + 1 : name;
		int dup = 0;
		const cJSON *it;
		cJSON_ArrayForEach(it, tm) dup |= strcmp(it->valuestring, last) == 0;
		if (!dup)
			cJSON_AddItemToArray(tm, cJSON_CreateString(last));
	}
	for (size_t i = 0; i < nembs; i++) {
		char name[256], key[512];
		size_t vocab, dim, rank;
		if (sscanf(embs[i], "%255[^=]=%zux%zux%zu", name, &vocab, &dim, &rank) != 4)
			lora_cli_usage_error(&tool, "bad --embedding '%s'", embs[i]);
		size_t sa[2] = {rank, vocab}, sb[2] = {dim, rank};
		snprintf(key, sizeof key, "base_model.model.%s.lora_embedding_A", name);
		fill(add(key, dtype, 2, sa), seed, -0.5f, 1.0f, NULL);
		snprintf(key, sizeof key, "base_model.model.%s.lora_embedding_B", name);
		fill(add(key, dtype, 2, sb), seed, -0.5f, 1.0f, NULL);
	}
	for (size_t i = 0; i < nextras; i++) {
		char key[512], dt[16];
		int used = 0;
		lora_dtype t;
		size_t shape[LORA_MAX_DIMS], nd = 0;
		if (sscanf(extras[i], "%511[^=]=%15[^:]:%n", key, dt, &used) != 2 || lora_dtype_from_st(dt, &t))
			lora_cli_usage_error(&tool, "bad --extra '%s'", extras[i]);
		char *p = (char *)extras[i] + used;
		while (*p && nd < LORA_MAX_DIMS) {
			shape[nd++] = strtoul(p, &p, 10);
			if (*p == 'x')
				p++;
		}
		fill(add(key, t, nd, shape), seed, -0.5f, 1.0f, NULL);
	}
	/* drop */
	for (size_t d = 0; d < ndrops; d++)
		for (size_t i = 0; i < nts; i++)
			if (strcmp(ts[i].key, drops[d]) == 0) {
				free(ts[i].data);
				ts[i] = ts[--nts];
				break;
			}
	for (size_t d = 0; d < npoisons; d++) {
		const char *at = strrchr(poisons[d], '@');
		size_t i = 0, k = at ? strtoul(at + 1, NULL, 10) : 0;
		while (i < nts && (!at || strncmp(ts[i].key, poisons[d], (size_t)(at - poisons[d])) ||
		                   ts[i].key[at - poisons[d]]))
			i++;
		if (i == nts || !lora_dtype_is_float(ts[i].dtype) || (k + 1) * lora_dtype_size(ts[i].dtype) > ts[i].nbytes)
			lora_cli_usage_error(&tool, "--poison '%s': no such float tensor element", poisons[d]);
		float nan = 0.0f / 0.0f;
		lora_dtype_from_f32(ts[i].data + k * lora_dtype_size(ts[i].dtype), &nan, ts[i].dtype, 1);
	}
	qsort(ts, nts, sizeof *ts, cmp_key);
	if (reverse)
		for (size_t i = 0; i < nts / 2; i++) {
			tensor t = ts[i];
			ts[i] = ts[nts - 1 - i];
			ts[nts - 1 - i] = t;
		}
	lora_cli_signals();
	if (fx_outdir(&tool, outdir))
		return 1;
	char path[4096];
	lora_err e;
	if (!noconfig) {
		cJSON *cfg = cJSON_CreateObject();
		if (base)
			cJSON_AddStringToObject(cfg, "base_model_name_or_path", base);
		else
			cJSON_AddNullToObject(cfg, "base_model_name_or_path");
		cJSON_AddStringToObject(cfg, "bias", "none");
		cJSON_AddBoolToObject(cfg, "fan_in_fan_out", fifo);
		cJSON_AddTrueToObject(cfg, "inference_mode");
		cJSON_AddNumberToObject(cfg, "lora_alpha", alpha);
		cJSON_AddBoolToObject(cfg, "lora_bias", bias);
		cJSON_AddNumberToObject(cfg, "lora_dropout", 0.05);
		cJSON_AddStringToObject(cfg, "peft_type", ptype);
		cJSON_AddNumberToObject(cfg, "r", (double)(r < 0 ? 8 : r));
		cJSON_AddItemToObject(cfg, "rank_pattern", rankp);
		cJSON_AddItemToObject(cfg, "alpha_pattern", alphap);
		rankp = alphap = NULL;
		if (targets) {
			cJSON_Delete(tm);
			tm = cJSON_CreateArray();
			char *list = strdup(targets), *save = NULL;
			for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
				cJSON_AddItemToArray(tm, cJSON_CreateString(t));
			free(list);
		}
		cJSON_AddItemToObject(cfg, "target_modules", tm);
		tm = NULL;
		cJSON_AddStringToObject(cfg, "task_type", "CAUSAL_LM");
		cJSON_AddBoolToObject(cfg, "use_dora", dora);
		cJSON_AddBoolToObject(cfg, "use_rslora", rslora);
		char *text = cJSON_Print(cfg);
		lora_outfile o;
		snprintf(path, sizeof path, "%s/adapter_config.json", outdir);
		if (lora_outfile_open(&o, path, LORA_OUT_FORCE, &e))
			return lora_cli_fail(&tool, &e);
		fprintf(o.fp, "%s\n", text);
		if (lora_outfile_commit(&o, &e))
			return lora_cli_fail(&tool, &e);
		cJSON_free(text);
		cJSON_Delete(cfg);
	}
	cJSON_Delete(tm);
	cJSON_Delete(rankp);
	cJSON_Delete(alphap);
	lora_st_spec *specs = calloc(nts + 1, sizeof *specs);
	for (size_t i = 0; i < nts; i++) {
		specs[i].name = ts[i].key;
		specs[i].dtype = ts[i].dtype;
		specs[i].ndim = ts[i].ndim;
		memcpy(specs[i].shape, ts[i].shape, sizeof ts[i].shape);
	}
	static const lora_st_meta meta[] = {{"format", "pt"}};
	lora_st_writer *w;
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", outdir);
	if (lora_st_writer_open(&w, path, specs, nts, meta, 1, 1, &e))
		return lora_cli_fail(&tool, &e);
	for (size_t i = 0; i < nts; i++)
		if (lora_st_writer_write(w, ts[i].data, ts[i].nbytes, &e)) {
			lora_st_writer_abort(w);
			return lora_cli_fail(&tool, &e);
		}
	if (lora_st_writer_commit(w, &e))
		return lora_cli_fail(&tool, &e);
	for (size_t i = 0; i < nts; i++)
		free(ts[i].data);
	free(ts);
	free(specs);
	free(layers);
	free(embs);
	free(extras);
	free(drops);
	free(poisons);
	return 0;
}
