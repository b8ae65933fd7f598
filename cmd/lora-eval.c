/* lora-eval: loss and perplexity of a model, with adapters applied at run
 * time, over token data. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "math/blas.h"
#include "cli.h"
#include "io/data.h"
#include "io/load.h"
#include "model/llama.h"

enum { O_FORMAT = 256, O_NOSHUFFLE, O_SEED, O_JSON };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "base model: directory with config.json, its safetensors file or index", "@file"},
	{'d', 'd', "data", "FILE", "token file: .bin/.u16 (uint16), .u32 (uint32) or llm.c's format", "@file"},
	{O_FORMAT, 0, "data-format", "FMT", "auto (default), u16, u32, llmc or bytes (every byte a token)",
	 "auto u16 u32 llmc bytes"},
	{'b', 'b', "batch", "B", "rows per batch (default 4)", NULL},
	{'T', 'T', "seq", "T", "tokens per row (default 1024, or max_position_embeddings if smaller)", NULL},
	{'n', 'n', "batches", "N", "evaluate only the first N batches (default: all)", NULL},
	{O_NOSHUFFLE, 0, "no-shuffle", NULL, "consecutive batches from the start, as llm.c cuts them", NULL},
	{O_SEED, 0, "seed", "N", "seed of the shuffled row order (default 0)", NULL},
	{'j', 'j', "threads", "N", "threads for everything (default: all cores)", NULL},
	{O_JSON, 0, "json", NULL, "print one JSON document (keys in lora-eval(1))", NULL},
	{'q', 'q', "quiet", NULL, "no progress on standard error", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-eval",
	"-m MODEL [ADAPTER[:SCALE]...] -d DATA [options]",
	"Mean loss and perplexity of a model, with adapters applied at run time, over token data.",
	"ADAPTER is a .lora file, '-' for standard input, or a PEFT adapter directory;\n"
	"SCALE (default 1) multiplies its update, as lora-merge would. Nothing is\n"
	"merged: each adapted layer computes W x + SCALE * (alpha/r) * B A x.\n"
	"Rows are windows of T+1 tokens starting every T tokens, in an order shuffled\n"
	"with --seed; --no-shuffle takes consecutive batches from the start of the\n"
	"file, llm.c's rule. See lora-eval(1).\n\n"
	"Examples:\n"
	"  lora-eval -m TinyLlama/ -d val.bin\n"
	"  lora-eval -m base/ tuned.lora -d val.bin -b 8 -T 512 --batches 20\n"
	"  lora-eval -m base/ a.lora:0.5 b.lora:0.5 -d val.bin --json | jq .perplexity\n",
	opts,
	"@file",
};

typedef struct {
	char *path;
	double scale;
	lora_adapter *a;
} adapter_arg;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *data = NULL;
	lora_data_format fmt = LORA_DATA_AUTO;
	size_t B = 4, T = 0, limit = 0;
	int shuffle = 1, json = 0, quiet = 0, jobs = 0, id, rc = LORA_EXIT_FAIL;
	unsigned long long seed = 0;
	adapter_arg *ads = NULL;
	size_t nads = 0;
	lora_err e = {0};
	lora_cli c;
	lora_ckpt *ck = NULL;
	lora_llama *m = NULL;
	lora_data *d = NULL;
	lora_data_batches bt = {0};
	int32_t *in = NULL, *tg = NULL;
	char *model_name = NULL;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': model = c.arg; break;
		case 'd': data = c.arg; break;
		case O_FORMAT:
			if (lora_data_format_parse(c.arg, &fmt))
				lora_cli_usage_error(&tool, "--data-format: '%s' is not auto, u16, u32, llmc or bytes", c.arg);
			break;
		case 'b': B = (size_t)lora_cli_int(&tool, "--batch", c.arg, 1, 1 << 20); break;
		case 'T': T = (size_t)lora_cli_int(&tool, "--seq", c.arg, 1, 1 << 24); break;
		case 'n': limit = (size_t)lora_cli_int(&tool, "--batches", c.arg, 1, INT64_MAX); break;
		case O_NOSHUFFLE: shuffle = 0; break;
		case O_SEED: seed = (unsigned long long)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case 'j': jobs = (int)lora_cli_int(&tool, "--threads", c.arg, 1, 4096); break;
		case O_JSON: json = 1; break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND: {
			adapter_arg *na = realloc(ads, (nads + 1) * sizeof *na);
			if (!na)
				goto nomem;
			ads = na;
			memset(&ads[nads], 0, sizeof *ads);
			if (lora_load_spec(c.arg, &ads[nads].path, &ads[nads].scale, &e))
				goto fail;
			nads++;
			break;
		}
		}
	}
	if (!model)
		lora_cli_usage_error(&tool, "need -m MODEL");
	if (!data)
		lora_cli_usage_error(&tool, "need -d DATA");
	int threads = lora_blas_set_threads(jobs);

	if (lora_ckpt_open(&ck, model, &e) || lora_llama_open(&m, ck, &e))
		goto fail;
	const lora_config *cfg = lora_llama_get_config(m);
	if (ck->name && !(model_name = strdup(ck->name)))
		goto nomem;
	lora_ckpt_close(ck);
	ck = NULL;
	for (size_t i = 0; i < nads; i++) {
		if (lora_load_adapter(&ads[i].a, ads[i].path, &e) ||
		    lora_llama_attach(m, ads[i].a, ads[i].scale, 0, strcmp(ads[i].path, "-") ? ads[i].path : "standard input",
		                      &e))
			goto fail;
	}
	if (!T)
		T = cfg->max_pos && cfg->max_pos < 1024 ? cfg->max_pos : 1024;
	if (lora_data_open(&d, data, fmt, cfg->vocab_size, &e) || lora_data_batches_init(&bt, d, B, T, shuffle, seed, &e) ||
	    lora_llama_plan(m, B, T, 0, &e))
		goto fail;
	size_t nb = limit && limit < bt.nbatches ? limit : bt.nbatches;
	in = malloc(B * T * sizeof *in);
	tg = malloc(B * T * sizeof *tg);
	if (!in || !tg)
		goto nomem;
	int progress = lora_cli_progress_ok(quiet);
	double sum = 0, t0 = now();
	size_t count = 0;
	for (size_t k = 0; k < nb; k++) {
		double loss;
		size_t n;
		lora_data_batches_get(&bt, k, in, tg);
		if (lora_llama_forward(m, in, tg, &loss, &n, &e))
			goto fail;
		sum += loss * (double)n;
		count += n;
		if (progress)
			fprintf(stderr, "\rlora-eval: batch %zu/%zu, loss %.4f, %.0f tokens/s ", k + 1, nb, sum / (double)count,
			        (double)((k + 1) * B * T) / (now() - t0));
	}
	if (progress)
		fprintf(stderr, "\n");
	double loss = count ? sum / (double)count : 0, ppl = exp(loss);
	if (json) {
		cJSON *j = cJSON_CreateObject(), *arr;
		cJSON_AddStringToObject(j, "model", model);
		if (model_name)
			cJSON_AddStringToObject(j, "model_name", model_name);
		arr = cJSON_AddArrayToObject(j, "adapters");
		for (size_t i = 0; i < nads; i++) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "path", ads[i].path);
			cJSON_AddNumberToObject(o, "scale", ads[i].scale);
			cJSON_AddNumberToObject(o, "layers", (double)ads[i].a->nlayers);
			cJSON_AddItemToArray(arr, o);
		}
		cJSON_AddStringToObject(j, "data", data);
		cJSON_AddStringToObject(j, "data_format", lora_data_format_name(d->format));
		cJSON_AddNumberToObject(j, "data_tokens", (double)d->ntokens);
		cJSON_AddNumberToObject(j, "batch", (double)B);
		cJSON_AddNumberToObject(j, "seq", (double)T);
		cJSON_AddNumberToObject(j, "batches", (double)nb);
		cJSON_AddBoolToObject(j, "shuffle", shuffle);
		if (shuffle)
			cJSON_AddNumberToObject(j, "seed", (double)seed);
		else
			cJSON_AddNullToObject(j, "seed");
		cJSON_AddNumberToObject(j, "tokens", (double)count);
		cJSON_AddNumberToObject(j, "loss", loss);
		cJSON_AddNumberToObject(j, "perplexity", ppl);
		cJSON_AddNumberToObject(j, "threads", threads);
		char *txt = cJSON_Print(j);
		if (txt)
			puts(txt);
		cJSON_free(txt);
		cJSON_Delete(j);
	} else {
		printf("%-12s %s (%s, %zu layers, vocab %zu)\n", "model", model, model_name ? model_name : "-",
		       cfg->n_layers, cfg->vocab_size);
		printf("%-12s ", "adapters");
		for (size_t i = 0; i < nads; i++)
			printf("%s%s (scale %g)", i ? ", " : "", ads[i].path, ads[i].scale);
		printf("%s\n", nads ? "" : "none");
		printf("%-12s %s (%s, %zu tokens)\n", "data", data, lora_data_format_name(d->format), d->ntokens);
		printf("%-12s %zu of %zu x %zu, ", "batches", nb, B, T);
		if (shuffle)
			printf("shuffled (seed %llu)\n", seed);
		else
			printf("in order\n");
		printf("%-12s %zu\n", "tokens", count);
		printf("%-12s %.6f\n", "loss", loss);
		printf("%-12s %.4f\n", "perplexity", ppl);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		lora_cli_error(&tool, "standard output: write error: %s", strerror(errno));
		rc = LORA_EXIT_FAIL;
		goto out;
	}
	rc = LORA_EXIT_OK;
	goto out;
nomem:
	lora_err_set(&e, LORA_ENOMEM, "out of memory");
fail:
	rc = lora_cli_fail(&tool, &e);
out:
	free(model_name);
	free(in);
	free(tg);
	lora_data_batches_free(&bt);
	lora_data_close(d);
	lora_llama_free(m);
	lora_ckpt_close(ck);
	for (size_t i = 0; i < nads; i++) {
		free(ads[i].path);
		lora_adapter_free(ads[i].a);
	}
	free(ads);
	return rc;
}
