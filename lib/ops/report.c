#include "ops/report.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "io/peft.h"

/* Names come from files: on a terminal a control character in one could
 * rewrite the screen, so text reports print them as messages do. */
#define ESC(s) lora_err_escape((char[1024]){0}, 1024, (s))

/* One JSON document, indented, and a newline; j is consumed. */
static int put_json(FILE *f, cJSON *j, lora_err *e)
{
	char *txt = j ? cJSON_Print(j) : NULL;
	cJSON_Delete(j);
	if (!txt)
		return lora_err_nomem(e);
	fprintf(f, "%s\n", txt);
	cJSON_free(txt);
	return 0;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static cJSON *shape_json(const size_t *shape, size_t ndim)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t k = 0; k < ndim; k++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[k]));
	return a;
}

static cJSON *names_json(const char *const *names, size_t n)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t i = 0; i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(names[i]));
	return a;
}

/* ---- lora-inspect ---- */

/* Distinct values of a per-layer quantity with their counts, in first-seen order. */
typedef struct {
	double v[64];
	size_t n[64], count;
	int more;
} histo;

static void histo_add(histo *h, double v)
{
	for (size_t i = 0; i < h->count; i++)
		if (h->v[i] == v) {
			h->n[i]++;
			return;
		}
	if (h->count == 64) {
		h->more = 1;
		return;
	}
	h->v[h->count] = v;
	h->n[h->count++] = 1;
}

static void print_histo(FILE *f, const char *label, const histo *h)
{
	fprintf(f, "%-12s ", label);
	if (h->count == 1) {
		fprintf(f, "%g\n", h->v[0]);
		return;
	}
	for (size_t i = 0; i < h->count; i++)
		fprintf(f, "%s%g (%zu layers)", i ? ", " : "", h->v[i], h->n[i]);
	fprintf(f, "%s\n", h->more ? ", ..." : "");
}

static cJSON *histo_json(const histo *h, const char *key)
{
	cJSON *arr = cJSON_CreateArray();
	for (size_t i = 0; i < h->count; i++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, key, h->v[i]);
		cJSON_AddNumberToObject(o, "layers", (double)h->n[i]);
		cJSON_AddItemToArray(arr, o);
	}
	return arr;
}

static void human_bytes(char *buf, size_t n, double b)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4)
		b /= 1024, i++;
	snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

typedef struct {
	histo ranks, alphas, scales;
	uint64_t params, raw;
	double ratio;
} adapter_sums;

static void adapter_sum(adapter_sums *s, const lora_adapter *a)
{
	memset(s, 0, sizeof *s);
	for (size_t i = 0; i < a->nlayers; i++) {
		histo_add(&s->ranks, (double)a->layers[i].rank);
		histo_add(&s->alphas, a->layers[i].alpha);
		histo_add(&s->scales, lora_adapter_layer_scale(a, &a->layers[i]));
	}
	s->params = lora_adapter_params(a);
	s->raw = lora_adapter_raw_bytes(a);
	s->ratio = a->file_bytes ? (double)s->raw / (double)a->file_bytes : 0;
}

static cJSON *parsed_or_null(const char *text)
{
	cJSON *p = text ? cJSON_Parse(text) : NULL;
	return p ? p : cJSON_CreateNull();
}

static cJSON *adapter_layer_json(const lora_adapter *a, size_t i, const lora_svd_spectrum *st)
{
	const lora_layer *l = &a->layers[i];
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", l->name);
	cJSON_AddNumberToObject(o, "out", (double)l->out);
	cJSON_AddNumberToObject(o, "in", (double)l->in);
	cJSON_AddNumberToObject(o, "rank", (double)l->rank);
	cJSON_AddNumberToObject(o, "alpha", l->alpha);
	cJSON_AddNumberToObject(o, "scale", lora_adapter_layer_scale(a, l));
	cJSON_AddBoolToObject(o, "dora", l->magnitude || l->has_magnitude);
	cJSON_AddBoolToObject(o, "bias", l->bias || l->has_bias);
	if (st) {
		cJSON_AddNumberToObject(o, "norm", st[i].norm);
		cJSON *sv = cJSON_AddArrayToObject(o, "singular_values");
		for (size_t k = 0; k < st[i].nsv; k++)
			cJSON_AddItemToArray(sv, cJSON_CreateNumber(st[i].sv[k]));
	}
	return o;
}

static int adapter_json(FILE *f, const char *path, const lora_adapter *a, int peft, const adapter_sums *s,
                        const lora_svd_spectrum *st, lora_err *e)
{
	cJSON *j = cJSON_CreateObject(), *t, *ls, *xs;
	cJSON_AddStringToObject(j, "file", path);
	cJSON_AddStringToObject(j, "kind", peft == LORA_REPORT_GGUF ? "gguf" : peft ? "peft" : "lora");
	cJSON_AddItemToObject(j, "version", peft ? cJSON_CreateNull() : cJSON_CreateNumber(a->version));
	cJSON_AddStringToObject(j, "dtype", lora_dtype_name(a->dtype));
	cJSON_AddStringToObject(j, "scaling", a->rslora ? "rslora" : "standard");
	cJSON_AddNumberToObject(j, "num_layers", (double)a->nlayers);
	cJSON_AddItemToObject(j, "ranks", histo_json(&s->ranks, "rank"));
	cJSON_AddItemToObject(j, "alphas", histo_json(&s->alphas, "alpha"));
	cJSON_AddItemToObject(j, "scales", histo_json(&s->scales, "scale"));
	t = cJSON_AddArrayToObject(j, "targets");
	for (size_t i = 0; i < a->ntargets; i++)
		cJSON_AddItemToArray(t, cJSON_CreateString(a->targets[i]));
	cJSON_AddNumberToObject(j, "parameters", (double)s->params);
	cJSON_AddNumberToObject(j, "file_bytes", (double)a->file_bytes);
	cJSON_AddNumberToObject(j, "raw_bytes", (double)s->raw);
	cJSON_AddNumberToObject(j, "compression_ratio", s->ratio);
	if (a->base_name || a->base_fingerprint) {
		cJSON *b = cJSON_AddObjectToObject(j, "base_model");
		if (a->base_name)
			cJSON_AddStringToObject(b, "name", a->base_name);
		if (a->base_fingerprint)
			cJSON_AddStringToObject(b, "fingerprint", a->base_fingerprint);
	} else {
		cJSON_AddNullToObject(j, "base_model");
	}
	cJSON_AddItemToObject(j, "provenance", parsed_or_null(a->provenance));
	cJSON_AddBoolToObject(j, "fan_in_fan_out", a->fan_in_fan_out);
	cJSON_AddNumberToObject(j, "dora_layers", (double)lora_adapter_dora_layers(a));
	cJSON_AddNumberToObject(j, "bias_layers", (double)lora_adapter_bias_layers(a));
	xs = cJSON_AddArrayToObject(j, "extras");
	for (size_t i = 0; i < a->nextras; i++) {
		const lora_extra *x = &a->extras[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", x->name);
		cJSON_AddStringToObject(o, "dtype", lora_dtype_name(x->dtype));
		cJSON_AddItemToObject(o, "shape", shape_json(x->shape, x->ndim));
		cJSON_AddItemToArray(xs, o);
	}
	cJSON_AddItemToObject(j, "peft_config", parsed_or_null(a->peft_config));
	ls = cJSON_AddArrayToObject(j, "layers");
	for (size_t i = 0; i < a->nlayers; i++)
		cJSON_AddItemToArray(ls, adapter_layer_json(a, i, st));
	return put_json(f, j, e);
}

static void adapter_layers_text(FILE *f, const lora_adapter *a, const lora_svd_spectrum *st, size_t top)
{
	fprintf(f, "\n%-48s %13s %5s %8s %8s", "layer", "out x in", "rank", "alpha", "scale");
	if (st)
		fprintf(f, " %11s  %s", "||dW||_F", "top singular values");
	fprintf(f, "\n");
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		char shp[48];
		snprintf(shp, sizeof shp, "%zux%zu", l->out, l->in);
		fprintf(f, "%-48s %13s %5zu %8g %8g", ESC(l->name), shp, l->rank, l->alpha, lora_adapter_layer_scale(a, l));
		if (st) {
			fprintf(f, " %11.5g ", st[i].norm);
			for (size_t k = 0; k < st[i].nsv && k < top; k++)
				fprintf(f, " %.5g", st[i].sv[k]);
		}
		fprintf(f, "\n");
	}
}

int lora_report_adapter(FILE *f, const char *path, const lora_adapter *a, int peft,
                        const lora_svd_spectrum *st, const lora_report_opts *o, lora_err *e)
{
	adapter_sums s;
	adapter_sum(&s, a);
	if (o->json)
		return adapter_json(f, path, a, peft, &s, st, e);
	char hb[32], hr[32];
	if (peft == LORA_REPORT_GGUF)
		fprintf(f, "%-12s GGUF LoRA adapter (llama.cpp)\n", "format");
	else if (peft)
		fprintf(f, "%-12s PEFT (%s + %s)\n", "format", LORA_PEFT_CONFIG, LORA_PEFT_WEIGHTS);
	else
		fprintf(f, "%-12s .lora version %d\n", "format", a->version);
	fprintf(f, "%-12s %zu\n", "layers", a->nlayers);
	print_histo(f, "rank", &s.ranks);
	print_histo(f, "alpha", &s.alphas);
	fprintf(f, "%-12s %s (alpha/%s)\n", "scaling", a->rslora ? "rslora" : "standard", a->rslora ? "sqrt(r)" : "r");
	print_histo(f, "scale", &s.scales);
	fprintf(f, "%-12s ", "targets");
	for (size_t i = 0; i < a->ntargets; i++)
		fprintf(f, "%s%s", i ? "," : "", a->targets[i]);
	fprintf(f, "%s\n", a->ntargets ? "" : "-");
	fprintf(f, "%-12s %s\n", "dtype", lora_dtype_name(a->dtype));
	size_t nd = lora_adapter_dora_layers(a), nbias = lora_adapter_bias_layers(a);
	if (nd)
		fprintf(f, "%-12s %zu layers with a magnitude vector\n", "dora", nd);
	if (nbias)
		fprintf(f, "%-12s %zu layers with a lora_B bias\n", "lora bias", nbias);
	if (a->fan_in_fan_out)
		fprintf(f, "%-12s fan_in_fan_out: base weights stored [in, out]\n", "layout");
	fprintf(f, "%-12s %llu\n", "parameters", (unsigned long long)s.params);
	human_bytes(hb, sizeof hb, (double)a->file_bytes);
	human_bytes(hr, sizeof hr, (double)s.raw);
	fprintf(f, "%-12s %llu (%s) on disk, %llu (%s) uncompressed, ratio %.3f\n", "bytes",
	        (unsigned long long)a->file_bytes, hb, (unsigned long long)s.raw, hr, s.ratio);
	fprintf(f, "%-12s %s", "base model", a->base_name ? ESC(a->base_name) : "-");
	if (a->base_fingerprint)
		fprintf(f, " (fingerprint %s)", a->base_fingerprint);
	fprintf(f, "\n%-12s %s\n", "provenance", a->provenance ? a->provenance : "-");
	/* Tensors that are not linear LoRA factors are named, never hidden. */
	for (size_t i = 0; i < a->nextras; i++) {
		char shp[128];
		lora_shape_format(shp, sizeof shp, a->extras[i].shape, a->extras[i].ndim);
		fprintf(f, "%-12s %s %s %s\n", "extra", ESC(a->extras[i].name), lora_dtype_name(a->extras[i].dtype), shp);
	}
	if (o->per_layer || st)
		adapter_layers_text(f, a, st, o->top);
	return 0;
}

typedef struct {
	uint64_t n[LORA_DTYPE_COUNT], p[LORA_DTYPE_COUNT], b[LORA_DTYPE_COUNT];
	uint64_t params, bytes, disk;
	char fp[17];
} ckpt_sums;

static void ckpt_sum(ckpt_sums *s, const lora_ckpt *m)
{
	memset(s, 0, sizeof *s);
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		s->n[t->dtype]++, s->p[t->dtype] += t->nelem, s->b[t->dtype] += t->nbytes;
		s->params += t->nelem, s->bytes += t->nbytes;
	}
	for (size_t i = 0; i < m->nshards; i++)
		s->disk += m->shards[i]->file_size;
	lora_ckpt_fingerprint(m, s->fp);
}

static int ckpt_json(FILE *f, const char *path, const lora_ckpt *m, const ckpt_sums *s, int per_layer,
                     lora_err *e)
{
	cJSON *j = cJSON_CreateObject(), *d, *ts;
	cJSON_AddStringToObject(j, "file", path);
	cJSON_AddStringToObject(j, "kind", "safetensors");
	if (m->name)
		cJSON_AddStringToObject(j, "name", m->name);
	cJSON_AddStringToObject(j, "fingerprint", s->fp);
	cJSON_AddNumberToObject(j, "shards", (double)m->nshards);
	cJSON_AddNumberToObject(j, "tensors", (double)m->ntensors);
	cJSON_AddNumberToObject(j, "parameters", (double)s->params);
	cJSON_AddNumberToObject(j, "tensor_bytes", (double)s->bytes);
	cJSON_AddNumberToObject(j, "file_bytes", (double)s->disk);
	d = cJSON_AddObjectToObject(j, "dtypes");
	for (int k = 0; k < LORA_DTYPE_COUNT; k++)
		if (s->n[k]) {
			cJSON *o = cJSON_AddObjectToObject(d, lora_dtype_name((lora_dtype)k));
			cJSON_AddNumberToObject(o, "tensors", (double)s->n[k]);
			cJSON_AddNumberToObject(o, "parameters", (double)s->p[k]);
			cJSON_AddNumberToObject(o, "bytes", (double)s->b[k]);
		}
	if (per_layer) {
		ts = cJSON_AddArrayToObject(j, "layers");
		for (size_t i = 0; i < m->ntensors; i++) {
			const lora_st_tensor *t = m->tensors[i];
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "name", t->name);
			cJSON_AddStringToObject(o, "dtype", lora_dtype_name(t->dtype));
			cJSON_AddItemToObject(o, "shape", shape_json(t->shape, t->ndim));
			cJSON_AddNumberToObject(o, "shard", (double)m->tensor_shard[i]);
			cJSON_AddItemToArray(ts, o);
		}
	}
	return put_json(f, j, e);
}

int lora_report_ckpt(FILE *f, const char *path, const lora_ckpt *m, const lora_report_opts *o, lora_err *e)
{
	ckpt_sums s;
	char hb[32], shp[128];
	ckpt_sum(&s, m);
	if (o->json)
		return ckpt_json(f, path, m, &s, o->per_layer, e);
	fprintf(f, "%-12s safetensors, %zu shard%s\n", "format", m->nshards, m->nshards == 1 ? "" : "s");
	fprintf(f, "%-12s %s (fingerprint %s)\n", "model", m->name ? ESC(m->name) : "-", s.fp);
	fprintf(f, "%-12s %zu\n", "tensors", m->ntensors);
	fprintf(f, "%-12s %llu\n", "parameters", (unsigned long long)s.params);
	for (int k = 0; k < LORA_DTYPE_COUNT; k++)
		if (s.n[k])
			fprintf(f, "%-12s %llu tensors, %llu parameters, %llu bytes\n", lora_dtype_name((lora_dtype)k),
			        (unsigned long long)s.n[k], (unsigned long long)s.p[k], (unsigned long long)s.b[k]);
	human_bytes(hb, sizeof hb, (double)s.disk);
	fprintf(f, "%-12s %llu (%s) on disk\n", "bytes", (unsigned long long)s.disk, hb);
	if (o->per_layer) {
		fprintf(f, "\n%-56s %-6s %s\n", "tensor", "dtype", "shape");
		for (size_t i = 0; i < m->ntensors; i++) {
			const lora_st_tensor *t = m->tensors[i];
			lora_shape_format(shp, sizeof shp, t->shape, t->ndim);
			fprintf(f, "%-56s %-6s %s\n", ESC(t->name), lora_dtype_name(t->dtype), shp);
		}
	}
	return 0;
}

/* ---- lora-inspect of a GGUF model ---- */

/* The GGUF keys a model report shows, under the architecture. */
static const char *const gguf_hparams[] = {
	"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
	"attention.head_count_kv", "rope.freq_base", "rope.dimension_count", "rope.scaling.type",
	"rope.scaling.factor", "attention.layer_norm_rms_epsilon", "vocab_size",
};
#define NHP (sizeof gguf_hparams / sizeof *gguf_hparams)

/* A scalar value as text (strings as they are, up to n bytes). */
static int gguf_scalar(const lora_gguf_kv *kv, char *buf, size_t n, double *num)
{
	const char *s;
	size_t len;
	uint64_t u;
	*num = NAN;
	if (!kv || kv->type == LORA_GGUF_ARRAY)
		return -1;
	if (!lora_gguf_kv_str(kv, 0, &s, &len))
		snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), s);
	else if (!lora_gguf_kv_uint(kv, 0, &u))
		snprintf(buf, n, "%llu", (unsigned long long)u), *num = (double)u;
	else if (!lora_gguf_kv_float(kv, 0, num))
		snprintf(buf, n, "%.9g", *num);
	else
		return -1;
	return 0;
}

static const lora_gguf_kv *gguf_key(const lora_gguf *g, const char *arch, const char *k)
{
	char key[128];
	snprintf(key, sizeof key, "%s%s%s", arch ? arch : "", arch ? "." : "", k);
	return lora_gguf_kv_find(g, key);
}

int lora_report_gguf_model(FILE *f, const char *path, const lora_gguf *g, const lora_report_opts *o, lora_err *e)
{
	char arch[64] = "", name[256] = "", buf[256], shp[128];
	double num;
	uint64_t params = 0, bytes = 0, n[64] = {0}, p[64] = {0}, b[64] = {0};
	gguf_scalar(lora_gguf_kv_find(g, "general.architecture"), arch, sizeof arch, &num);
	gguf_scalar(lora_gguf_kv_find(g, "general.name"), name, sizeof name, &num);
	for (size_t i = 0; i < g->ntensors; i++) {
		const lora_gguf_tensor *t = &g->tensors[i];
		params += t->nelem, bytes += t->nbytes;
		if (t->type < 64)
			n[t->type]++, p[t->type] += t->nelem, b[t->type] += t->nbytes;
	}
	const lora_gguf_kv *toks = lora_gguf_kv_find(g, "tokenizer.ggml.tokens");
	char tmodel[64] = "-", tpre[64] = "-";
	gguf_scalar(lora_gguf_kv_find(g, "tokenizer.ggml.model"), tmodel, sizeof tmodel, &num);
	gguf_scalar(lora_gguf_kv_find(g, "tokenizer.ggml.pre"), tpre, sizeof tpre, &num);
	size_t ntok = toks && toks->type == LORA_GGUF_ARRAY ? toks->n : 0;
	if (o->json) {
		cJSON *j = cJSON_CreateObject(), *h, *d;
		cJSON_AddStringToObject(j, "file", path);
		cJSON_AddStringToObject(j, "kind", "gguf");
		cJSON_AddNumberToObject(j, "version", g->version);
		cJSON_AddStringToObject(j, "architecture", arch);
		cJSON_AddStringToObject(j, "name", name);
		cJSON_AddNumberToObject(j, "tensors", (double)g->ntensors);
		cJSON_AddNumberToObject(j, "parameters", (double)params);
		cJSON_AddNumberToObject(j, "tensor_bytes", (double)bytes);
		cJSON_AddNumberToObject(j, "file_bytes", (double)g->file_size);
		d = cJSON_AddObjectToObject(j, "types");
		for (int k = 0; k < 64; k++)
			if (n[k]) {
				cJSON *x = cJSON_AddObjectToObject(d, lora_gguf_ggml_name((uint32_t)k));
				cJSON_AddNumberToObject(x, "tensors", (double)n[k]);
				cJSON_AddNumberToObject(x, "parameters", (double)p[k]);
				cJSON_AddNumberToObject(x, "bytes", (double)b[k]);
			}
		h = cJSON_AddObjectToObject(j, "hyperparameters");
		for (size_t k = 0; k < NHP; k++)
			if (!gguf_scalar(gguf_key(g, arch, gguf_hparams[k]), buf, sizeof buf, &num)) {
				if (isnan(num))
					cJSON_AddStringToObject(h, gguf_hparams[k], buf);
				else
					cJSON_AddNumberToObject(h, gguf_hparams[k], num);
			}
		d = cJSON_AddObjectToObject(j, "tokenizer");
		cJSON_AddStringToObject(d, "model", tmodel);
		cJSON_AddStringToObject(d, "pre", tpre);
		cJSON_AddNumberToObject(d, "tokens", (double)ntok);
		if (o->per_layer) {
			cJSON *ts = cJSON_AddArrayToObject(j, "layers");
			for (size_t i = 0; i < g->ntensors; i++) {
				const lora_gguf_tensor *t = &g->tensors[i];
				size_t shape[LORA_GGUF_MAX_DIMS];
				for (size_t k = 0; k < t->ndim; k++)
					shape[k] = (size_t)t->ne[t->ndim - 1 - k];
				cJSON *x = cJSON_CreateObject();
				cJSON_AddStringToObject(x, "name", t->name);
				cJSON_AddStringToObject(x, "type", lora_gguf_ggml_name(t->type));
				cJSON_AddItemToObject(x, "shape", shape_json(shape, t->ndim));
				cJSON_AddItemToArray(ts, x);
			}
		}
		return put_json(f, j, e);
	}
	fprintf(f, "%-12s gguf model, version %u\n", "format", g->version);
	fprintf(f, "%-12s %s\n", "architecture", arch[0] ? arch : "-");
	fprintf(f, "%-12s %s\n", "model", name[0] ? name : "-");
	for (size_t k = 0; k < NHP; k++)
		if (!gguf_scalar(gguf_key(g, arch, gguf_hparams[k]), buf, sizeof buf, &num))
			fprintf(f, "%-12s %s = %s\n", "hparam", gguf_hparams[k], buf);
	fprintf(f, "%-12s %s (pre %s), %zu tokens\n", "tokenizer", tmodel, tpre, ntok);
	fprintf(f, "%-12s %zu\n", "tensors", g->ntensors);
	fprintf(f, "%-12s %llu\n", "parameters", (unsigned long long)params);
	for (int k = 0; k < 64; k++)
		if (n[k])
			fprintf(f, "%-12s %llu tensors, %llu parameters, %llu bytes\n", lora_gguf_ggml_name((uint32_t)k),
			        (unsigned long long)n[k], (unsigned long long)p[k], (unsigned long long)b[k]);
	human_bytes(buf, sizeof buf, (double)g->file_size);
	fprintf(f, "%-12s %llu (%s) on disk\n", "bytes", (unsigned long long)g->file_size, buf);
	if (o->per_layer) {
		fprintf(f, "\n%-56s %-6s %s\n", "tensor", "type", "shape");
		for (size_t i = 0; i < g->ntensors; i++) {
			const lora_gguf_tensor *t = &g->tensors[i];
			size_t shape[LORA_GGUF_MAX_DIMS];
			for (size_t k = 0; k < t->ndim; k++)
				shape[k] = (size_t)t->ne[t->ndim - 1 - k];
			lora_shape_format(shp, sizeof shp, shape, t->ndim);
			fprintf(f, "%-56s %-6s %s\n", t->name, lora_gguf_ggml_name(t->type), shp);
		}
	}
	return 0;
}

/* ---- lora-svd ---- */

static void svd_params_json(cJSON *j, const lora_svd_opts *so)
{
	cJSON_AddStringToObject(j, "method", lora_svd_method_name(so->method));
	if (so->method == LORA_SVD_RANDOMIZED) {
		cJSON_AddNumberToObject(j, "oversample", (double)so->oversample);
		cJSON_AddNumberToObject(j, "power_iters", (double)so->power_iters);
		cJSON_AddNumberToObject(j, "seed", (double)so->seed);
	}
}

static int svd_json(FILE *f, const lora_svd_report *r, const lora_adapter *a, int extract,
                    const lora_svd_opts *so, lora_err *e)
{
	cJSON *j = cJSON_CreateObject(), *ls;
	cJSON_AddStringToObject(j, "mode", extract ? "extract" : "rerank");
	if (extract)
		svd_params_json(j, so);
	cJSON_AddStringToObject(j, "dtype", lora_dtype_name(a->dtype));
	cJSON_AddNumberToObject(j, "parameters", (double)lora_adapter_params(a));
	ls = cJSON_AddArrayToObject(j, "layers");
	for (size_t i = 0; i < r->nlayers; i++) {
		const lora_svd_layer_report *l = &r->layers[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", l->name);
		cJSON_AddNumberToObject(o, "out", (double)l->out);
		cJSON_AddNumberToObject(o, "in", (double)l->in);
		if (!extract)
			cJSON_AddNumberToObject(o, "old_rank", (double)l->old_rank);
		cJSON_AddNumberToObject(o, "rank", (double)l->rank);
		cJSON_AddNumberToObject(o, "norm", l->norm);
		cJSON_AddNumberToObject(o, "energy", l->energy);
		cJSON_AddNumberToObject(o, "rel_error", l->rel_error);
		cJSON_AddItemToArray(ls, o);
	}
	cJSON_AddItemToObject(j, "skipped", names_json((const char *const *)r->skipped, r->nskipped));
	return put_json(f, j, e);
}

int lora_report_svd(FILE *f, const lora_svd_report *r, const lora_adapter *a, int extract,
                    const lora_svd_opts *so, int json, lora_err *e)
{
	if (json)
		return svd_json(f, r, a, extract, so, e);
	size_t w = 5;
	int rw = extract ? 4 : 9;
	for (size_t i = 0; i < r->nlayers; i++)
		if (strlen(r->layers[i].name) > w)
			w = strlen(r->layers[i].name);
	fprintf(f, "%-*s %11s %*s %9s %10s\n", (int)w, "layer", "out x in", rw, "rank", "energy", "rel.error");
	for (size_t i = 0; i < r->nlayers; i++) {
		const lora_svd_layer_report *l = &r->layers[i];
		char shp[48], rk[48];
		snprintf(shp, sizeof shp, "%zux%zu", l->out, l->in);
		if (extract)
			snprintf(rk, sizeof rk, "%zu", l->rank);
		else
			snprintf(rk, sizeof rk, "%zu->%zu", l->old_rank, l->rank);
		fprintf(f, "%-*s %11s %*s %9.6f %10.3e\n", (int)w, ESC(l->name), shp, rw, rk, l->energy, l->rel_error);
	}
	if (r->nskipped) {
		fprintf(f, "skipped (no difference):");
		for (size_t i = 0; i < r->nskipped; i++)
			fprintf(f, " %s", r->skipped[i]);
		fprintf(f, "\n");
	}
	fprintf(f, "%zu layers, %llu parameters, %s", a->nlayers, (unsigned long long)lora_adapter_params(a),
	        lora_dtype_name(a->dtype));
	if (extract)
		fprintf(f, ", %s SVD", lora_svd_method_name(so->method));
	if (r->nskipped)
		fprintf(f, ", %zu skipped", r->nskipped);
	fprintf(f, "\n");
	return 0;
}

/* ---- lora-diff ---- */

/* "-" for NaN, "inf", else v with %.*g (exp: %.*e). */
static void fmt_num(char *buf, size_t n, double v, int exp, int prec)
{
	if (isnan(v))
		snprintf(buf, n, "-");
	else if (isinf(v))
		snprintf(buf, n, "inf");
	else if (exp)
		snprintf(buf, n, "%.*e", prec, v);
	else
		snprintf(buf, n, "%.*g", prec, v);
}

static cJSON *matrix_json(const double *m, size_t rows, size_t cols)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t i = 0; i < rows; i++) {
		cJSON *r = cJSON_CreateArray();
		for (size_t j = 0; j < cols; j++)
			cJSON_AddItemToArray(r, cJSON_CreateNumber(m[i * cols + j]));
		cJSON_AddItemToArray(a, r);
	}
	return a;
}

/* Grid indices shown in the text table: 1, 2, 4, ... and the last. */
static size_t grid(size_t *idx, size_t k)
{
	size_t n = 0;
	for (size_t v = 1; v < k; v *= 2)
		idx[n++] = v;
	idx[n++] = k;
	return n;
}

static void print_phi(FILE *f, const char *label, const double *phi, size_t rows, size_t cols)
{
	size_t ri[70], ci[70], nr = grid(ri, rows), nc = grid(ci, cols);
	char lab[32];
	fprintf(f, "  phi(i, j) of %-18s", label);
	for (size_t j = 0; j < nc; j++) {
		snprintf(lab, sizeof lab, "j=%zu", ci[j]);
		fprintf(f, " %7s", lab);
	}
	fprintf(f, "\n");
	for (size_t i = 0; i < nr; i++) {
		snprintf(lab, sizeof lab, "i=%zu", ri[i]);
		fprintf(f, "  %31s", lab);
		for (size_t j = 0; j < nc; j++)
			fprintf(f, " %7.4f", phi[(ri[i] - 1) * cols + ci[j] - 1]);
		fprintf(f, "\n");
	}
}

static cJSON *diff_layer_json(const lora_diff_layer *d, const lora_report_diff_opts *o)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "name", d->name);
	cJSON_AddNumberToObject(j, "out", (double)d->out);
	cJSON_AddNumberToObject(j, "in", (double)d->in);
	cJSON_AddNumberToObject(j, "rank_a", (double)d->rank_a);
	cJSON_AddItemToObject(j, "rank_b", o->base ? cJSON_CreateNull() : cJSON_CreateNumber((double)d->rank_b));
	cJSON_AddNumberToObject(j, "norm_a", d->norm_a);
	cJSON_AddNumberToObject(j, "norm_b", d->norm_b);
	cJSON_AddNumberToObject(j, "rel_diff", d->rel_diff);
	cJSON_AddItemToObject(j, "cosine", num_or_null(d->cosine));
	cJSON_AddItemToObject(j, "vectors_diff", num_or_null(d->vec_diff));
	cJSON_AddBoolToObject(j, "differs", lora_diff_layer_differs(d, o->tol));
	if (o->subspace) {
		cJSON *sub = cJSON_AddObjectToObject(j, "subspace");
		cJSON_AddItemToObject(sub, "phi_A", matrix_json(d->phi_A, d->phiA_rows, d->phiA_cols));
		cJSON_AddItemToObject(sub, "phi_B", matrix_json(d->phi_B, d->phiB_rows, d->phiB_cols));
		cJSON_AddNumberToObject(sub, "top", (double)d->top);
		cJSON_AddNumberToObject(sub, "top_out", d->top_out);
		cJSON_AddNumberToObject(sub, "top_in", d->top_in);
	}
	return j;
}

static int diff_json(FILE *f, const lora_diff_result *r, const lora_report_diff_opts *o, size_t ndiff,
                     int same, lora_err *e)
{
	cJSON *j = cJSON_CreateObject(), *ls;
	cJSON_AddStringToObject(j, "a", o->a);
	cJSON_AddStringToObject(j, "b", o->b);
	if (o->base) {
		cJSON_AddStringToObject(j, "base", o->base);
		cJSON_AddStringToObject(j, "tuned", o->tuned);
	}
	cJSON_AddNumberToObject(j, "tolerance", o->tol);
	cJSON_AddBoolToObject(j, "same", same);
	cJSON_AddNumberToObject(j, "differing", (double)ndiff);
	ls = cJSON_AddArrayToObject(j, "layers");
	for (size_t i = 0; i < r->nlayers; i++)
		cJSON_AddItemToArray(ls, diff_layer_json(&r->layers[i], o));
	cJSON_AddItemToObject(j, "only_in_a", names_json(r->only_a, r->n_only_a));
	cJSON_AddItemToObject(j, "only_in_b", names_json(r->only_b, r->n_only_b));
	return put_json(f, j, e);
}

static void diff_layer_text(FILE *f, const lora_diff_layer *d, const lora_report_diff_opts *o, int w)
{
	char shp[48], rk[48], cs[32];
	snprintf(shp, sizeof shp, "%zux%zu", d->out, d->in);
	if (o->base)
		snprintf(rk, sizeof rk, "%zu/-", d->rank_a);
	else
		snprintf(rk, sizeof rk, "%zu/%zu", d->rank_a, d->rank_b);
	fmt_num(cs, sizeof cs, d->cosine, 0, 6);
	fprintf(f, "%-*s %11s %9s %11.5g %11.5g %10.3e %9s%s\n", w, ESC(d->name), shp, rk, d->norm_a, d->norm_b,
	        d->rel_diff, cs, lora_diff_layer_differs(d, o->tol) ? " *" : "");
	if (!isnan(d->vec_diff) && !(d->vec_diff <= o->tol))
		fprintf(f, "  DoRA magnitudes / lora_B biases differ: %.3e\n", d->vec_diff);
	if (o->subspace) {
		print_phi(f, "A (input space)", d->phi_A, d->phiA_rows, d->phiA_cols);
		print_phi(f, "B (output space)", d->phi_B, d->phiB_rows, d->phiB_cols);
		fprintf(f, "  top-%zu directions of dW: output space %.4f, input space %.4f\n", d->top, d->top_out,
		        d->top_in);
	}
}

int lora_report_diff(FILE *f, const lora_diff_result *r, const lora_report_diff_opts *o, lora_err *e)
{
	int same;
	size_t ndiff = lora_diff_count(r, o->tol, &same), w = 5;
	if (o->json)
		return diff_json(f, r, o, ndiff, same, e);
	for (size_t i = 0; i < r->nlayers; i++)
		if (strlen(r->layers[i].name) > w)
			w = strlen(r->layers[i].name);
	fprintf(f, "%-*s %11s %9s %11s %11s %10s %9s\n", (int)w, "layer", "out x in", "rank a/b", "||dW_a||",
	        o->base ? "||dW_ckpt||" : "||dW_b||", "rel.diff", "cosine");
	for (size_t i = 0; i < r->nlayers; i++)
		diff_layer_text(f, &r->layers[i], o, (int)w);
	for (size_t i = 0; i < r->n_only_a; i++)
		fprintf(f, "only in %s: %s\n", o->a, r->only_a[i]);
	for (size_t i = 0; i < r->n_only_b; i++) {
		if (o->base)
			fprintf(f, "changed in %s, not in %s: %s\n", o->tuned, o->a, r->only_b[i]);
		else
			fprintf(f, "only in %s: %s\n", o->b, r->only_b[i]);
	}
	if (o->base)
		fprintf(f, "%zu layers, %zu differ (*, tolerance %g), %zu changed tensors not in %s\n", r->nlayers, ndiff,
		        o->tol, r->n_only_b, o->a);
	else
		fprintf(f, "%zu common layers, %zu differ (*, tolerance %g), %zu only in %s, %zu only in %s\n",
		        r->nlayers, ndiff, o->tol, r->n_only_a, o->a, r->n_only_b, o->b);
	return 0;
}

static cJSON *rank_json(long r) { return r < 0 ? cJSON_CreateNull() : cJSON_CreateNumber((double)r); }

static int diff_models_json(FILE *f, const lora_diff_models_result *r, const lora_report_diff_opts *o,
                            size_t ndiff, int same, lora_err *e)
{
	cJSON *j = cJSON_CreateObject(), *ls;
	cJSON_AddStringToObject(j, "base", o->base);
	cJSON_AddStringToObject(j, "tuned", o->tuned);
	cJSON_AddNumberToObject(j, "tolerance", o->tol);
	cJSON_AddBoolToObject(j, "same", same);
	cJSON_AddNumberToObject(j, "differing", (double)ndiff);
	ls = cJSON_AddArrayToObject(j, "tensors");
	for (size_t i = 0; i < r->ntensors; i++) {
		const lora_diff_tensor *d = &r->tensors[i];
		cJSON *t = cJSON_CreateObject();
		cJSON_AddStringToObject(t, "name", d->name);
		cJSON_AddItemToObject(t, "shape", shape_json(d->shape, d->ndim));
		cJSON_AddItemToObject(t, "norm", num_or_null(d->norm));
		cJSON_AddItemToObject(t, "base_norm", num_or_null(d->base_norm));
		cJSON_AddItemToObject(t, "relative", num_or_null(d->relative));
		cJSON_AddItemToObject(t, "rank_50", rank_json(d->rank50));
		cJSON_AddItemToObject(t, "rank_90", rank_json(d->rank90));
		cJSON_AddItemToObject(t, "rank_99", rank_json(d->rank99));
		cJSON_AddBoolToObject(t, "differs", lora_diff_tensor_differs(d, o->tol));
		cJSON_AddItemToArray(ls, t);
	}
	cJSON_AddItemToObject(j, "only_in_base", names_json(r->only_base, r->n_only_base));
	cJSON_AddItemToObject(j, "only_in_tuned", names_json(r->only_tuned, r->n_only_tuned));
	return put_json(f, j, e);
}

static void rank_text(char *buf, size_t n, long r)
{
	if (r < 0)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%ld", r);
}

int lora_report_diff_models(FILE *f, const lora_diff_models_result *r, const lora_report_diff_opts *o,
                            lora_err *e)
{
	int same;
	size_t ndiff = lora_diff_models_count(r, o->tol, &same), w = 6;
	if (o->json)
		return diff_models_json(f, r, o, ndiff, same, e);
	for (size_t i = 0; i < r->ntensors; i++)
		if (strlen(r->tensors[i].name) > w)
			w = strlen(r->tensors[i].name);
	fprintf(f, "%-*s %13s %11s %10s %5s %5s %5s\n", (int)w, "tensor", "shape", "||dW||", "relative", "r50", "r90",
	        "r99");
	for (size_t i = 0; i < r->ntensors; i++) {
		const lora_diff_tensor *d = &r->tensors[i];
		char shp[64], nm[32], rel[32], r1[24], r2[24], r3[24];
		lora_shape_format(shp, sizeof shp, d->shape, d->ndim);
		fmt_num(nm, sizeof nm, d->norm, 0, 5);
		fmt_num(rel, sizeof rel, d->relative, 1, 3);
		rank_text(r1, sizeof r1, d->rank50);
		rank_text(r2, sizeof r2, d->rank90);
		rank_text(r3, sizeof r3, d->rank99);
		fprintf(f, "%-*s %13s %11s %10s %5s %5s %5s\n", (int)w, ESC(d->name), shp, nm, rel, r1, r2, r3);
	}
	for (size_t i = 0; i < r->n_only_base; i++)
		fprintf(f, "only in %s: %s\n", o->base, r->only_base[i]);
	for (size_t i = 0; i < r->n_only_tuned; i++)
		fprintf(f, "only in %s: %s\n", o->tuned, r->only_tuned[i]);
	fprintf(f, "%zu common tensors, %zu differ (tolerance %g), %zu only in %s, %zu only in %s\n", r->ntensors,
	        ndiff, o->tol, r->n_only_base, o->base, r->n_only_tuned, o->tuned);
	return 0;
}
