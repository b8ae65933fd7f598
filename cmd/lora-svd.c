/* lora-svd: extract an adapter from a full fine-tune, or re-rank one. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "ops/svd.h"

enum {
	O_TUNED = 256, O_ENERGY, O_MAXRANK, O_REGEX, O_LAYERS, O_METHOD, O_OVERSAMPLE, O_POWER, O_SEED,
	O_DTYPE, O_JSON
};

static const lora_opt opts[] = {
	{'m', 'm', "model", "BASE", "base checkpoint: safetensors file, sharded index or model directory", "@file"},
	{O_TUNED, 0, "tuned", "TUNED", "the fine-tuned checkpoint to extract from (with -m)", "@file"},
	{'r', 'r', "rank", "RANK", "keep RANK directions per layer (at most min(out, in))", NULL},
	{O_ENERGY, 0, "energy", "E", "per layer, the smallest rank keeping fraction E of ||dW||_F^2", NULL},
	{O_MAXRANK, 0, "max-rank", "K", "with --energy: at most K directions per layer", NULL},
	{'t', 't', "targets", "LIST", "extraction: module-name suffixes, or all-linear (the default)", "q_proj,v_proj all-linear"},
	{O_REGEX, 0, "target-regex", "RE", "extraction: modules whose whole name matches RE (extended regex)", NULL},
	{O_LAYERS, 0, "layers", "LIST", "extraction: only blocks with these indices, e.g. 0-3,7", NULL},
	{O_METHOD, 0, "method", "METHOD", "extraction: randomized (default) or exact (LAPACK gesdd)", "randomized exact"},
	{O_OVERSAMPLE, 0, "oversample", "P", "randomized: extra test vectors (default 10)", NULL},
	{O_POWER, 0, "power-iters", "Q", "randomized: subspace iterations (default 2)", NULL},
	{O_SEED, 0, "seed", "N", "randomized: seed (default 0): same seed, same bytes", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "storage dtype: f32, f16 or bf16 (default f32; re-rank: the input's)", "f32 f16 bf16"},
	{O_JSON, 0, "json", NULL, "print the report as JSON on standard error", NULL},
	{'o', 'o', "output", "FILE", "write the adapter to FILE (default: standard output)", "@file"},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'q', 'q', "quiet", NULL, "no report on standard error, only errors", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-svd",
	"(-m BASE --tuned TUNED | [ADAPTER|-]) (-r RANK | --energy E) [options] [-o OUT]",
	"Extract a LoRA adapter from a full fine-tune by truncated SVD, or re-rank an adapter.",
	"With -m and --tuned, each target weight's difference W_tuned - W_base = U S V^T is\n"
	"truncated and stored as B = U_r S_r^(1/2), A = S_r^(1/2) V_r^T, alpha = r (scaling 1).\n"
	"Otherwise the adapter (a file, or standard input) is re-ranked exactly from its\n"
	"factors. A report (rank, retained energy, relative error per layer) goes to\n"
	"standard error.\n\n"
	"Examples:\n"
	"  lora-svd -m base/ --tuned finetuned/ -r 16 -o extracted.lora\n"
	"  lora-svd -m base/ --tuned finetuned/ --energy 0.9 --max-rank 64 -t q_proj,v_proj -o e.lora\n"
	"  lora-svd -r 8 big.lora -o small.lora\n",
	opts,
	"@file",
};

typedef struct {
	const char *base, *tuned, *input, *out, *targets, *regex, *layers;
	int force, quiet, json, have_method, have_p, have_q, have_seed, have_dtype;
	lora_svd_opts o;
} settings;

static void progress(void *ctx, size_t i, size_t n, const char *name)
{
	(void)ctx;
	fprintf(stderr, "\r\033[K%s: %zu/%zu %s", tool.name, i + 1, n, name);
	fflush(stderr);
}

static char *provenance(const settings *s, const lora_adapter *in)
{
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "tool", "lora-svd " LORA_VERSION);
	if (s->base) {
		cJSON_AddStringToObject(p, "base", s->base);
		cJSON_AddStringToObject(p, "tuned", s->tuned);
		cJSON_AddStringToObject(p, "method", lora_svd_method_name(s->o.method));
	} else {
		cJSON_AddStringToObject(p, "input", s->input);
	}
	if (s->o.rank)
		cJSON_AddNumberToObject(p, "rank", (double)s->o.rank);
	else
		cJSON_AddNumberToObject(p, "energy", s->o.energy);
	if (s->o.max_rank)
		cJSON_AddNumberToObject(p, "max_rank", (double)s->o.max_rank);
	if (s->base && s->o.method == LORA_SVD_RANDOMIZED) {
		cJSON_AddNumberToObject(p, "oversample", (double)s->o.oversample);
		cJSON_AddNumberToObject(p, "power_iters", (double)s->o.power_iters);
		cJSON_AddNumberToObject(p, "seed", (double)s->o.seed);
	}
	cJSON *from = in && in->provenance ? cJSON_Parse(in->provenance) : NULL;
	if (from)
		cJSON_AddItemToObject(p, "from", from);
	char *txt = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return txt;
}

static uint64_t params(const lora_adapter *a) { return lora_adapter_params(a); }

static void report_json(const settings *s, const lora_svd_report *r, const lora_adapter *a)
{
	cJSON *j = cJSON_CreateObject(), *ls, *sk;
	cJSON_AddStringToObject(j, "mode", s->base ? "extract" : "rerank");
	if (s->base) {
		cJSON_AddStringToObject(j, "method", lora_svd_method_name(s->o.method));
		if (s->o.method == LORA_SVD_RANDOMIZED) {
			cJSON_AddNumberToObject(j, "oversample", (double)s->o.oversample);
			cJSON_AddNumberToObject(j, "power_iters", (double)s->o.power_iters);
			cJSON_AddNumberToObject(j, "seed", (double)s->o.seed);
		}
	}
	cJSON_AddStringToObject(j, "dtype", lora_dtype_name(a->dtype));
	cJSON_AddNumberToObject(j, "parameters", (double)params(a));
	ls = cJSON_AddArrayToObject(j, "layers");
	for (size_t i = 0; i < r->nlayers; i++) {
		const lora_svd_layer_report *l = &r->layers[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", l->name);
		cJSON_AddNumberToObject(o, "out", (double)l->out);
		cJSON_AddNumberToObject(o, "in", (double)l->in);
		if (!s->base)
			cJSON_AddNumberToObject(o, "old_rank", (double)l->old_rank);
		cJSON_AddNumberToObject(o, "rank", (double)l->rank);
		cJSON_AddNumberToObject(o, "norm", l->norm);
		cJSON_AddNumberToObject(o, "energy", l->energy);
		cJSON_AddNumberToObject(o, "rel_error", l->rel_error);
		cJSON_AddItemToArray(ls, o);
	}
	sk = cJSON_AddArrayToObject(j, "skipped");
	for (size_t i = 0; i < r->nskipped; i++)
		cJSON_AddItemToArray(sk, cJSON_CreateString(r->skipped[i]));
	char *txt = cJSON_Print(j);
	if (txt)
		fprintf(stderr, "%s\n", txt);
	cJSON_free(txt);
	cJSON_Delete(j);
}

static void report_text(const settings *s, const lora_svd_report *r, const lora_adapter *a)
{
	size_t w = 5;
	for (size_t i = 0; i < r->nlayers; i++)
		if (strlen(r->layers[i].name) > w)
			w = strlen(r->layers[i].name);
	fprintf(stderr, "%-*s %11s %*s %9s %10s\n", (int)w, "layer", "out x in", s->base ? 4 : 9, "rank",
	        "energy", "rel.error");
	for (size_t i = 0; i < r->nlayers; i++) {
		const lora_svd_layer_report *l = &r->layers[i];
		char shp[48], rk[48];
		snprintf(shp, sizeof shp, "%zux%zu", l->out, l->in);
		if (s->base)
			snprintf(rk, sizeof rk, "%zu", l->rank);
		else
			snprintf(rk, sizeof rk, "%zu->%zu", l->old_rank, l->rank);
		fprintf(stderr, "%-*s %11s %*s %9.6f %10.3e\n", (int)w, l->name, shp, s->base ? 4 : 9, rk, l->energy,
		        l->rel_error);
	}
	if (r->nskipped) {
		fprintf(stderr, "skipped (no difference):");
		for (size_t i = 0; i < r->nskipped; i++)
			fprintf(stderr, " %s", r->skipped[i]);
		fprintf(stderr, "\n");
	}
	fprintf(stderr, "%zu layers, %llu parameters, %s", a->nlayers, (unsigned long long)params(a),
	        lora_dtype_name(a->dtype));
	if (s->base)
		fprintf(stderr, ", %s SVD", lora_svd_method_name(s->o.method));
	if (r->nskipped)
		fprintf(stderr, ", %zu skipped", r->nskipped);
	fprintf(stderr, "\n");
}

static void parse(settings *s, int argc, char **argv)
{
	lora_cli c;
	int id;
	lora_svd_opts_init(&s->o);
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': s->base = c.arg; break;
		case O_TUNED: s->tuned = c.arg; break;
		case 'r': s->o.rank = (size_t)lora_cli_int(&tool, "--rank", c.arg, 1, 1 << 30); break;
		case O_ENERGY:
			s->o.energy = lora_cli_double(&tool, "--energy", c.arg);
			if (!(s->o.energy > 0 && s->o.energy <= 1))
				lora_cli_usage_error(&tool, "--energy: '%s' is not in (0, 1]", c.arg);
			break;
		case O_MAXRANK: s->o.max_rank = (size_t)lora_cli_int(&tool, "--max-rank", c.arg, 1, 1 << 30); break;
		case 't': s->targets = c.arg; break;
		case O_REGEX: s->regex = c.arg; break;
		case O_LAYERS: s->layers = c.arg; break;
		case O_METHOD:
			if (lora_svd_method_parse(c.arg, &s->o.method))
				lora_cli_usage_error(&tool, "--method: '%s' is not randomized or exact", c.arg);
			s->have_method = 1;
			break;
		case O_OVERSAMPLE:
			s->o.oversample = (size_t)lora_cli_int(&tool, "--oversample", c.arg, 0, 1 << 20);
			s->have_p = 1;
			break;
		case O_POWER:
			s->o.power_iters = (size_t)lora_cli_int(&tool, "--power-iters", c.arg, 0, 100);
			s->have_q = 1;
			break;
		case O_SEED:
			s->o.seed = (uint64_t)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX);
			s->have_seed = 1;
			break;
		case O_DTYPE:
			if (lora_dtype_parse(c.arg, &s->o.dtype))
				lora_cli_usage_error(&tool, "--dtype: '%s' is not f32, f16 or bf16", c.arg);
			s->have_dtype = 1;
			break;
		case O_JSON: s->json = 1; break;
		case 'o': s->out = c.arg; break;
		case 'f': s->force = 1; break;
		case 'q': s->quiet = 1; break;
		case LORA_OPT_OPERAND:
			if (s->input)
				lora_cli_usage_error(&tool, "one adapter at a time (got '%s' and '%s')", s->input, c.arg);
			s->input = c.arg;
			break;
		}
	}
	if (!s->o.rank == !(s->o.energy > 0))
		lora_cli_usage_error(&tool, s->o.rank ? "-r and --energy are exclusive" : "need -r RANK or --energy E");
	if (s->o.max_rank && s->o.rank)
		lora_cli_usage_error(&tool, "--max-rank goes with --energy, not -r");
	if (!s->base != !s->tuned)
		lora_cli_usage_error(&tool, s->base ? "-m BASE needs --tuned TUNED" : "--tuned TUNED needs -m BASE");
	if (s->base) {
		if (s->input)
			lora_cli_usage_error(&tool, "unexpected operand '%s' with -m and --tuned", s->input);
		if (s->targets && s->regex)
			lora_cli_usage_error(&tool, "-t and --target-regex are exclusive");
		if (s->o.method == LORA_SVD_EXACT && (s->have_p || s->have_q || s->have_seed))
			lora_cli_usage_error(&tool, "--oversample, --power-iters and --seed go with --method randomized");
	} else {
		const char *bad = s->targets ? "-t" : s->regex ? "--target-regex" : s->layers ? "--layers"
		                  : s->have_method ? "--method" : s->have_p ? "--oversample"
		                  : s->have_q ? "--power-iters" : s->have_seed ? "--seed" : NULL;
		if (bad)
			lora_cli_usage_error(&tool, "%s goes with -m and --tuned (re-ranking is always exact)", bad);
		if (!s->input)
			s->input = "-";
		if (strcmp(s->input, "-") == 0 && isatty(STDIN_FILENO))
			lora_cli_usage_error(&tool, "no input: give an ADAPTER, pipe one into standard input, or use -m and --tuned");
	}
}

/* 1 if path is one of m's files (with -f the output would replace it). */
static int is_model_file(const lora_ckpt *m, const char *path)
{
	struct stat a, b;
	if (stat(path, &a) != 0)
		return 0;
	for (size_t i = 0; i < m->nshards; i++)
		if (stat(m->shards[i]->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return 1;
	return m->index_path && stat(m->index_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int extract(settings *s, lora_adapter **out, lora_svd_report *rep, lora_err *e)
{
	lora_ckpt *base = NULL, *tuned = NULL;
	lora_targets t = {0};
	const char *list = s->regex ? NULL : s->targets ? s->targets : "all-linear";
	int rc;
	if ((rc = lora_targets_init(&t, list, s->regex, e)) ||
	    (s->layers && (rc = lora_targets_set_layers(&t, s->layers, e))))
		goto out;
	if ((rc = lora_ckpt_open(&base, s->base, e)) || (rc = lora_ckpt_open(&tuned, s->tuned, e)))
		goto out;
	if (s->out && (is_model_file(base, s->out) || is_model_file(tuned, s->out))) {
		rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite an input model", s->out);
		goto out;
	}
	if ((rc = lora_svd_extract(out, base, tuned, &t, &s->o, rep, e)))
		goto out;
	if (s->regex)
		rc = lora_adapter_add_target(*out, s->regex, e);
	else
		for (size_t i = 0; i < t.nkeys && !rc; i++)
			rc = lora_adapter_add_target(*out, t.keys[i], e);
	if (!rc && t.all_linear)
		rc = lora_adapter_add_target(*out, "all-linear", e);
out:
	lora_targets_free(&t);
	lora_ckpt_close(base);
	lora_ckpt_close(tuned);
	return rc;
}

int main(int argc, char **argv)
{
	settings s = {0};
	lora_adapter *in = NULL, *a = NULL;
	lora_svd_report rep = {0};
	lora_err e = {0};
	int rc;

	lora_cli_signals();
	parse(&s, argc, argv);
	/* Refuse what lora_lorafile_save would refuse before the slow part, not after. */
	struct stat sb;
	if ((!s.out || strcmp(s.out, "-") == 0) && isatty(STDOUT_FILENO))
		lora_cli_usage_error(&tool, "refusing to write binary data to a terminal; use -o FILE or a pipe");
	if (s.out && strcmp(s.out, "-") != 0 && !s.force && lstat(s.out, &sb) == 0) {
		lora_cli_error(&tool, "%s: already exists (use -f to overwrite)", s.out);
		return LORA_EXIT_FAIL;
	}
	if (lora_cli_progress_ok(s.quiet)) {
		s.o.progress = progress;
		s.o.progress_ctx = NULL;
	}
	if (s.base) {
		rc = extract(&s, &a, &rep, &e);
	} else if (!(rc = lora_load_adapter(&in, s.input, &e))) {
		if (!s.have_dtype)
			s.o.dtype = in->dtype;
		rc = lora_svd_rerank(&a, in, &s.o, &rep, &e);
	}
	if (s.o.progress)
		fprintf(stderr, "\r\033[K");
	if (rc)
		goto fail;
	if (!(a->provenance = provenance(&s, in))) {
		rc = lora_err_set(&e, LORA_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = lora_lorafile_save(a, s.out, s.force, &e)))
		goto fail;
	if (s.json)
		report_json(&s, &rep, a);
	else if (!s.quiet)
		report_text(&s, &rep, a);
	rc = LORA_EXIT_OK;
	goto out;
fail:
	rc = lora_cli_fail(&tool, &e);
out:
	lora_svd_report_free(&rep);
	lora_adapter_free(in);
	lora_adapter_free(a);
	return rc;
}
