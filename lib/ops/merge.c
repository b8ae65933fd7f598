#include "ops/merge.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/outdir.h"
#include "core/outfile.h"
#include "core/path.h"
#include "io/load.h"
#include "math/linalg.h"

/* One change to one model tensor. */
typedef struct {
	const char *tensor; /* model tensor name */
	size_t input;       /* which adapter, for order and messages */
	const lora_layer *l;
	const lora_adapter *a;
	float coef;         /* user scale (negated to subtract) times alpha/r */
	int bias;           /* add coef * l->bias to this 1-D tensor */
} op;

static int cmp_op(const void *x, const void *y)
{
	const op *a = x, *b = y;
	int c = strcmp(a->tensor, b->tensor);
	return c ? c : (a->input > b->input) - (a->input < b->input);
}

typedef struct {
	op *ops;
	size_t n;
	char **names; /* owned tensor names the ops point to */
} plan;

static void plan_free(plan *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->names[i]);
	free(p->names);
	free(p->ops);
}

static int plan_add(plan *p, const char *tensor, size_t input, const lora_adapter *a,
                    const lora_layer *l, float coef, int bias, lora_err *e)
{
	op *o = realloc(p->ops, (p->n + 1) * sizeof *o);
	char **nm = realloc(p->names, (p->n + 1) * sizeof *nm);
	if (o)
		p->ops = o;
	if (nm)
		p->names = nm;
	if (!o || !nm || !(nm[p->n] = strdup(tensor)))
		return lora_err_nomem(e);
	o[p->n] = (op){nm[p->n], input, l, a, coef, bias};
	p->n++;
	return 0;
}

/* Match every adapter layer to the model and check shapes, before any
 * heavy work or output. */
static int build_plan(plan *p, const lora_ckpt *m, const lora_merge_input *in, size_t n,
                      const lora_merge_opts *o, lora_err *e)
{
	char name[1100];
	for (size_t i = 0; i < n; i++) {
		const lora_adapter *a = in[i].a;
		if (a->nextras && !o->ignore_unknown) {
			/* Name every one, so nothing is silently dropped later either. */
			char names[600] = "";
			for (size_t k = 0; k < a->nextras; k++)
				snprintf(names + strlen(names), sizeof names - strlen(names), "%s'%s'", k ? ", " : "",
				         a->extras[k].name);
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: %zu tensor%s not linear LoRA factors and cannot be merged "
			                    "(--ignore-unknown skips them): %s",
			                    in[i].path, a->nextras, a->nextras == 1 ? " is" : "s are", names);
		}
		for (size_t k = 0; k < a->nlayers; k++) {
			const lora_layer *l = &a->layers[k];
			snprintf(name, sizeof name, "%s.weight", l->name);
			const lora_st_tensor *t = lora_ckpt_find(m, name);
			if (!t)
				return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': no tensor '%s' in %s", in[i].path,
				                    l->name, name, m->path);
			size_t want0 = a->fan_in_fan_out ? l->in : l->out, want1 = a->fan_in_fan_out ? l->out : l->in;
			if (t->ndim != 2 || t->shape[0] != want0 || t->shape[1] != want1) {
				char got[64] = "";
				for (size_t d = 0; d < t->ndim; d++)
					snprintf(got + strlen(got), sizeof got - strlen(got), "%s%zu", d ? "x" : "", t->shape[d]);
				return lora_err_set(e, LORA_EINVAL,
				                    "%s: tensor '%s': shape %s in %s does not match the adapter (%zux%zu)",
				                    in[i].path, name, t->ndim ? got : "scalar", m->path, want0, want1);
			}
			if (!lora_dtype_is_float(t->dtype))
				return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' is %s, not a float type", m->path, name,
				                    lora_dtype_st_name(t->dtype));
			if (l->magnitude && o->subtract)
				return lora_err_set(e, LORA_EINVAL,
				                    "%s: layer '%s' is DoRA: its merge rescales rows and cannot be subtracted",
				                    in[i].path, l->name);
			float coef = (float)((o->subtract ? -1.0 : 1.0) * in[i].scale * lora_adapter_layer_scale(a, l));
			int rc = plan_add(p, name, i, a, l, coef, 0, e);
			if (rc)
				return rc;
			if (l->bias) {
				snprintf(name, sizeof name, "%s.bias", l->name);
				const lora_st_tensor *b = lora_ckpt_find(m, name);
				if (!b)
					return lora_err_set(e, LORA_EINVAL, "%s: layer '%s' has a lora_B bias but %s has no '%s'",
					                    in[i].path, l->name, m->path, name);
				if (b->ndim != 1 || b->shape[0] != l->out || !lora_dtype_is_float(b->dtype))
					return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' in %s is not a float vector of %zu",
					                    in[i].path, name, m->path, l->out);
				if ((rc = plan_add(p, name, i, a, l, coef, 1, e)))
					return rc;
			}
		}
	}
	qsort(p->ops, p->n, sizeof *p->ops, cmp_op);
	for (size_t i = 1; i < p->n; i++)
		if (p->ops[i].input == p->ops[i - 1].input && strcmp(p->ops[i].tensor, p->ops[i - 1].tensor) == 0)
			return lora_err_set(e, LORA_EINVAL, "%s: two layers of this adapter change '%s'",
			                    in[p->ops[i].input].path, p->ops[i].tensor);
	return 0;
}

/* Ops for a tensor: [*first, *first + count). */
static size_t find_ops(const plan *p, const char *tensor, size_t *first)
{
	size_t lo = 0, hi = p->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(p->ops[mid].tensor, tensor) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t k = lo;
	while (k < p->n && strcmp(p->ops[k].tensor, tensor) == 0)
		k++;
	*first = lo;
	return k - lo;
}

/* W += coef * B A, or for fan_in_fan_out weights (stored in x out) W += coef * A^T B^T. */
static void apply_op(float *W, const op *x)
{
	const lora_layer *l = x->l;
	if (x->bias) {
		for (size_t j = 0; j < l->out; j++)
			W[j] += x->coef * l->bias[j];
		return;
	}
	if (!x->a->fan_in_fan_out)
		lora_linalg_sgemm(0, 0, l->out, l->in, l->rank, x->coef, l->B, l->A, 1.0f, W);
	else
		lora_linalg_sgemm(1, 1, l->in, l->out, l->rank, x->coef, l->A, l->B, 1.0f, W);
	if (!l->magnitude)
		return;
	/* DoRA: each output row of W + dW is rescaled to length m_j. */
	size_t rows = l->out, cols = l->in;
	for (size_t j = 0; j < rows; j++) {
		double ss = 0;
		for (size_t k = 0; k < cols; k++) {
			float v = x->a->fan_in_fan_out ? W[k * rows + j] : W[j * cols + k];
			ss += (double)v * v;
		}
		float f = ss > 0 ? (float)(l->magnitude[j] / sqrt(ss)) : 0.0f;
		for (size_t k = 0; k < cols; k++)
			if (x->a->fan_in_fan_out)
				W[k * rows + j] *= f;
			else
				W[j * cols + k] *= f;
	}
}

static lora_dtype out_dtype(const lora_st_tensor *t, const lora_merge_opts *o)
{
	return o->dtype >= 0 && lora_dtype_is_float(t->dtype) ? (lora_dtype)o->dtype : t->dtype;
}

/* Write one tensor: merged through f32 when it has ops, converted in
 * chunks when only the dtype changes, copied byte for byte otherwise. */
static int write_tensor(lora_st_writer *w, const lora_st_tensor *t, const plan *p, const lora_merge_opts *o,
                        int *changed, lora_err *e)
{
	size_t first, nops = find_ops(p, t->name, &first);
	lora_dtype od = out_dtype(t, o);
	size_t es = lora_dtype_size(od);
	int rc = 0;
	*changed = nops > 0;
	if (!nops && od == t->dtype)
		return lora_st_writer_write(w, t->data, t->nbytes, e);
	size_t chunk = nops ? t->nelem : (t->nelem < (1u << 20) ? t->nelem : (1u << 20));
	float *f = malloc((chunk ? chunk : 1) * sizeof *f);
	unsigned char *buf = od == LORA_F32 ? NULL : malloc((chunk ? chunk : 1) * es);
	if (!f || (od != LORA_F32 && !buf)) {
		rc = lora_err_set(e, LORA_ENOMEM, "tensor '%s': out of memory", t->name);
		goto out;
	}
	size_t isz = lora_dtype_size(t->dtype);
	for (size_t off = 0; off < t->nelem || (off == 0 && t->nelem == 0); off += chunk) {
		size_t k = t->nelem - off < chunk ? t->nelem - off : chunk;
		lora_dtype_to_f32(f, (const unsigned char *)t->data + off * isz, t->dtype, k);
		for (size_t i = 0; i < nops; i++)
			apply_op(f, &p->ops[first + i]);
		if (nops) {
			size_t bad = lora_dtype_find_nonfinite(f, k);
			if (bad < k) {
				rc = lora_err_set(e, LORA_EINVAL, "tensor '%s': merged value at index %zu is not finite",
				                  t->name, bad);
				goto out;
			}
		}
		if (buf)
			lora_dtype_from_f32(buf, f, od, k);
		if ((rc = lora_st_writer_write(w, buf ? (void *)buf : (void *)f, k * es, e)))
			goto out;
		if (t->nelem == 0)
			break;
	}
out:
	free(f);
	free(buf);
	return rc;
}

/* Write one shard to path. */
static int merge_shard(const lora_st *st, const char *path, const plan *p, const lora_merge_opts *o,
                       size_t *done, size_t total, uint64_t *bytes, uint64_t total_bytes,
                       size_t *merged, uint64_t *written, lora_err *e)
{
	lora_st_spec *specs = calloc(st->ntensors ? st->ntensors : 1, sizeof *specs);
	lora_st_writer *w = NULL;
	int rc;
	if (!specs)
		return lora_err_nomem(e);
	for (size_t i = 0; i < st->ntensors; i++) {
		const lora_st_tensor *t = &st->tensors[i];
		specs[i].name = t->name;
		specs[i].dtype = out_dtype(t, o);
		specs[i].ndim = t->ndim;
		memcpy(specs[i].shape, t->shape, sizeof t->shape);
		*written += t->nelem * lora_dtype_size(specs[i].dtype);
	}
	if ((rc = lora_st_writer_open(&w, path, specs, st->ntensors, st->meta, st->nmeta, o->force, e)))
		goto out;
	for (size_t i = 0; i < st->ntensors; i++) {
		const lora_st_tensor *t = &st->tensors[i];
		int changed;
		if ((rc = write_tensor(w, t, p, o, &changed, e))) {
			lora_st_writer_abort(w);
			goto out;
		}
		lora_st_release(t);
		*merged += (size_t)changed;
		*bytes += t->nbytes;
		++*done;
		if (o->progress)
			o->progress(o->ctx, *done, total, *bytes, total_bytes);
	}
	rc = lora_st_writer_commit(w, e);
out:
	free(specs);
	return rc;
}

static int copy_file(const char *from, const char *to, lora_err *e)
{
	int in = open(from, O_RDONLY), out = -1, rc = 0;
	char buf[1 << 16];
	if (in < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", from, strerror(errno));
	out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0666);
	if (out < 0) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", to, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0 || write(out, buf, (size_t)n) != n) {
			rc = lora_err_set(e, LORA_EIO, "%s: copy failed: %s", n < 0 ? from : to, strerror(errno));
			goto out;
		}
	}
	if (fsync(out) != 0)
		rc = lora_err_set(e, LORA_EIO, "%s: %s", to, strerror(errno));
out:
	close(in);
	if (out >= 0 && close(out) != 0 && !rc)
		rc = lora_err_set(e, LORA_EIO, "%s: %s", to, strerror(errno));
	return rc;
}

/* The index with total_size updated; every other key kept. */
static int write_index(const lora_ckpt *m, const char *path, uint64_t total, lora_err *e)
{
	char *outtext = NULL;
	cJSON *j = NULL;
	lora_outfile of;
	int rc = lora_json_read_file(&j, m->index_path, 0, e);
	if (rc)
		return rc;
	cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
	if (!cJSON_IsObject(meta)) {
		meta = cJSON_CreateObject();
		cJSON_AddItemToObject(j, "metadata", meta);
	}
	cJSON_DeleteItemFromObjectCaseSensitive(meta, "total_size");
	cJSON_AddNumberToObject(meta, "total_size", (double)total);
	if (!(outtext = cJSON_Print(j)))
		rc = lora_err_nomem(e);
	else if (!(rc = lora_outfile_open(&of, path, 0, e))) {
		fputs(outtext, of.fp);
		fputc('\n', of.fp);
		rc = lora_outfile_commit(&of, e);
	}
	cJSON_free(outtext);
	cJSON_Delete(j);
	return rc;
}

static int same_file(const char *a, const char *b)
{
	struct stat x, y;
	return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* Every other regular file of the model directory (config, tokenizer,
 * generation config...), copied into the output. */
static int copy_others(const lora_ckpt *m, lora_outdir *d, lora_err *e)
{
	struct stat sb;
	int rc = 0;
	DIR *dir = opendir(m->dir);
	if (!dir)
		return lora_err_set(e, LORA_EIO, "%s: %s", m->dir, strerror(errno));
	struct dirent *de;
	while (!rc && (de = readdir(dir))) {
		char src[4096];
		int skip = de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2]));
		for (size_t s = 0; s < m->nshards && !skip; s++)
			skip = strcmp(de->d_name, lora_path_base(m->shards[s]->path)) == 0;
		if (skip || (m->index_path && strcmp(de->d_name, lora_path_base(m->index_path)) == 0))
			continue;
		snprintf(src, sizeof src, "%s/%s", m->dir, de->d_name);
		if (stat(src, &sb) != 0 || !S_ISREG(sb.st_mode))
			continue;
		const char *dst = lora_outdir_file(d, de->d_name);
		rc = dst ? copy_file(src, dst, e) : lora_err_nomem(e);
	}
	closedir(dir);
	return rc;
}

int lora_merge_checkpoint(const lora_ckpt *m, const lora_merge_input *in, size_t n, const char *out,
                          const lora_merge_opts *o, size_t *merged_out, lora_err *e)
{
	plan p = {0};
	lora_outdir d;
	size_t merged = 0, done = 0, total = 0;
	uint64_t bytes = 0, total_bytes = 0, written = 0;
	struct stat sb;
	int rc = build_plan(&p, m, in, n, o, e);
	if (rc)
		goto out;
	for (size_t s = 0; s < m->nshards; s++) {
		total += m->shards[s]->ntensors;
		for (size_t i = 0; i < m->shards[s]->ntensors; i++)
			total_bytes += m->shards[s]->tensors[i].nbytes;
		if (same_file(m->shards[s]->path, out)) {
			rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite the input model", out);
			goto out;
		}
	}
	int to_dir = !(stat(m->path, &sb) == 0 && S_ISREG(sb.st_mode) && !m->index_path);
	if (!to_dir) {
		rc = merge_shard(m->shards[0], out, &p, o, &done, total, &bytes, total_bytes, &merged, &written, e);
		goto out;
	}
	if (same_file(m->dir, out)) {
		rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite the input model", out);
		goto out;
	}
	if ((rc = lora_outdir_open(&d, out, o->force, NULL, e)))
		goto out;
	for (size_t s = 0; s < m->nshards && !rc; s++) {
		const char *path = lora_outdir_file(&d, lora_path_base(m->shards[s]->path));
		rc = path ? merge_shard(m->shards[s], path, &p, o, &done, total, &bytes, total_bytes, &merged,
		                        &written, e)
		          : lora_err_nomem(e);
	}
	if (!rc && m->index_path) {
		const char *path = lora_outdir_file(&d, lora_path_base(m->index_path));
		rc = path ? write_index(m, path, written, e) : lora_err_nomem(e);
	}
	if (!rc)
		rc = copy_others(m, &d, e);
	if (rc)
		lora_outdir_abort(&d, e);
	else
		rc = lora_outdir_commit(&d, e);
out:
	plan_free(&p);
	if (merged_out)
		*merged_out = merged;
	return rc;
}

void lora_merge_inputs_free(lora_merge_input *in, size_t n)
{
	for (size_t i = 0; in && i < n; i++) {
		/* both were allocated by lora_merge_inputs_load */
		lora_adapter_free((lora_adapter *)in[i].a);
		free((char *)in[i].path);
	}
	free(in);
}

int lora_merge_inputs_load(lora_merge_input **out, char *const *specs, size_t n, lora_err *e)
{
	lora_merge_input *in = calloc(n ? n : 1, sizeof *in);
	int rc = 0;
	*out = in;
	if (!in)
		return lora_err_nomem(e);
	for (size_t i = 0; i < n && !rc; i++) {
		char *path;
		lora_adapter *a = NULL;
		if ((rc = lora_load_spec(specs[i], &path, &in[i].scale, e)))
			break;
		rc = lora_load_adapter(&a, path, e);
		in[i].a = a;
		if (strcmp(path, "-") == 0) { /* named so in messages */
			free(path);
			if (!(path = strdup("standard input")) && !rc)
				rc = lora_err_nomem(e);
		}
		in[i].path = path;
	}
	return rc;
}
