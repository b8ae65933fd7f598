/* argmax-full: the reference for greedy decoding, for tests. One full
 * forward (no key/value cache) over every row of a token file, printing for
 * each position the token of the largest logit there and the gap to the
 * second largest.
 *
 *   argmax-full MODEL TOKENS.u16 ROWS [ADAPTER[:SCALE]]...
 *
 * TOKENS holds ROWS rows of equal length, one after another, as
 * lora-generate writes them. Output: one line "ARGMAX GAP" per position,
 * rows one after another. ARGMAX_COMPUTE=bf16 in the environment computes
 * in bf16 (default f32). ARGMAX_LOGPROBS=1 prints instead, per position, the
 * log-probabilities of every token of the vocabulary (the log-softmax of the
 * logits, in double), for comparison with another implementation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/data.h"
#include "io/load.h"
#include "math/blas.h"
#include "model/llama_internal.h"

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: argmax-full MODEL TOKENS ROWS [ADAPTER[:SCALE]]...\n");
		return 2;
	}
	lora_err e = {0};
	lora_ckpt *ck = NULL;
	lora_llama *m = NULL;
	lora_data *d = NULL;
	lora_adapter **ads = calloc((size_t)argc, sizeof *ads);
	int32_t *tok = NULL;
	float *logits = NULL;
	size_t rows = strtoul(argv[3], NULL, 10), V = 0, T = 0;
	int rc = 1;
	lora_blas_set_threads(0);
	const char *cm = getenv("ARGMAX_COMPUTE");
	if (lora_ckpt_open(&ck, argv[1], &e) || lora_llama_open(&m, ck, &e) ||
	    lora_llama_set_compute(m, cm && !strcmp(cm, "bf16") ? LORA_LLAMA_BF16 : LORA_LLAMA_F32, &e))
		goto out;
	V = lora_llama_get_config(m)->vocab_size;
	for (int i = 4; i < argc; i++) {
		char *path;
		double k;
		if (lora_load_spec(argv[i], &path, &k, &e))
			goto out;
		int r = lora_load_adapter(&ads[i], path, &e) || lora_llama_attach(m, ads[i], k, 0, path, &e);
		free(path);
		if (r)
			goto out;
	}
	if (lora_data_open(&d, argv[2], LORA_DATA_U16, V, &e))
		goto out;
	if (rows == 0 || d->ntokens % rows) {
		fprintf(stderr, "argmax-full: %zu tokens are not %zu rows\n", d->ntokens, rows);
		goto out;
	}
	T = d->ntokens / rows;
	tok = malloc(d->ntokens * sizeof *tok);
	logits = malloc(d->ntokens * V * sizeof *logits);
	if (!tok || !logits) {
		fprintf(stderr, "argmax-full: out of memory\n");
		goto out;
	}
	for (size_t i = 0; i < d->ntokens; i++)
		tok[i] = (int32_t)lora_data_token(d, i);
	if (lora_llama_plan(m, rows, T, 0, &e) || lora_llama_forward_logits(m, tok, logits, &e))
		goto out;
	for (size_t i = 0; i < d->ntokens && getenv("ARGMAX_LOGPROBS"); i++) {
		const float *l = logits + i * V;
		double mx = l[0], sum = 0;
		for (size_t v = 0; v < V; v++)
			mx = l[v] > mx ? l[v] : mx;
		for (size_t v = 0; v < V; v++)
			sum += exp((double)l[v] - mx);
		for (size_t v = 0; v < V; v++)
			printf("%s%.9g", v ? " " : "", (double)l[v] - mx - log(sum));
		printf("\n");
	}
	for (size_t i = 0; i < d->ntokens && !getenv("ARGMAX_LOGPROBS"); i++) {
		const float *l = logits + i * V;
		size_t best = 0, second = V > 1 ? 1 : 0;
		for (size_t v = 0; v < V; v++)
			if (l[v] > l[best])
				best = v;
		for (size_t v = 0; v < V; v++)
			if (v != best && (second == best || l[v] > l[second]))
				second = v;
		printf("%zu %.6g\n", best, (double)(l[best] - l[second]));
	}
	rc = 0;
out:
	if (rc && e.msg[0])
		fprintf(stderr, "argmax-full: %s\n", e.msg);
	free(tok);
	free(logits);
	lora_data_close(d);
	lora_llama_free(m);
	for (int i = 0; i < argc; i++)
		lora_adapter_free(ads[i]);
	free(ads);
	lora_ckpt_close(ck);
	return rc;
}
