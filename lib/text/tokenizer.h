/* tokenizer: Hugging Face tokenizers in C. Reads a tokenizer.json and
 * encodes and decodes as the Rust `tokenizers` library does, for the BPE
 * tokenizers of the models people fine-tune:
 *   byte-level BPE (GPT-2, Llama 3, Qwen2/2.5/3, SmolLM): the ByteLevel
 *     pre-tokenizer and decoder, Split with the model's regular expression
 *     (core/pattern's Oniguruma dialect), Digits, ignore_merges, merges as
 *     "a b" strings or as pairs;
 *   SentencePiece-style BPE (Llama 2, TinyLlama, Mistral): Prepend and
 *     Replace normalizers or the Metaspace pre-tokenizer, byte_fallback,
 *     fuse_unk, the ByteFallback, Fuse, Strip, Replace and Metaspace
 *     decoders;
 *   the normalizers NFC, NFD, NFKC, NFKD and Sequence; added tokens
 *     (special or not, lstrip, rstrip, single_word, normalized) matched in
 *     the text before anything else; the TemplateProcessing post-processor
 *     (BOS/EOS), ByteLevel and Sequence post-processors.
 * Anything else in the file (another model type, pre-tokenizer, normalizer,
 * decoder or post-processor, BPE dropout, a subword prefix or suffix,
 * truncation, padding) is an error naming it: the toolkit never encodes
 * with an approximation of what the model was trained on.
 *
 * Encoding runs the library's pipeline: split off added tokens that are not
 * normalized, normalize the rest, split off the normalized added tokens,
 * pre-tokenize each piece, BPE each word (merges by rank through a priority
 * queue, words cached), then the post-processor's tokens around the whole. */
#ifndef LORA_TOKENIZER_H
#define LORA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Largest id a tokenizer.json may use (vocabularies today: up to ~262k). */
#define LORA_TOKENIZER_MAX_ID ((1u << 24) - 1)

typedef struct lora_tokenizer lora_tokenizer;

/* A growing array of token ids; start zeroed, free with
 * lora_tokenizer_ids_free. */
typedef struct {
	uint32_t *id;
	size_t n, cap;
} lora_tokenizer_ids;

/* Read and check the tokenizer.json at path. Messages read
 * "<path>: <what is wrong>". Returns 0, LORA_EIO, LORA_EFORMAT (not a
 * tokenizer.json, or one with parts this module does not support),
 * LORA_ENOMEM. Caller frees *out with lora_tokenizer_free. */
int lora_tokenizer_open(lora_tokenizer **out, const char *path, lora_err *e);
/* The same from the n bytes of json, named path in messages. */
int lora_tokenizer_parse(lora_tokenizer **out, const char *path, const char *json, size_t n, lora_err *e);
void lora_tokenizer_free(lora_tokenizer *t);

/* Append the ids of text[0..n) (UTF-8) to ids; with add_special, the
 * post-processor's tokens too (the library's add_special_tokens). Returns
 * 0, LORA_EINVAL (text not UTF-8, with the byte offset; a regular
 * expression past its bounds) or LORA_ENOMEM. A tokenizer keeps a cache of
 * words: use one from one thread at a time. */
int lora_tokenizer_encode(lora_tokenizer *t, const char *text, size_t n, int add_special, lora_tokenizer_ids *ids,
                          lora_err *e);
/* Literal ranges for the encodings that follow: n (begin, end) byte
 * ranges, ranges[2k] and ranges[2k + 1], in order, of the text the next
 * lora_tokenizer_encode calls take (held, not copied). A special added
 * token is not matched where it meets one: its text is encoded as text,
 * as the library's encode_special_tokens (transformers'
 * split_special_tokens) does everywhere; other added tokens are still
 * matched. (A special token the normalizer sees, normalized: true, which
 * no model of text/chat.h has, is left unmatched in the whole stretch
 * between non-normalized added tokens that meets a range.) n 0: none,
 * the default. */
void lora_tokenizer_literal(lora_tokenizer *t, const size_t *ranges, size_t n);
/* The text of ids[0..n) into a new NUL-terminated *out of *len bytes
 * (caller frees); with skip_special, special tokens are left out (the
 * library's skip_special_tokens). An id the tokenizer does not have is
 * LORA_EINVAL. */
int lora_tokenizer_decode(const lora_tokenizer *t, const uint32_t *ids, size_t n, int skip_special, char **out,
                          size_t *len, lora_err *e);

/* One past the largest id: the size of the id space. */
size_t lora_tokenizer_vocab_size(const lora_tokenizer *t);
/* The id of the token spelled s (added tokens first), or -1. */
int64_t lora_tokenizer_token_id(const lora_tokenizer *t, const char *s);

/* The tokenizer.json the tools' -m MODEL / --tokenizer FILE options name,
 * into a new *path (caller frees): file itself when given, else
 * tokenizer.json in model (a directory, or a file in one). Returns 0,
 * LORA_EIO (model missing; no tokenizer.json in it: "MODEL: no
 * tokenizer.json in the model directory (--tokenizer FILE names one)"),
 * LORA_ENOMEM. */
int lora_tokenizer_find(char **path, const char *model, const char *file, lora_err *e);

/* Text of ids as they come, for printing while generating: whole
 * characters only, each byte once. lora_tokenizer_stream_push decodes the
 * ids since a few before the last printed text (so that a decoder rule at
 * the start of a text, such as SentencePiece's stripped leading space,
 * does not apply in the middle) and sets *piece (*n bytes, valid UTF-8,
 * owned by the stream until the next call) to the text that is new and
 * complete: text ending in U+FFFD waits for the next id, which may finish
 * the character (the incremental decoding of Hugging Face's text
 * generation servers). lora_tokenizer_stream_finish gives what is left. */
typedef struct {
	const lora_tokenizer *t;
	lora_tokenizer_ids ids;
	size_t prefix, read; /* ids[prefix..read) made the text already given */
	char *piece;
} lora_tokenizer_stream;
/* Start after the context ids[0..n) (a prompt; may be empty), which are
 * not printed. Returns 0 or LORA_ENOMEM. */
int lora_tokenizer_stream_init(lora_tokenizer_stream *s, const lora_tokenizer *t, const uint32_t *ids, size_t n,
                               lora_err *e);
/* Returns 0, LORA_EINVAL (an id the tokenizer does not have), LORA_ENOMEM. */
int lora_tokenizer_stream_push(lora_tokenizer_stream *s, uint32_t id, const char **piece, size_t *n, lora_err *e);
int lora_tokenizer_stream_finish(lora_tokenizer_stream *s, const char **piece, size_t *n, lora_err *e);
void lora_tokenizer_stream_free(lora_tokenizer_stream *s);

/* The vocabulary as a whole, for writing it into another format (GGUF).
 * Token id (< vocab size): its text (the model's vocabulary entry, else the
 * added token's content; NULL where the id has neither) and flags. */
enum {
	LORA_TOKENIZER_ADDED = 1,      /* an added token (added_tokens) */
	LORA_TOKENIZER_SPECIAL = 2,    /* ... marked special */
	LORA_TOKENIZER_NORMALIZED = 4, /* ... matched after normalization */
	LORA_TOKENIZER_IN_MODEL = 8,   /* in the model's vocabulary */
};
const char *lora_tokenizer_token(const lora_tokenizer *t, uint32_t id, size_t *len, unsigned *flags);
/* 1 for byte-level BPE (a ByteLevel decoder), else 0 (SentencePiece-style
 * BPE). */
int lora_tokenizer_byte_level(const lora_tokenizer *t);
/* The merges in rank order: *pairs (caller frees) holds the left, right
 * and resulting id of each of the *n merges. 0 or LORA_ENOMEM. */
int lora_tokenizer_merges(const lora_tokenizer *t, uint32_t **pairs, size_t *n, lora_err *e);
/* The pre-tokenizer steps, flattened: how many, and step i's kind
 * ("ByteLevel", "Split", "Metaspace", "Digits") and regular expression
 * source (Split's Regex; NULL otherwise). */
size_t lora_tokenizer_pre_count(const lora_tokenizer *t);
const char *lora_tokenizer_pre_step(const lora_tokenizer *t, size_t i, const char **regex);

int lora_tokenizer_ids_push(lora_tokenizer_ids *ids, uint32_t id);
void lora_tokenizer_ids_free(lora_tokenizer_ids *ids);

#endif
