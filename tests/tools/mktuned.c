/* mktuned: write a "fine-tuned" copy of a model whose difference from the
 * base is known exactly, for tests and benchmarks of lora-svd and lora-diff.
 *
 * Every 2-D tensor whose module name matches a --plant pattern gets
 * W + U diag(s) V^T, with U (out x k) and V (in x k) random orthonormal
 * columns (modified Gram-Schmidt in double, seeded by the seed and the
 * tensor name), so the difference has exactly the singular values s (up to
 * the rounding of W + dW to the storage dtype). Every other tensor is copied
 * bit for bit: its difference is exactly zero. The model is read and
 * written one tensor at a time. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "fixture.h"
#include "core/outfile.h"
#include "core/rng.h"
#include "../unit/planted.h"
#include "io/ckpt.h"
#include "ops/targets.h"

enum { O_PLANT = 256, O_NOISE, O_SEED, O_DTYPE, O_SHARD, O_DROP, O_SCALE };

static const lora_opt opts[] = {
	{O_PLANT, 0, "plant", "PATTERN=S1,S2,...", "add U diag(S) V^T to tensors whose module matches PATTERN (a name suffix; S may be empty); repeatable", NULL},
	{O_NOISE, 0, "noise", "SIGMA", "also add N(0, SIGMA^2) noise to every planted tensor", NULL},
	{O_SCALE, 0, "scale", "X", "also add X*W to every planted tensor: dW = X*W + U diag(S) V^T", NULL},
	{O_SEED, 0, "seed", "N", "random seed (default 1)", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "output dtype f32, f16 or bf16 (default: each tensor's own)", "f32 f16 bf16"},
	{O_SHARD, 0, "shard-bytes", "N", "split into shards of about N bytes with an index", NULL},
	{O_DROP, 0, "drop", "TENSOR", "leave this tensor out (repeatable)", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"mktuned",
	"[options] BASE OUTDIR",
	"Write a copy of BASE with a planted low-rank difference on chosen tensors.",
	NULL,
	opts,
	"@file",
};

typedef struct {
	char *pattern;
	double *s;
	size_t k;
} plant;

typedef struct {
	plant *plants;
	size_t nplants;
	const char **drops;
	size_t ndrops;
	double noise, scale;
	unsigned long long seed;
	int have_dtype;
	lora_dtype dtype;
	long long shard_bytes;
	const char *base, *outdir;
} params;

static const plant *find_plant(const params *p, const char *tensor)
{
	size_t len = strlen(tensor);
	char module[1024];
	if (len <= 7 || strcmp(tensor + len - 7, ".weight") != 0 || len - 7 >= sizeof module)
		return NULL;
	memcpy(module, tensor, len - 7);
	module[len - 7] = 0;
	for (size_t i = 0; i < p->nplants; i++) {
		lora_targets t;
		lora_err e;
		if (lora_targets_init(&t, p->plants[i].pattern, NULL, &e))
			continue;
		int hit = lora_targets_match(&t, module, &e) == 1;
		lora_targets_free(&t);
		if (hit)
			return &p->plants[i];
	}
	return NULL;
}

static int dropped(const params *p, const char *name)
{
	for (size_t i = 0; i < p->ndrops; i++)
		if (strcmp(p->drops[i], name) == 0)
			return 1;
	return 0;
}

/* W (m x n, f32) += U diag(s) V^T (+ noise). */
static int add_planted(float *W, size_t m, size_t n, const plant *pl, const params *p, const char *name,
                       lora_err *e)
{
	size_t k = pl->k;
	if (k > m || k > n)
		return lora_err_set(e, LORA_EINVAL, "tensor '%s' (%zux%zu): %zu singular values do not fit", name,
		                    m, n, k);
	double *U = malloc(m * k * sizeof *U), *V = malloc(n * k * sizeof *V);
	double *row = malloc(n * sizeof *row);
	if (!U || !V || !row) {
		free(U), free(V), free(row);
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	}
	lora_rng g;
	lora_rng_seed_name(&g, p->seed, name);
	orthonormal(U, m, k, &g);
	orthonormal(V, n, k, &g);
	for (size_t i = 0; i < m; i++) {
		for (size_t j = 0; j < n; j++)
			row[j] = p->scale * W[i * n + j];
		for (size_t q = 0; q < k; q++) {
			double u = U[i * k + q] * pl->s[q];
			for (size_t j = 0; j < n; j++)
				row[j] += u * V[j * k + q];
		}
		for (size_t j = 0; j < n; j++)
			W[i * n + j] = (float)(W[i * n + j] + row[j] + (p->noise ? p->noise * lora_rng_normal(&g) : 0));
	}
	free(U), free(V), free(row);
	return 0;
}

static int write_shard(const params *p, const lora_ckpt *m, const char *file, const size_t *idx, size_t n,
                       lora_err *e)
{
	static const lora_st_meta meta[] = {{"format", "pt"}};
	lora_st_spec *specs = calloc(n ? n : 1, sizeof *specs);
	char *path = lora_path_join(p->outdir, file);
	float *f = NULL;
	void *buf = NULL;
	lora_st_writer *w = NULL;
	int rc = 0;
	if (!specs || !path) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const lora_st_tensor *t = m->tensors[idx[i]];
		specs[i].name = t->name;
		specs[i].dtype = p->have_dtype && lora_dtype_is_float(t->dtype) ? p->dtype : t->dtype;
		specs[i].ndim = t->ndim;
		memcpy(specs[i].shape, t->shape, sizeof specs[i].shape);
	}
	if ((rc = lora_st_writer_open(&w, path, specs, n, meta, 1, 1, e)))
		goto out;
	for (size_t i = 0; i < n && !rc; i++) {
		const lora_st_tensor *t = m->tensors[idx[i]];
		const plant *pl = t->ndim == 2 && lora_dtype_is_float(t->dtype) ? find_plant(p, t->name) : NULL;
		if (!pl && specs[i].dtype == t->dtype) {
			rc = lora_st_writer_write(w, t->data, t->nbytes, e);
			continue;
		}
		size_t es = lora_dtype_size(specs[i].dtype);
		free(f), free(buf);
		f = malloc((t->nelem ? t->nelem : 1) * sizeof *f);
		buf = malloc((t->nelem ? t->nelem : 1) * es);
		if (!f || !buf) {
			rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
			break;
		}
		lora_dtype_to_f32(f, t->data, t->dtype, t->nelem);
		if (pl && (rc = add_planted(f, t->shape[0], t->shape[1], pl, p, t->name, e)))
			break;
		lora_dtype_from_f32(buf, f, specs[i].dtype, t->nelem);
		rc = lora_st_writer_write(w, buf, t->nelem * es, e);
	}
	if (rc)
		lora_st_writer_abort(w);
	else
		rc = lora_st_writer_commit(w, e);
out:
	free(specs), free(path), free(f), free(buf);
	return rc;
}

static int copy_config(const params *p, const lora_ckpt *m, lora_err *e)
{
	if (!m->config_path)
		return 0;
	FILE *f = fopen(m->config_path, "rb");
	if (!f)
		return lora_err_set(e, LORA_EIO, "%s: %s", m->config_path, strerror(errno));
	char *text = NULL;
	size_t len = 0, cap = 0, got;
	char chunk[4096];
	while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (len + got > cap) {
			cap = 2 * (len + got);
			char *t = realloc(text, cap);
			if (!t) {
				free(text);
				fclose(f);
				return lora_err_set(e, LORA_ENOMEM, "out of memory");
			}
			text = t;
		}
		memcpy(text + len, chunk, got);
		len += got;
	}
	fclose(f);
	int rc = fx_write_text(p->outdir, "config.json", text ? text : "", len, e);
	free(text);
	return rc;
}

static int run(const params *p, lora_err *e)
{
	lora_ckpt *m = NULL;
	int rc = lora_ckpt_open(&m, p->base, e);
	if (rc)
		return rc;
	size_t *idx = malloc((m->ntensors ? m->ntensors : 1) * sizeof *idx), n = 0;
	size_t *first = malloc((m->ntensors + 1) * sizeof *first), nshards = 1, fill = 0;
	char *stale = NULL;
	if (!idx || !first) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < m->ntensors; i++)
		if (!dropped(p, m->tensors[i]->name))
			idx[n++] = i;
	first[0] = 0;
	for (size_t i = 0; i < n; i++) {
		size_t nb = m->tensors[idx[i]]->nbytes;
		if (p->shard_bytes && fill && fill + nb > (size_t)p->shard_bytes) {
			first[nshards++] = i;
			fill = 0;
		}
		fill += nb;
	}
	first[nshards] = n;
	if ((rc = copy_config(p, m, e)))
		goto out;
	if (nshards == 1) {
		if ((rc = write_shard(p, m, "model.safetensors", idx, n, e)))
			goto out;
		stale = lora_path_join(p->outdir, "model.safetensors.index.json");
	} else {
		char file[64], *text = NULL;
		size_t len = 0, total = 0;
		for (size_t s = 0; s < nshards && !rc; s++) {
			snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, nshards);
			rc = write_shard(p, m, file, idx + first[s], first[s + 1] - first[s], e);
		}
		if (rc)
			goto out;
		FILE *f = open_memstream(&text, &len);
		if (!f) {
			rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < n; i++)
			total += m->tensors[idx[i]]->nbytes;
		fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {\n", total);
		/* idx is in name order (the model's tensor order). */
		for (size_t s = 0, i = 0; i < n; i++) {
			while (i >= first[s + 1])
				s++;
			fprintf(f, "    \"%s\": \"model-%05zu-of-%05zu.safetensors\"%s\n", m->tensors[idx[i]]->name, s + 1,
			        nshards, i + 1 < n ? "," : "");
		}
		fprintf(f, "  }\n}\n");
		fclose(f);
		rc = fx_write_text(p->outdir, "model.safetensors.index.json", text, len, e);
		free(text);
		stale = lora_path_join(p->outdir, "model.safetensors");
	}
	if (!rc && stale && unlink(stale) != 0 && errno != ENOENT)
		rc = lora_err_set(e, LORA_EIO, "%s: cannot remove: %s", stale, strerror(errno));
out:
	free(idx), free(first), free(stale);
	lora_ckpt_close(m);
	return rc;
}

static void parse_plant(plant *pl, const char *spec)
{
	const char *eq = strrchr(spec, '=');
	if (!eq || eq == spec)
		lora_cli_usage_error(&tool, "--plant '%s': expected PATTERN=S1,S2,...", spec);
	pl->pattern = strndup(spec, (size_t)(eq - spec));
	pl->s = NULL;
	pl->k = 0;
	const char *q = eq + 1;
	while (*q) {
		char *end;
		double v = strtod(q, &end);
		if (end == q || !isfinite(v) || (*end && *end != ','))
			lora_cli_usage_error(&tool, "--plant '%s': expected PATTERN=S1,S2,...", spec);
		pl->s = realloc(pl->s, (pl->k + 1) * sizeof *pl->s);
		pl->s[pl->k++] = v;
		q = *end ? end + 1 : end;
	}
}

int main(int argc, char **argv)
{
	params p = {0};
	p.seed = 1;
	lora_cli c;
	int id;
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_PLANT:
			p.plants = realloc(p.plants, (p.nplants + 1) * sizeof *p.plants);
			parse_plant(&p.plants[p.nplants++], c.arg);
			break;
		case O_NOISE: p.noise = lora_cli_double(&tool, "--noise", c.arg); break;
		case O_SCALE: p.scale = lora_cli_double(&tool, "--scale", c.arg); break;
		case O_SEED: p.seed = (unsigned long long)lora_cli_int(&tool, "--seed", c.arg, 0, LLONG_MAX); break;
		case O_SHARD: p.shard_bytes = lora_cli_int(&tool, "--shard-bytes", c.arg, 1, LLONG_MAX); break;
		case O_DROP:
			p.drops = realloc(p.drops, (p.ndrops + 1) * sizeof *p.drops);
			p.drops[p.ndrops++] = c.arg;
			break;
		case O_DTYPE:
			if (lora_dtype_parse(c.arg, &p.dtype))
				lora_cli_usage_error(&tool, "--dtype: '%s' is not f32, f16 or bf16", c.arg);
			p.have_dtype = 1;
			break;
		case LORA_OPT_OPERAND:
			if (!p.base)
				p.base = c.arg;
			else if (!p.outdir)
				p.outdir = c.arg;
			else
				lora_cli_usage_error(&tool, "unexpected operand '%s'", c.arg);
			break;
		}
	}
	if (!p.outdir)
		lora_cli_usage_error(&tool, "need BASE and OUTDIR");
	lora_cli_signals();
	if (fx_outdir(&tool, p.outdir))
		return LORA_EXIT_FAIL;
	lora_err e = {0, ""};
	int rc = run(&p, &e) ? lora_cli_fail(&tool, &e) : LORA_EXIT_OK;
	for (size_t i = 0; i < p.nplants; i++)
		free(p.plants[i].pattern), free(p.plants[i].s);
	free(p.plants);
	free(p.drops);
	return rc;
}
