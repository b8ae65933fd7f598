/* eval: mean loss and perplexity of a model over token data (lora-eval,
 * and lora-train's evaluations of held-out data), and lora-eval's report.
 *
 * Batches are cut by lora_data_batches (shuffled windows or llm.c's
 * consecutive spans; a tok file's rows, packed or a document each); the
 * loss is the mean over every target with loss of the batches evaluated
 * (a masked target or padding counts neither in the loss nor the tokens). */
#ifndef LORA_EVAL_H
#define LORA_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "io/data.h"
#include "model/llama.h"

typedef struct {
	size_t B, T;          /* rows per batch, tokens per row */
	size_t max_batches;   /* evaluate the first N batches only; 0: all */
	int shuffle;          /* windows in an order drawn from seed, else llm.c's */
	int packed;           /* tok files: rows of whole documents, not one each */
	uint64_t seed;
	/* Called after each batch (may be NULL): batches done of total, the
	 * running mean loss, tokens predicted so far. */
	void (*progress)(void *ctx, size_t done, size_t total, double loss, size_t tokens);
	void *ctx;
} lora_eval_opts;

typedef struct {
	size_t batches;       /* evaluated */
	size_t tokens;        /* predicted with loss */
	double loss;          /* mean over them; NaN when there were none */
} lora_eval_result;

/* Evaluate m (planned for B x T, lora_llama_plan) over d. */
int lora_eval_run(lora_llama *m, const lora_data *d, const lora_eval_opts *o, lora_eval_result *r, lora_err *e);

/* lora-eval from paths: the model with adapters ("PATH[:SCALE]" specs,
 * lora_session), the data, the run, and the report (text, or one JSON
 * document with json) written to out. T 0 means 1024, or
 * max_position_embeddings when that is smaller. */
typedef struct {
	const char *model, *data;
	const char *tokenizer; /* tokenizer.json for text data, or NULL: the model directory's */
	char *const *adapters;
	size_t nadapters;
	lora_data_format format;
	lora_eval_opts o;
	int json;
	lora_llama_compute compute;
	void (*note)(void *ctx, const char *line); /* lora_llama_describe's line, before the first batch; may be NULL */
} lora_eval_job;

int lora_eval_job_run(const lora_eval_job *j, FILE *out, lora_err *e);

#endif
