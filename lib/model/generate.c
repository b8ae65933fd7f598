#include "model/generate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/outfile.h"
#include "core/rng.h"
#include "model/session.h"

/* The checks of the header comment; *np gets the prompt's length. */
static int check(const lora_generate_job *j, const lora_config *cfg, const lora_data *pd, size_t *np,
                 lora_err *e)
{
	size_t V = cfg->vocab_size;
	*np = pd ? pd->ntokens : 1;
	if (pd && !pd->ntokens)
		return lora_err_set(e, LORA_EINVAL, "%s: the prompt is empty", j->prompt);
	if (!pd && j->start >= V)
		return lora_err_set(e, LORA_EUSAGE, "--start %u is not below vocab_size %zu", (unsigned)j->start, V);
	if (cfg->max_pos && *np + j->n > cfg->max_pos)
		return lora_err_set(e, LORA_EINVAL, "%zu prompt and %zu new tokens exceed max_position_embeddings %zu of %s",
		                    *np, j->n, cfg->max_pos, j->model);
	if (j->format == LORA_DATA_U16 && V > 65536)
		return lora_err_set(e, LORA_EUSAGE, "vocab_size %zu does not fit --output-format u16; use u32", V);
	if (j->format == LORA_DATA_BYTES && V > 256)
		return lora_err_set(e, LORA_EUSAGE, "vocab_size %zu does not fit --output-format bytes; use u16 or u32", V);
	return 0;
}

/* seq (rows x total) holds each row's prompt; fill in the rest. */
static int sample(const lora_generate_job *j, lora_llama *m, int32_t *seq, size_t np, size_t V, lora_err *e)
{
	size_t total = np + j->n, rows = j->rows;
	int32_t *tok = malloc(rows * np * sizeof *tok);
	void *scratch = malloc(V * (sizeof(float) + sizeof(uint32_t)));
	lora_rng rng;
	int rc = 0;
	if (!tok || !scratch) {
		rc = lora_err_nomem(e);
		goto out;
	}
	lora_rng_seed(&rng, j->seed);
	/* The prompt in one pass, then one position at a time. */
	for (size_t r = 0; r < rows; r++)
		memcpy(tok + r * np, seq + r * total, np * sizeof *tok);
	if ((rc = lora_llama_decode(m, tok, np, 0, e)))
		goto out;
	for (size_t t = np; t < total; t++) {
		const float *logits = lora_llama_logits(m);
		for (size_t r = 0; r < rows; r++)
			tok[r] = seq[r * total + t] = (int32_t)lora_sample_next(logits + r * V, V, &j->sampler, &rng, scratch);
		if (t + 1 < total && (rc = lora_llama_decode(m, tok, 1, t, e)))
			goto out;
		if (j->progress)
			j->progress(j->ctx, t - np + 1, j->n);
	}
out:
	free(tok), free(scratch);
	return rc;
}

int lora_generate_job_run(const lora_generate_job *j, lora_err *e)
{
	lora_session s;
	lora_data *pd = NULL;
	int32_t *seq = NULL;
	lora_outfile of;
	int of_open = 0, rc;
	size_t np;
	if ((rc = lora_session_open(&s, j->model, j->adapters, j->nadapters, j->compute, e)))
		return rc;
	const lora_config *cfg = lora_llama_get_config(s.m);
	if ((j->prompt && (rc = lora_data_open(&pd, j->prompt, j->prompt_format, cfg->vocab_size, e))) ||
	    (rc = check(j, cfg, pd, &np, e)))
		goto out;
	size_t total = np + j->n;
	if (!(seq = malloc(j->rows * total * sizeof *seq))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t r = 0; r < j->rows; r++)
		for (size_t i = 0; i < np; i++)
			seq[r * total + i] = pd ? (int32_t)lora_data_token(pd, i) : (int32_t)j->start;
	if ((rc = lora_outfile_open(&of, j->out, (j->force ? LORA_OUT_FORCE : 0) |
	                                         (j->format == LORA_DATA_BYTES ? 0 : LORA_OUT_BINARY), e)))
		goto out;
	of_open = 1;
	if ((rc = lora_llama_plan_decode(s.m, j->rows, total, e)))
		goto out;
	if (j->note) {
		char line[256];
		lora_llama_describe(s.m, line, sizeof line);
		j->note(j->ctx, line);
	}
	if ((rc = sample(j, s.m, seq, np, cfg->vocab_size, e)))
		goto out;
	if (lora_data_write(of.fp, seq, j->rows * total, j->format)) {
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", j->out && strcmp(j->out, "-") ? j->out : "standard output",
		                  strerror(errno));
		goto out;
	}
	of_open = 0;
	rc = lora_outfile_commit(&of, e);
out:
	if (of_open)
		lora_outfile_abort(&of);
	free(seq);
	lora_data_close(pd);
	lora_session_close(&s);
	return rc;
}
