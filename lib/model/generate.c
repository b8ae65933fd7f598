#include "model/generate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/outfile.h"
#include "core/path.h"
#include "core/rng.h"
#include "core/shape.h"
#include "model/session.h"
#include "text/chat.h"
#include "text/tokenizer.h"

/* The text side of a run: the tokenizer, the ids that stop it, the text
 * given so far and what is held back while it may begin a stop string. */
typedef struct {
	const lora_generate_job *j;
	lora_tokenizer *tok;
	lora_tokenizer_ids prompt, stop;
	lora_tokenizer_stream st;
	char *held;
	size_t nheld, cap;
	FILE *fp;
	const char *outname;
	int stopped; /* by a stop string: nothing more is written */
} text;

/* The id of the token spelled s as a stop id (a token the tokenizer
 * lacks stops nothing). */
static int add_stop(text *x, const char *s, lora_err *e)
{
	int64_t id = s ? lora_tokenizer_token_id(x->tok, s) : -1;
	return id >= 0 && lora_tokenizer_ids_push(&x->stop, (uint32_t)id) ? lora_err_nomem(e) : 0;
}

/* generation_config.json's eos_token_id (one id or a list), which
 * transformers' generate() stops at, when the model directory has one. */
static int generation_stops(text *x, const char *model, lora_err *e)
{
	char *path = lora_path_join(model, "generation_config.json");
	cJSON *g = NULL, *it;
	int rc = path ? 0 : lora_err_nomem(e);
	if (rc || !lora_path_exists(path) || (rc = lora_json_read_file(&g, path, 0, e)))
		goto out;
	const cJSON *eos = cJSON_GetObjectItemCaseSensitive(g, "eos_token_id");
	size_t id;
	if (eos && !cJSON_IsNull(eos)) {
		if (!cJSON_IsArray(eos) && lora_json_size(eos, &id) == 0) {
			rc = lora_tokenizer_ids_push(&x->stop, (uint32_t)id) ? lora_err_nomem(e) : 0;
			goto out;
		}
		if (!cJSON_IsArray(eos)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: eos_token_id: not an id nor a list of ids", path);
			goto out;
		}
		cJSON_ArrayForEach(it, eos) {
			if (lora_json_size(it, &id) != 0 || id > LORA_TOKENIZER_MAX_ID) {
				rc = lora_err_set(e, LORA_EFORMAT, "%s: eos_token_id: not a list of ids", path);
				goto out;
			}
			if (lora_tokenizer_ids_push(&x->stop, (uint32_t)id)) {
				rc = lora_err_nomem(e);
				goto out;
			}
		}
	}
out:
	cJSON_Delete(g);
	free(path);
	return rc;
}

/* The tokenizer, the prompt's ids and the stop ids of j. */
static int text_open(text *x, const lora_generate_job *j, lora_err *e)
{
	char *path = NULL, *dir = NULL, *cfg = NULL, *rendered = NULL, *eos = NULL;
	lora_chat *chat = NULL;
	int rc;
	x->j = j;
	if ((rc = lora_tokenizer_find(&path, j->model, j->tokenizer, e)) || (rc = lora_tokenizer_open(&x->tok, path, e)))
		goto out;
	/* tokenizer_config.json: the one beside the tokenizer.json */
	if (!(dir = lora_path_dir(path)) || !(cfg = lora_path_join(dir, "tokenizer_config.json"))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if (j->chat) {
		lora_chat_message m = {"user", j->chat};
		if ((rc = lora_chat_open(&chat, cfg, j->chat_format, e)))
			goto out;
		if ((rc = lora_chat_render(chat, &m, 1, LORA_CHAT_GENERATION_PROMPT | j->chat_flags, &rendered, NULL, NULL,
		                           e))) {
			lora_err_prefix(e, "--chat");
			goto out;
		}
		/* the template wrote the special tokens: none added, as
		 * apply_chat_template encodes */
		if ((rc = lora_tokenizer_encode(x->tok, rendered, strlen(rendered), 0, &x->prompt, e)) ||
		    (rc = add_stop(x, lora_chat_end_of_turn(chat), e)))
			goto out;
	} else if ((rc = lora_tokenizer_encode(x->tok, j->text, strlen(j->text), 1, &x->prompt, e))) {
		lora_err_prefix(e, "--prompt");
		goto out;
	}
	if (lora_path_exists(cfg) && ((rc = lora_chat_config_token(&eos, cfg, "eos_token", e)) || (rc = add_stop(x, eos, e))))
		goto out;
	rc = generation_stops(x, j->model, e);
out:
	lora_chat_close(chat);
	free(path), free(dir), free(cfg), free(rendered), free(eos);
	return rc;
}

static int text_write(text *x, const char *s, size_t n, lora_err *e)
{
	if ((n && fwrite(s, 1, n, x->fp) != n) || fflush(x->fp))
		return lora_err_set(e, LORA_EIO, "%s: write error: %s", x->outname, strerror(errno));
	return 0;
}

/* Text s[0..n) after what came before: written but for a stop string and
 * what follows it (then 1), and, unless final, the end that may begin
 * one, held back. */
static int text_put(text *x, const char *s, size_t n, int final, lora_err *e)
{
	if (lora_shape_grow(&x->held, &x->cap, x->nheld + n + 1, 1))
		return lora_err_nomem(e);
	memcpy(x->held + x->nheld, s, n);
	x->nheld += n;
	size_t cut = x->nheld, keep = 0;
	for (size_t i = 0; i < x->j->nstops; i++) {
		const char *stop = x->j->stops[i];
		size_t k = strlen(stop);
		if (!k)
			continue;
		for (size_t p = 0; p < cut && p + k <= x->nheld; p++)
			if (!memcmp(x->held + p, stop, k)) {
				cut = p;
				break;
			}
		for (size_t m = k - 1; m > keep && !final; m--)
			if (m <= x->nheld && !memcmp(x->held + x->nheld - m, stop, m)) {
				keep = m;
				break;
			}
	}
	x->stopped = cut < x->nheld;
	size_t give = x->stopped ? cut : x->nheld - keep;
	int rc = text_write(x, x->held, give, e);
	if (rc)
		return rc;
	memmove(x->held, x->held + give, x->nheld - give);
	x->nheld -= give;
	return x->stopped;
}

/* The sampled id: 1 when it stops the text, else its text given. */
static int text_token(text *x, uint32_t id, lora_err *e)
{
	const char *piece;
	size_t n;
	int rc;
	for (size_t i = 0; i < x->stop.n; i++)
		if (x->stop.id[i] == id)
			return 1;
	/* a model's vocabulary may be padded past the tokenizer's: such an id
	 * has no text, as the tokenizers library decodes it */
	if (id >= lora_tokenizer_vocab_size(x->tok))
		return 0;
	if ((rc = lora_tokenizer_stream_push(&x->st, id, &piece, &n, e)))
		return lora_err_prefix(e, "sampled token %u", (unsigned)id);
	return text_put(x, piece, n, 0, e);
}

static int text_finish(text *x, lora_err *e)
{
	const char *piece;
	size_t n;
	if (x->stopped)
		return 0;
	int rc = lora_tokenizer_stream_finish(&x->st, &piece, &n, e);
	return rc ? rc : text_put(x, piece, n, 1, e) < 0 ? e->code : 0;
}

static void text_close(text *x)
{
	lora_tokenizer_stream_free(&x->st);
	lora_tokenizer_ids_free(&x->prompt);
	lora_tokenizer_ids_free(&x->stop);
	lora_tokenizer_free(x->tok);
	free(x->held);
}

/* The checks of the header comment; *np gets the prompt's length. */
static int check(const lora_generate_job *j, const lora_config *cfg, const lora_data *pd, const text *x, size_t *np,
                 lora_err *e)
{
	size_t V = cfg->vocab_size;
	*np = pd ? pd->ntokens : x ? x->prompt.n : 1;
	if (pd && !pd->ntokens)
		return lora_err_set(e, LORA_EINVAL, "%s: the prompt is empty", j->prompt);
	const char *opt = j->chat ? "--chat" : "--prompt";
	if (x && !x->prompt.n)
		return lora_err_set(e, LORA_EINVAL, "%s: the text gives no tokens", opt);
	for (size_t i = 0; x && i < x->prompt.n; i++)
		if (x->prompt.id[i] >= V)
			return lora_err_set(e, LORA_EINVAL, "%s: token %u of the text is not below vocab_size %zu of %s",
			                    opt, (unsigned)x->prompt.id[i], V, j->model);
	if (!pd && j->start >= V)
		return lora_err_set(e, LORA_EUSAGE, "--start %u is not below vocab_size %zu", (unsigned)j->start, V);
	if (cfg->max_pos && *np + j->n > cfg->max_pos)
		return lora_err_set(e, LORA_EINVAL, "%zu prompt and %zu new tokens exceed max_position_embeddings %zu of %s",
		                    *np, j->n, cfg->max_pos, j->model);
	if (x && !j->ids)
		return 0; /* text out */
	if (j->format == LORA_DATA_U16 && V > 65536)
		return lora_err_set(e, LORA_EUSAGE, "vocab_size %zu does not fit --output-format u16; use u32", V);
	if (j->format == LORA_DATA_BYTES && V > 256)
		return lora_err_set(e, LORA_EUSAGE, "vocab_size %zu does not fit --output-format bytes; use u16 or u32", V);
	return 0;
}

/* seq (rows x total) holds each row's prompt; fill in the rest. */
static int sample(const lora_generate_job *j, lora_llama *m, int32_t *seq, size_t np, size_t V, text *x, lora_err *e)
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
		if (x && (rc = text_token(x, (uint32_t)tok[0], e)))
			break;
		if (t + 1 < total && (rc = lora_llama_decode(m, tok, 1, t, e)))
			goto out;
		if (j->progress)
			j->progress(j->ctx, t - np + 1, j->n);
	}
out:
	free(tok), free(scratch);
	return rc < 0 ? rc : 0;
}

int lora_generate_job_run(const lora_generate_job *j, lora_err *e)
{
	lora_session s;
	lora_data *pd = NULL;
	int32_t *seq = NULL;
	lora_outfile of;
	text tx = {0}, *x = j->text || j->chat ? &tx : NULL;
	int of_open = 0, rc, textout = x && !j->ids;
	size_t np;
	if ((rc = lora_session_open(&s, j->model, j->adapters, j->nadapters, j->compute, e)))
		return rc;
	const lora_config *cfg = lora_llama_get_config(s.m);
	if ((x && (rc = text_open(x, j, e))) ||
	    (j->prompt && (rc = lora_data_open(&pd, j->prompt, j->prompt_format, cfg->vocab_size, e))) ||
	    (rc = check(j, cfg, pd, x, &np, e)))
		goto out;
	size_t total = np + j->n;
	if (!(seq = malloc(j->rows * total * sizeof *seq))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t r = 0; r < j->rows; r++)
		for (size_t i = 0; i < np; i++)
			seq[r * total + i] = pd ? (int32_t)lora_data_token(pd, i) : x ? (int32_t)x->prompt.id[i] : (int32_t)j->start;
	if ((rc = lora_outfile_open(&of, j->out, (j->force ? LORA_OUT_FORCE : 0) |
	                                         (j->format == LORA_DATA_BYTES || textout ? 0 : LORA_OUT_BINARY), e)))
		goto out;
	of_open = 1;
	if ((rc = lora_llama_plan_decode(s.m, j->rows, total, e)))
		goto out;
	if (j->note) {
		char line[256];
		lora_llama_describe(s.m, line, sizeof line);
		j->note(j->ctx, line);
	}
	const char *outname = j->out && strcmp(j->out, "-") ? j->out : "standard output";
	if (textout) {
		tx.fp = of.fp, tx.outname = outname;
		if ((rc = lora_tokenizer_stream_init(&tx.st, tx.tok, tx.prompt.id, tx.prompt.n, e)))
			goto out;
	}
	if ((rc = sample(j, s.m, seq, np, cfg->vocab_size, textout ? x : NULL, e)))
		goto out;
	if (textout) {
		if ((rc = text_finish(x, e)))
			goto out;
	} else if (lora_data_write(of.fp, seq, j->rows * total, j->format)) {
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", outname, strerror(errno));
		goto out;
	}
	of_open = 0;
	rc = lora_outfile_commit(&of, e);
out:
	if (of_open)
		lora_outfile_abort(&of);
	free(seq);
	if (x)
		text_close(x);
	lora_data_close(pd);
	lora_session_close(&s);
	return rc;
}
