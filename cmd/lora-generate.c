/* lora-generate: sample tokens from a model with adapters applied at run time. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "math/blas.h"
#include "cli.h"
#include "io/data.h"
#include "io/load.h"
#include "model/llama.h"
#include "core/outfile.h"
#include "model/sample.h"

enum { O_PROMPT = 256, O_PROMPT_FORMAT, O_START, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_FORMAT, O_ROWS };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "model directory (config.json + safetensors)", "@file"},
	{O_PROMPT, 0, "prompt-file", "FILE", "prompt tokens, fed before sampling (default: one --start token)", "@file"},
	{O_PROMPT_FORMAT, 0, "prompt-format", "FMT", "format of the prompt file: auto, u16, u32, llmc, bytes (default: --format)", "auto u16 u32 llmc bytes"},
	{O_START, 0, "start", "TOKEN", "the token a row starts with when there is no prompt (default 0)", NULL},
	{'n', 'n', "tokens", "N", "tokens to sample per row (default 128)", NULL},
	{O_ROWS, 0, "rows", "R", "independent rows sampled side by side, written one after another (default 1)", NULL},
	{O_TEMP, 0, "temperature", "T", "softmax temperature; 0 is greedy (default 1)", NULL},
	{O_TOPK, 0, "top-k", "K", "sample among the K most likely tokens only (default 0: all)", NULL},
	{O_TOPP, 0, "top-p", "P", "sample among the most likely tokens whose mass reaches P (default 1)", NULL},
	{O_SEED, 0, "seed", "S", "random seed: same seed, same tokens (default 0)", NULL},
	{O_FORMAT, 0, "format", "FMT", "output: u16 (default), u32 or bytes (text for byte-level models)", "u16 u32 bytes"},
	{'o', 'o', "output", "FILE", "write the tokens to FILE (default: standard output)", "@file"},
	{'j', 'j', "threads", "N", "threads (default: every core)", NULL},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-generate",
	"-m MODEL [ADAPTER[:SCALE]...] [options] [-o OUT]",
	"Sample tokens from a Llama-family model, adapters applied at run time.",
	"Each row is its prompt (or the --start token) followed by N sampled tokens,\n"
	"decoded one position at a time with a key/value cache. Rows are written one\n"
	"after another in the output format, so the output is token data that lora-train\n"
	"and lora-eval read directly.\n\n"
	"Examples:\n"
	"  lora-generate -m base/ run.lora -n 64 --prompt-file prompt.u16 > out.u16\n"
	"  lora-generate -m byte-model/ --format bytes --temperature 0.8 --top-p 0.95 -n 200\n"
	"  lora-generate -m teacher/ --rows 64 -n 255 --seed 1 -o train.bin\n",
	opts,
	"@file",
};

static int write_tokens(FILE *f, const int32_t *t, size_t n, lora_data_format fmt)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t v = (uint32_t)t[i];
		unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
		                      (unsigned char)(v >> 24)};
		size_t k = fmt == LORA_DATA_BYTES ? 1 : fmt == LORA_DATA_U32 ? 4 : 2;
		if (fwrite(b, 1, k, f) != k)
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *prompt_path = NULL, *out = NULL;
	lora_data_format fmt = LORA_DATA_U16, pfmt = LORA_DATA_AUTO;
	int pfmt_set = 0, threads = 0, force = 0, id, rc = LORA_EXIT_FAIL;
	size_t n = 128, rows = 1, na = 0;
	long long start = 0;
	unsigned long long seed = 0;
	lora_sampler smp = {1.0, 0, 1.0};
	lora_err e = {0};
	lora_cli c;
	lora_ckpt *ck = NULL;
	lora_llama *m = NULL;
	lora_adapter **ads = NULL;
	lora_data *pd = NULL;
	int32_t *seq = NULL, *tok = NULL;
	void *scratch = NULL;
	lora_outfile of;
	int of_open = 0;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': model = c.arg; break;
		case O_PROMPT: prompt_path = c.arg; break;
		case O_PROMPT_FORMAT:
			if (lora_data_format_parse(c.arg, &pfmt))
				lora_cli_usage_error(&tool, "--prompt-format: '%s' is not auto, u16, u32, llmc or bytes", c.arg);
			pfmt_set = 1;
			break;
		case O_START: start = lora_cli_int(&tool, "--start", c.arg, 0, UINT32_MAX); break;
		case 'n': n = (size_t)lora_cli_int(&tool, "--tokens", c.arg, 0, 1 << 24); break;
		case O_ROWS: rows = (size_t)lora_cli_int(&tool, "--rows", c.arg, 1, 1 << 16); break;
		case O_TEMP:
			smp.temperature = lora_cli_double(&tool, "--temperature", c.arg);
			if (smp.temperature < 0)
				lora_cli_usage_error(&tool, "--temperature: '%s' is negative", c.arg);
			break;
		case O_TOPK: smp.top_k = (size_t)lora_cli_int(&tool, "--top-k", c.arg, 0, 1LL << 32); break;
		case O_TOPP:
			smp.top_p = lora_cli_double(&tool, "--top-p", c.arg);
			if (!(smp.top_p > 0 && smp.top_p <= 1))
				lora_cli_usage_error(&tool, "--top-p: '%s' is not in (0, 1]", c.arg);
			break;
		case O_SEED: seed = (unsigned long long)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case O_FORMAT:
			if (strcmp(c.arg, "u16") == 0)
				fmt = LORA_DATA_U16;
			else if (strcmp(c.arg, "u32") == 0)
				fmt = LORA_DATA_U32;
			else if (strcmp(c.arg, "bytes") == 0)
				fmt = LORA_DATA_BYTES;
			else
				lora_cli_usage_error(&tool, "--format: '%s' is not u16, u32 or bytes", c.arg);
			break;
		case 'o': out = c.arg; break;
		case 'j': threads = (int)lora_cli_int(&tool, "-j", c.arg, 1, 4096); break;
		case 'f': force = 1; break;
		case LORA_OPT_OPERAND:
			argv[na++] = (char *)c.arg; /* kept in argv: nothing allocated before usage errors */
			break;
		}
	}
	if (!model)
		lora_cli_usage_error(&tool, "need -m MODEL");
	if (prompt_path && !pfmt_set)
		pfmt = fmt;
	lora_blas_set_threads(threads);
	if (lora_ckpt_open(&ck, model, &e) || lora_llama_open(&m, ck, &e))
		goto fail;
	const lora_config *cfg = lora_llama_get_config(m);
	size_t V = cfg->vocab_size;
	if (!(ads = calloc(na ? na : 1, sizeof *ads)))
		goto nomem;
	for (size_t i = 0; i < na; i++) {
		char *path;
		double k;
		if (lora_load_spec(argv[i], &path, &k, &e))
			goto fail;
		int r = lora_load_adapter(&ads[i], path, &e);
		if (!r)
			r = lora_llama_attach(m, ads[i], k, 0, strcmp(path, "-") ? path : "standard input", &e);
		free(path);
		if (r)
			goto fail;
	}
	/* The prompt, the same for every row. */
	size_t np = 1;
	if (prompt_path) {
		if (lora_data_open(&pd, prompt_path, pfmt, V, &e))
			goto fail;
		np = pd->ntokens;
		if (np == 0) {
			lora_err_set(&e, LORA_EINVAL, "%s: the prompt is empty", prompt_path);
			goto fail;
		}
	} else if ((size_t)start >= V) {
		lora_err_set(&e, LORA_EUSAGE, "--start %lld is not below vocab_size %zu", start, V);
		goto fail;
	}
	size_t total = np + n;
	if (cfg->max_pos && total > cfg->max_pos) {
		lora_err_set(&e, LORA_EINVAL, "%zu prompt and %zu new tokens exceed max_position_embeddings %zu of %s", np,
		             n, cfg->max_pos, model);
		goto fail;
	}
	if (fmt == LORA_DATA_U16 && V > 65536) {
		lora_err_set(&e, LORA_EUSAGE, "vocab_size %zu does not fit --format u16; use u32", V);
		goto fail;
	}
	if (fmt == LORA_DATA_BYTES && V > 256) {
		lora_err_set(&e, LORA_EUSAGE, "vocab_size %zu does not fit --format bytes; use u16 or u32", V);
		goto fail;
	}
	seq = malloc(rows * total * sizeof *seq);
	tok = malloc(rows * (np > 1 ? np : 1) * sizeof *tok);
	scratch = malloc(V * (sizeof(float) + sizeof(uint32_t)));
	if (!seq || !tok || !scratch)
		goto nomem;
	for (size_t r = 0; r < rows; r++)
		for (size_t i = 0; i < np; i++)
			seq[r * total + i] = pd ? (int32_t)lora_data_token(pd, i) : (int32_t)start;
	if (lora_outfile_open(&of, out, (force ? LORA_OUT_FORCE : 0) | (fmt == LORA_DATA_BYTES ? 0 : LORA_OUT_BINARY),
	                      &e))
		goto fail;
	of_open = 1;
	if (lora_llama_plan_decode(m, rows, total, &e))
		goto fail;
	lora_rng rng;
	lora_rng_seed(&rng, seed);
	/* The prompt in one pass, then one position at a time. */
	for (size_t r = 0; r < rows; r++)
		memcpy(tok + r * np, seq + r * total, np * sizeof *tok);
	if (lora_llama_decode(m, tok, np, 0, &e))
		goto fail;
	for (size_t t = np; t < total; t++) {
		const float *logits = lora_llama_logits(m);
		for (size_t r = 0; r < rows; r++) {
			seq[r * total + t] = (int32_t)lora_sample_next(logits + r * V, V, &smp, &rng, scratch);
			tok[r] = seq[r * total + t];
		}
		if (t + 1 < total && lora_llama_decode(m, tok, 1, t, &e))
			goto fail;
	}
	if (write_tokens(of.fp, seq, rows * total, fmt)) {
		lora_err_set(&e, LORA_EIO, "%s: write error: %s", out && strcmp(out, "-") ? out : "standard output",
		             strerror(errno));
		goto fail;
	}
	of_open = 0;
	if (lora_outfile_commit(&of, &e))
		goto fail;
	rc = LORA_EXIT_OK;
	goto done;
nomem:
	lora_err_set(&e, LORA_ENOMEM, "out of memory");
fail:
	if (of_open)
		lora_outfile_abort(&of);
	rc = lora_cli_fail(&tool, &e);
done:
	free(seq), free(tok), free(scratch);
	lora_data_close(pd);
	lora_llama_free(m);
	for (size_t i = 0; ads && i < na; i++)
		lora_adapter_free(ads[i]);
	free(ads);
	lora_ckpt_close(ck);
	return rc;
}
