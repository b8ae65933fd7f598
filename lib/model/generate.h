/* generate: sample rows of tokens from a model with adapters applied at
 * run time (lora-generate). Each row is the prompt (or one start token)
 * followed by n sampled tokens, decoded one position at a time with the
 * key/value cache; the rows are written one after another as a token file,
 * so the output is data lora-train and lora-eval read directly.
 *
 * Text: with text or chat, the prompt is text encoded with the model's
 * tokenizer.json (text/tokenizer) and tokenizer_config.json beside it, and
 * one row's continuation is written as text while it is sampled, whole
 * characters only and flushed after each token, until a stop token (the
 * config's eos_token, generation_config.json's eos_token_id, the chat
 * template's end of turn), a stop string (left out) or n tokens. With ids
 * set, the rows are written as token data instead, as above. */
#ifndef LORA_GENERATE_H
#define LORA_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "io/data.h"
#include "model/llama.h"
#include "model/sample.h"

typedef struct {
	const char *model;
	char *const *adapters;           /* "PATH[:SCALE]" specs (lora_session) */
	size_t nadapters;
	const char *prompt;              /* token file fed before sampling, or NULL */
	lora_data_format prompt_format;
	uint32_t start;                  /* without a prompt, the token each row starts with */
	size_t n;                        /* tokens sampled per row */
	size_t rows;                     /* rows sampled side by side */
	lora_sampler sampler;
	uint64_t seed;                   /* same seed, same tokens */
	lora_data_format format;         /* of the output: u16, u32 or bytes */
	const char *out;                 /* NULL or "-": standard output (binary refused on a terminal) */
	int force;
	/* Called after each sampled position (may be NULL). */
	void (*progress)(void *ctx, size_t done, size_t total);
	void (*note)(void *ctx, const char *line); /* lora_llama_describe's line, before sampling; may be NULL */
	void *ctx;
	lora_llama_compute compute;
	/* text (NULL when the prompt is token data or the start token) */
	const char *tokenizer;           /* tokenizer.json; NULL: the model directory's */
	const char *text;                /* encoded with the post-processor's special tokens (BOS) */
	const char *chat;                /* one user message through the chat template, with the generation prompt */
	const char *chat_format;         /* a text/chat format name; NULL: recognised */
	unsigned chat_flags;             /* LORA_CHAT_NO_THINKING */
	const char *const *stops;        /* stop strings */
	size_t nstops;
	int ids;                         /* with text or chat: write token data, not text */
} lora_generate_job;

/* Run j. Refused before any work: a prompt that is empty or does not fit
 * the vocabulary, a start token outside it, prompt + n beyond
 * max_position_embeddings, a vocabulary the output format cannot hold; a
 * model directory without tokenizer.json when text is asked for. A file
 * output appears only when complete (standard output gets text as it
 * comes). */
int lora_generate_job_run(const lora_generate_job *j, lora_err *e);

#endif
