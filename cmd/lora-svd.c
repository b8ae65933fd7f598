/* lora-svd: extract an adapter from a full fine-tune, or re-rank one. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/outfile.h"
#include "io/lorafile.h"
#include "math/blas.h"
#include "math/linalg.h"
#include "ops/report.h"

enum {
	O_TUNED = 256, O_ENERGY, O_MAXRANK, O_REGEX, O_LAYERS, O_METHOD, O_OVERSAMPLE, O_POWER, O_SEED,
	O_DTYPE, O_JSON
};

static const lora_opt opts[] = {
	{'m', 'm', "model", "BASE", "base checkpoint: safetensors file, sharded index or model directory", "@file"},
	{O_TUNED, 0, "tuned", "TUNED", "the fine-tuned checkpoint to extract from (with -m)", "@file"},
	{'r', 'r', "rank", "R", "keep R directions per layer (at most min(out, in))", NULL},
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
	{O_JSON, 0, "json", NULL, "print the report as JSON on standard output (needs -o FILE)", NULL},
	{'o', 'o', "output", "FILE", "write the adapter to FILE (default: standard output)", "@file"},
	{'j', 'j', "threads", "N", "threads for the SVDs (default: every core)", NULL},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'q', 'q', "quiet", NULL, "no report or progress on standard error, only errors", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-svd",
	"-m BASE --tuned TUNED (-r R | --energy E) [options] [-o OUT]\n"
	"[ADAPTER|-] (-r R | --energy E) [options] [-o OUT]",
	"Extract a LoRA adapter from a full fine-tune by truncated SVD, or re-rank an\n"
	"adapter.",
	"With -m and --tuned, each target weight's difference W_tuned - W_base = U S V^T\n"
	"is truncated and stored as B = U_r S_r^(1/2), A = S_r^(1/2) V_r^T, alpha = r\n"
	"(scaling 1). Otherwise the adapter (a file, or standard input) is re-ranked\n"
	"exactly from its factors. A report (rank, retained energy, relative error per\n"
	"layer) goes to standard error, or as JSON to standard output.\n\n"
	"Examples:\n"
	"  lora-svd -m base/ --tuned finetuned/ -r 16 -o extracted.lora\n"
	"  lora-svd -m base/ --tuned tuned/ --energy 0.9 --max-rank 64 -o e.lora\n"
	"  lora-svd -r 8 big.lora -o small.lora\n",
	opts,
	"@file",
};

static void progress(void *ctx, size_t i, size_t n, const char *name)
{
	lora_cli_progress_update(ctx, "%zu/%zu %s", i + 1, n, name);
}

int main(int argc, char **argv)
{
	lora_svd_job j = {.tool = "lora-svd " LORA_VERSION, .keep_dtype = 1};
	lora_adapter *a = NULL;
	lora_svd_report rep = {0};
	lora_err e = {0};
	lora_cli c;
	lora_cli_progress pr;
	int id, rc, force = 0, quiet = 0, json = 0, set_method = 0;
	const char *random = NULL;

	lora_cli_signals();
	lora_svd_opts_init(&j.o);
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': j.base = c.arg; break;
		case O_TUNED: j.tuned = c.arg; break;
		case 'r': j.o.rank = (size_t)lora_cli_int(&tool, "--rank", c.arg, 1, 1 << 30); break;
		case O_ENERGY:
			j.o.energy = lora_cli_double(&tool, "--energy", c.arg);
			if (!(j.o.energy > 0 && j.o.energy <= 1))
				lora_cli_usage_error(&tool, "--energy: '%s' is not in (0, 1]", c.arg);
			break;
		case O_MAXRANK: j.o.max_rank = (size_t)lora_cli_int(&tool, "--max-rank", c.arg, 1, 1 << 30); break;
		case 't': j.targets = c.arg; break;
		case O_REGEX: j.regex = c.arg; break;
		case O_LAYERS: j.layers = c.arg; break;
		case O_METHOD:
			if (lora_svd_method_parse(c.arg, &j.o.method))
				lora_cli_usage_error(&tool, "--method: '%s' is not randomized or exact", c.arg);
			set_method = 1;
			break;
		/* the randomized method's options; the first one named in errors */
		case O_OVERSAMPLE: j.o.oversample = (size_t)lora_cli_int(&tool, "--oversample", c.arg, 0, 1 << 20); break;
		case O_POWER: j.o.power_iters = (size_t)lora_cli_int(&tool, "--power-iters", c.arg, 0, 100); break;
		case O_SEED: j.o.seed = (uint64_t)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case O_DTYPE: j.o.dtype = (lora_dtype)lora_cli_dtype(&tool, "--dtype", c.arg, 0), j.keep_dtype = 0; break;
		case O_JSON: json = 1; break;
		case 'o': j.out = c.arg; break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		case 'f': force = 1; break;
		case 'q': quiet = 1; break;
		}
		if (!random && (id == O_OVERSAMPLE || id == O_POWER || id == O_SEED))
			random = id == O_OVERSAMPLE ? "--oversample" : id == O_POWER ? "--power-iters" : "--seed";
		if (id == LORA_OPT_OPERAND) {
			if (j.input)
				lora_cli_usage_error(&tool, "one adapter at a time (got '%s' and '%s')", j.input, c.arg);
			j.input = c.arg;
		}
	}
	if (lora_svd_job_check(&j, random, j.targets ? "-t" : j.regex ? "--target-regex" : j.layers ? "--layers"
	                                   : set_method ? "--method" : random, &e))
		lora_cli_usage_error(&tool, "%s", e.msg);
	if (json && (!j.out || strcmp(j.out, "-") == 0))
		lora_cli_usage_error(&tool, "--json writes the report to standard output: give -o FILE for the adapter");
	if (!j.base && !j.input)
		j.input = "-";
	if (!j.base)
		lora_cli_stdin(&tool, j.input);
	/* Refuse what lora_lorafile_save would refuse before the slow part, not after. */
	if (lora_outfile_check(j.out, LORA_OUT_BINARY | (force ? LORA_OUT_FORCE : 0), &e))
		return lora_cli_fail(&tool, &e);
	lora_cli_progress_start(&pr, &tool, quiet);
	j.o.progress = progress;
	j.o.progress_ctx = &pr;
	rc = lora_svd_job_run(&j, &a, &rep, &e);
	lora_cli_progress_end(&pr);
	if (!rc && !(rc = lora_lorafile_save(a, j.out, force, &e)) && (json || !quiet))
		rc = lora_report_svd(json ? stdout : stderr, &rep, a, j.base != NULL, &j.o, json, &e);
	lora_svd_report_free(&rep);
	lora_adapter_free(a);
	if (rc)
		return lora_cli_fail(&tool, &e);
	return lora_cli_flush(&tool);
}
