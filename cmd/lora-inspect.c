/* lora-inspect: what an adapter or checkpoint holds, from the terminal. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "math/linalg.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "io/peft.h"
#include "io/ckpt.h"

enum { O_JSON = 256, O_LAYERS, O_STATS, O_CHECK, O_TOP };

static const lora_opt opts[] = {
	{O_JSON, 0, "json", NULL, "print one JSON document (keys in lora-inspect(1))", NULL},
	{O_LAYERS, 0, "layers", NULL, "one row per layer (per tensor for checkpoints)", NULL},
	{O_STATS, 0, "stats", NULL, "add ||scale*B*A||_F and top singular values per layer (reads payloads)", NULL},
	{O_TOP, 0, "top", "K", "singular values shown per layer with --stats (default 4)", NULL},
	{O_CHECK, 0, "check", NULL, "read and verify every payload CRC, like gzip -t", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-inspect",
	"[options] [FILE|DIR|-]",
	"Show format, ranks, alpha, targets, parameters and size of an adapter or checkpoint.",
	"FILE is a .lora adapter, a .safetensors checkpoint or a sharded index; DIR a model\n"
	"directory. A PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
	"or its adapter_model.safetensors is shown like a .lora. '-' (or no operand) reads a\n"
	".lora from standard input. Without --stats or --check only the .lora header is\n"
	"read, so inspecting a large adapter is instant.\n\n"
	"Examples:\n"
	"  lora-inspect run.lora\n"
	"  lora-inspect --json run.lora | jq .parameters\n"
	"  lora-init --shape w=64x64 | lora-inspect --stats -\n",
	opts,
	"@file",
};

typedef struct {
	int json, layers, stats, check;
	size_t top;
} settings;

/* ---- .lora ---- */

typedef struct {
	double norm;
	double *sv;
	size_t nsv;
} layer_stats;

static int compute_stats(const lora_adapter *a, layer_stats *st, lora_err *e)
{
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		size_t k = l->rank;
		if (l->out < k)
			k = l->out;
		if (l->in < k)
			k = l->in;
		st[i].sv = malloc(k * sizeof(double));
		if (!st[i].sv)
			return lora_err_set(e, LORA_ENOMEM, "out of memory");
		st[i].nsv = k;
		int rc = lora_linalg_lowrank_svals(st[i].sv, l->B, l->A, l->out, l->rank, l->in, e);
		if (rc)
			return lora_err_prefix(e, "layer '%s'", l->name);
		double s = fabs(lora_adapter_layer_scale(a, l)), sum = 0;
		for (size_t j = 0; j < k; j++) {
			st[i].sv[j] *= s;
			sum += st[i].sv[j] * st[i].sv[j];
		}
		st[i].norm = sqrt(sum);
	}
	return 0;
}

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

static void print_histo(const char *label, const histo *h)
{
	printf("%-12s ", label);
	if (h->count == 1) {
		printf("%g\n", h->v[0]);
		return;
	}
	for (size_t i = 0; i < h->count; i++)
		printf("%s%g (%zu layers)", i ? ", " : "", h->v[i], h->n[i]);
	printf("%s\n", h->more ? ", ..." : "");
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

static void shape_text(char *buf, size_t n, const size_t *shape, size_t ndim)
{
	size_t at = 0;
	buf[0] = 0;
	for (size_t d = 0; d < ndim && at < n; d++)
		at += (size_t)snprintf(buf + at, n - at, "%s%zu", d ? "x" : "", shape[d]);
	if (!ndim)
		snprintf(buf, n, "scalar");
}

/* Print an adapter read from a .lora (peft 0) or a PEFT directory (1);
 * frees a. */
static int show_adapter(const char *path, lora_adapter *a, int peft, const settings *s, lora_err *e)
{
	layer_stats *st = NULL;
	int rc = 0;
	if (s->stats) {
		st = calloc(a->nlayers ? a->nlayers : 1, sizeof *st);
		if (!st) {
			rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
			goto out;
		}
		if ((rc = compute_stats(a, st, e)))
			goto out;
	}
	histo ranks = {0}, alphas = {0}, scales = {0};
	for (size_t i = 0; i < a->nlayers; i++) {
		histo_add(&ranks, (double)a->layers[i].rank);
		histo_add(&alphas, a->layers[i].alpha);
		histo_add(&scales, lora_adapter_layer_scale(a, &a->layers[i]));
	}
	uint64_t params = lora_adapter_params(a), raw = lora_adapter_raw_bytes(a);
	double ratio = a->file_bytes ? (double)raw / (double)a->file_bytes : 0;
	if (s->json) {
		cJSON *j = cJSON_CreateObject(), *t, *ls;
		cJSON_AddStringToObject(j, "file", path);
		cJSON_AddStringToObject(j, "kind", peft ? "peft" : "lora");
		if (peft)
			cJSON_AddNullToObject(j, "version");
		else
			cJSON_AddNumberToObject(j, "version", a->version);
		cJSON_AddStringToObject(j, "dtype", lora_dtype_name(a->dtype));
		cJSON_AddStringToObject(j, "scaling", a->rslora ? "rslora" : "standard");
		cJSON_AddNumberToObject(j, "num_layers", (double)a->nlayers);
		cJSON_AddItemToObject(j, "ranks", histo_json(&ranks, "rank"));
		cJSON_AddItemToObject(j, "alphas", histo_json(&alphas, "alpha"));
		cJSON_AddItemToObject(j, "scales", histo_json(&scales, "scale"));
		t = cJSON_AddArrayToObject(j, "targets");
		for (size_t i = 0; i < a->ntargets; i++)
			cJSON_AddItemToArray(t, cJSON_CreateString(a->targets[i]));
		cJSON_AddNumberToObject(j, "parameters", (double)params);
		cJSON_AddNumberToObject(j, "file_bytes", (double)a->file_bytes);
		cJSON_AddNumberToObject(j, "raw_bytes", (double)raw);
		cJSON_AddNumberToObject(j, "compression_ratio", ratio);
		if (a->base_name || a->base_fingerprint) {
			cJSON *b = cJSON_AddObjectToObject(j, "base_model");
			if (a->base_name)
				cJSON_AddStringToObject(b, "name", a->base_name);
			if (a->base_fingerprint)
				cJSON_AddStringToObject(b, "fingerprint", a->base_fingerprint);
		} else {
			cJSON_AddNullToObject(j, "base_model");
		}
		cJSON *p = a->provenance ? cJSON_Parse(a->provenance) : NULL;
		if (p)
			cJSON_AddItemToObject(j, "provenance", p);
		else
			cJSON_AddNullToObject(j, "provenance");
		cJSON_AddBoolToObject(j, "fan_in_fan_out", a->fan_in_fan_out);
		cJSON_AddNumberToObject(j, "dora_layers", (double)lora_adapter_dora_layers(a));
		cJSON_AddNumberToObject(j, "bias_layers", (double)lora_adapter_bias_layers(a));
		cJSON *xs = cJSON_AddArrayToObject(j, "extras");
		for (size_t i = 0; i < a->nextras; i++) {
			const lora_extra *x = &a->extras[i];
			cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
			cJSON_AddStringToObject(o, "name", x->name);
			cJSON_AddStringToObject(o, "dtype", lora_dtype_name(x->dtype));
			for (size_t d = 0; d < x->ndim; d++)
				cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)x->shape[d]));
			cJSON_AddItemToObject(o, "shape", sh);
			cJSON_AddItemToArray(xs, o);
		}
		cJSON *pc = a->peft_config ? cJSON_Parse(a->peft_config) : NULL;
		if (pc)
			cJSON_AddItemToObject(j, "peft_config", pc);
		else
			cJSON_AddNullToObject(j, "peft_config");
		ls = cJSON_AddArrayToObject(j, "layers");
		for (size_t i = 0; i < a->nlayers; i++) {
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
			cJSON_AddItemToArray(ls, o);
		}
		char *txt = cJSON_Print(j);
		if (txt)
			puts(txt);
		cJSON_free(txt);
		cJSON_Delete(j);
		goto out;
	}
	char hb[32], hr[32];
	if (peft)
		printf("%-12s PEFT (%s + %s)\n", "format", LORA_PEFT_CONFIG, LORA_PEFT_WEIGHTS);
	else
		printf("%-12s .lora version %d\n", "format", a->version);
	printf("%-12s %zu\n", "layers", a->nlayers);
	print_histo("rank", &ranks);
	print_histo("alpha", &alphas);
	printf("%-12s %s (alpha/%s)\n", "scaling", a->rslora ? "rslora" : "standard",
	       a->rslora ? "sqrt(r)" : "r");
	print_histo("scale", &scales);
	printf("%-12s ", "targets");
	for (size_t i = 0; i < a->ntargets; i++)
		printf("%s%s", i ? "," : "", a->targets[i]);
	printf("%s\n", a->ntargets ? "" : "-");
	printf("%-12s %s\n", "dtype", lora_dtype_name(a->dtype));
	size_t nd = lora_adapter_dora_layers(a), nbias = lora_adapter_bias_layers(a);
	if (nd)
		printf("%-12s %zu layers with a magnitude vector\n", "dora", nd);
	if (nbias)
		printf("%-12s %zu layers with a lora_B bias\n", "lora bias", nbias);
	if (a->fan_in_fan_out)
		printf("%-12s fan_in_fan_out: base weights stored [in, out]\n", "layout");
	printf("%-12s %llu\n", "parameters", (unsigned long long)params);
	human_bytes(hb, sizeof hb, (double)a->file_bytes);
	human_bytes(hr, sizeof hr, (double)raw);
	printf("%-12s %llu (%s) on disk, %llu (%s) uncompressed, ratio %.3f\n", "bytes",
	       (unsigned long long)a->file_bytes, hb, (unsigned long long)raw, hr, ratio);
	printf("%-12s %s", "base model", a->base_name ? a->base_name : "-");
	if (a->base_fingerprint)
		printf(" (fingerprint %s)", a->base_fingerprint);
	printf("\n%-12s %s\n", "provenance", a->provenance ? a->provenance : "-");
	/* Tensors that are not linear LoRA factors are named, never hidden. */
	for (size_t i = 0; i < a->nextras; i++) {
		char shp[128];
		shape_text(shp, sizeof shp, a->extras[i].shape, a->extras[i].ndim);
		printf("%-12s %s %s %s\n", "extra", a->extras[i].name, lora_dtype_name(a->extras[i].dtype), shp);
	}
	if (s->layers || s->stats) {
		printf("\n%-48s %13s %5s %8s %8s", "layer", "out x in", "rank", "alpha", "scale");
		if (st)
			printf(" %11s  %s", "||dW||_F", "top singular values");
		printf("\n");
		for (size_t i = 0; i < a->nlayers; i++) {
			const lora_layer *l = &a->layers[i];
			char shp[48];
			snprintf(shp, sizeof shp, "%zux%zu", l->out, l->in);
			printf("%-48s %13s %5zu %8g %8g", l->name, shp, l->rank, l->alpha, lora_adapter_layer_scale(a, l));
			if (st) {
				printf(" %11.5g ", st[i].norm);
				for (size_t k = 0; k < st[i].nsv && k < s->top; k++)
					printf(" %.5g", st[i].sv[k]);
			}
			printf("\n");
		}
	}
out:
	for (size_t i = 0; st && i < a->nlayers; i++)
		free(st[i].sv);
	free(st);
	lora_adapter_free(a);
	return rc;
}

static int show_lora(const char *path, FILE *f, const settings *s, lora_err *e)
{
	lora_adapter *a = NULL;
	/* A pipe must be drained (and verified) or the writer gets SIGPIPE. */
	struct stat sb;
	int regular = fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode);
	int mode = s->stats ? LORA_READ_ALL
	           : (s->check || !regular) ? LORA_READ_VERIFY : LORA_READ_HEADER;
	int rc = lora_lorafile_readf(&a, f, path, mode, e);
	return rc ? rc : show_adapter(path, a, 0, s, e);
}

/* A PEFT adapter is small and its safetensors header is validated as a
 * whole, so it is simply loaded. */
static int show_peft(const char *path, const settings *s, lora_err *e)
{
	lora_adapter *a = NULL;
	int rc = lora_load_adapter(&a, path, e);
	return rc ? rc : show_adapter(path, a, 1, s, e);
}

/* ---- safetensors checkpoints ---- */

static int show_model(const char *path, const settings *s, lora_err *e)
{
	lora_ckpt *m = NULL;
	int rc = lora_ckpt_open(&m, path, e);
	if (rc)
		return rc;
	uint64_t n[LORA_DTYPE_COUNT] = {0}, p[LORA_DTYPE_COUNT] = {0}, b[LORA_DTYPE_COUNT] = {0};
	uint64_t params = 0, bytes = 0, disk = 0;
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		n[t->dtype]++, p[t->dtype] += t->nelem, b[t->dtype] += t->nbytes;
		params += t->nelem, bytes += t->nbytes;
	}
	for (size_t i = 0; i < m->nshards; i++)
		disk += m->shards[i]->file_size;
	char fp[17];
	lora_ckpt_fingerprint(m, fp);
	if (s->json) {
		cJSON *j = cJSON_CreateObject(), *d, *ts;
		cJSON_AddStringToObject(j, "file", path);
		cJSON_AddStringToObject(j, "kind", "safetensors");
		if (m->name)
			cJSON_AddStringToObject(j, "name", m->name);
		cJSON_AddStringToObject(j, "fingerprint", fp);
		cJSON_AddNumberToObject(j, "shards", (double)m->nshards);
		cJSON_AddNumberToObject(j, "tensors", (double)m->ntensors);
		cJSON_AddNumberToObject(j, "parameters", (double)params);
		cJSON_AddNumberToObject(j, "tensor_bytes", (double)bytes);
		cJSON_AddNumberToObject(j, "file_bytes", (double)disk);
		d = cJSON_AddObjectToObject(j, "dtypes");
		for (int k = 0; k < LORA_DTYPE_COUNT; k++)
			if (n[k]) {
				cJSON *o = cJSON_AddObjectToObject(d, lora_dtype_name((lora_dtype)k));
				cJSON_AddNumberToObject(o, "tensors", (double)n[k]);
				cJSON_AddNumberToObject(o, "parameters", (double)p[k]);
				cJSON_AddNumberToObject(o, "bytes", (double)b[k]);
			}
		if (s->layers) {
			ts = cJSON_AddArrayToObject(j, "layers");
			for (size_t i = 0; i < m->ntensors; i++) {
				const lora_st_tensor *t = m->tensors[i];
				cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
				cJSON_AddStringToObject(o, "name", t->name);
				cJSON_AddStringToObject(o, "dtype", lora_dtype_name(t->dtype));
				for (size_t k = 0; k < t->ndim; k++)
					cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
				cJSON_AddItemToObject(o, "shape", sh);
				cJSON_AddNumberToObject(o, "shard", (double)m->tensor_shard[i]);
				cJSON_AddItemToArray(ts, o);
			}
		}
		char *txt = cJSON_Print(j);
		if (txt)
			puts(txt);
		cJSON_free(txt);
		cJSON_Delete(j);
		lora_ckpt_close(m);
		return 0;
	}
	char hb[32];
	printf("%-12s safetensors, %zu shard%s\n", "format", m->nshards, m->nshards == 1 ? "" : "s");
	printf("%-12s %s (fingerprint %s)\n", "model", m->name ? m->name : "-", fp);
	printf("%-12s %zu\n", "tensors", m->ntensors);
	printf("%-12s %llu\n", "parameters", (unsigned long long)params);
	for (int k = 0; k < LORA_DTYPE_COUNT; k++)
		if (n[k])
			printf("%-12s %llu tensors, %llu parameters, %llu bytes\n", lora_dtype_name((lora_dtype)k),
			       (unsigned long long)n[k], (unsigned long long)p[k], (unsigned long long)b[k]);
	human_bytes(hb, sizeof hb, (double)disk);
	printf("%-12s %llu (%s) on disk\n", "bytes", (unsigned long long)disk, hb);
	if (s->layers) {
		printf("\n%-56s %-6s %s\n", "tensor", "dtype", "shape");
		for (size_t i = 0; i < m->ntensors; i++) {
			const lora_st_tensor *t = m->tensors[i];
			printf("%-56s %-6s ", t->name, lora_dtype_name(t->dtype));
			for (size_t k = 0; k < t->ndim; k++)
				printf("%s%zu", k ? "x" : "", t->shape[k]);
			printf("%s\n", t->ndim ? "" : "scalar");
		}
	}
	lora_ckpt_close(m);
	return 0;
}

int main(int argc, char **argv)
{
	settings s = {.top = 4};
	const char *path = NULL;
	int id, rc;
	lora_err e = {0};
	lora_cli c;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_JSON: s.json = 1; break;
		case O_LAYERS: s.layers = 1; break;
		case O_STATS: s.stats = 1; break;
		case O_CHECK: s.check = 1; break;
		case O_TOP: s.top = (size_t)lora_cli_int(&tool, "--top", c.arg, 0, 1 << 20); break;
		case LORA_OPT_OPERAND:
			if (path)
				lora_cli_usage_error(&tool, "one input at a time (got '%s' and '%s')", path, c.arg);
			path = c.arg;
			break;
		}
	}
	if (!path)
		path = "-";
	struct stat sb;
	if (strcmp(path, "-") == 0) {
		if (isatty(0))
			lora_cli_usage_error(&tool, "no input: give a FILE, or pipe a .lora into standard input");
		rc = show_lora("standard input", stdin, &s, &e);
	} else if (stat(path, &sb) != 0) {
		rc = lora_err_set(&e, LORA_EIO, "%s: %s", path, strerror(errno));
	} else if (S_ISDIR(sb.st_mode)) {
		rc = lora_peft_detect(path) ? show_peft(path, &s, &e) : show_model(path, &s, &e);
	} else {
		FILE *f = fopen(path, "rb");
		unsigned char magic[8];
		if (!f) {
			rc = lora_err_set(&e, LORA_EIO, "%s: %s", path, strerror(errno));
		} else if ((fread(magic, 1, 8, f) == 8 && lora_lorafile_is_lora(magic, 8)) ||
		           (strlen(path) > 5 && strcmp(path + strlen(path) - 5, ".lora") == 0)) {
			rewind(f);
			rc = show_lora(path, f, &s, &e);
		} else if (lora_peft_detect(path)) {
			rc = show_peft(path, &s, &e);
		} else {
			rc = show_model(path, &s, &e);
		}
		if (f)
			fclose(f);
	}
	if (rc)
		return lora_cli_fail(&tool, &e);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		lora_cli_error(&tool, "standard output: write error: %s", strerror(errno));
		return LORA_EXIT_FAIL;
	}
	return LORA_EXIT_OK;
}
