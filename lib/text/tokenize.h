/* tokenize: lora-tokenize's work, from paths to an output file.
 *
 * Encoding: text (files, "-" standard input) to token ids with a
 * tokenizer.json. An input file is one document, or with lines each line
 * is one (the line break and a '\r' before it left out). Each document is
 * encoded on its own, with the post-processor's special tokens (BOS/EOS)
 * unless no_special; an empty document gives nothing. A JSONL input
 * (text/jsonl.h) gives a document per example with its targets: prompts,
 * system and user turns none unless train_on_inputs, as axolotl
 * tokenizes them (the answer's EOS appended, its BOS dropped), chats
 * rendered with the model's template (text/chat.h) and encoded whole. The
 * ids are written as bare little-endian u16 or u32, or as a tok file with
 * the documents and the loss mask (io/data's formats). Documents are
 * encoded on several threads, in batches, and written in input order: the
 * same bytes at any thread count.
 *
 * Decoding: token data (io/data's formats) back to text, each input file
 * decoded whole, special tokens kept unless no_special.
 *
 * Inputs are checked as they are read: text that is not UTF-8 is an error
 * naming the file, the byte offset and the line. The output goes through
 * core/outfile: nothing is left behind on failure. */
#ifndef LORA_TOKENIZE_H
#define LORA_TOKENIZE_H

#include <stddef.h>

#include "core/err.h"
#include "io/data.h"

typedef struct {
	const char *model;        /* a model directory holding tokenizer.json (or a file in it) */
	const char *tokenizer;    /* the tokenizer.json itself; one of the two */
	char *const *inputs;      /* paths, "-" standard input */
	size_t ninputs;
	int decode;               /* ids to text, not text to ids */
	int lines;                /* encoding: each line a document */
	int jsonl;                /* encoding: every input is JSONL (else those named *.jsonl) */
	int train_on_inputs;      /* encoding: prompt tokens of JSONL examples are targets too */
	int literal_content;      /* encoding: chat message content is plain text (no special tokens in it) */
	const char *chat_format;  /* encoding: the chat family (text/chat.h's names), or NULL: recognised */
	int no_special;           /* encoding: no BOS/EOS; decoding: special tokens left out */
	lora_data_format format;  /* encoding: U16, U32, TOK, or AUTO (by the output's name: *.tok, *.u32,
	                             *.bin or *.u16; else tok for JSONL inputs, u16 for text);
	                             decoding: the format of the ids, as lora_data_open takes it */
	const char *out;          /* NULL or "-": standard output */
	int force;                /* replace an existing output */
	int threads;              /* encoding threads (<= 0: one) */
	/* called after each batch with the totals so far; may be NULL */
	void (*progress)(void *ctx, size_t docs, size_t bytes, size_t ids);
	void *ctx;
	/* totals, filled by the run */
	size_t ndocs, nbytes, nids;
} lora_tokenize_job;

/* Run j. Returns 0, LORA_EUSAGE (no tokenizer.json in the model
 * directory, a vocabulary too large for u16, an output that exists), or
 * the errors of reading, the tokenizer and writing (LORA_EIO, LORA_EFORMAT,
 * LORA_EINVAL, LORA_ENOMEM), each one line naming the file. */
int lora_tokenize_job_run(lora_tokenize_job *j, lora_err *e);

/* lora-train's and lora-eval's -d: token data (lora_data_open with fmt),
 * or with fmt AUTO a file named *.txt or *.jsonl tokenized with the
 * tokenizer.json file (NULL: the model directory's) exactly as
 * `lora-tokenize -m model path` (or `--tokenizer file path`) does by default (JSONL: tok, its examples as documents with their
 * mask; text: one stream of ids), on threads threads, into a temporary
 * file in TMPDIR (or /tmp) that is mapped and removed at once, and opened
 * as lora_data_open would (checked against vocab; named path in messages
 * and lora_data_id). Errors as lora_tokenize_job_run's. */
int lora_tokenize_open_data(lora_data **out, const char *model, const char *tokenizer, const char *path,
                            lora_data_format fmt, size_t vocab, int threads, lora_err *e);

#endif
