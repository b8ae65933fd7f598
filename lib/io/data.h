/* data: token datasets and how they are cut into batches.
 *
 * A token file is one of:
 *   u16    raw little-endian uint16 tokens (.bin, .u16)
 *   u32    raw little-endian uint32 tokens (.u32)
 *   llmc   llm.c's token file: 256 little-endian int32 header words (magic
 *          20240520 with uint16 tokens, or 20240801 with uint32 tokens;
 *          version 1; word 2 the token count), then the tokens
 *   bytes  every byte is a token (byte-level models)
 *   tok    the toolkit's own (lora-data(5)): u16 or u32 tokens with their
 *          document boundaries and, optionally, a loss mask: one bit per
 *          token, set when the token is a training target. Written front
 *          to back (counts in a trailer), so it streams through pipes.
 * The file is mapped, not read; every token is checked against the
 * vocabulary once, when the file is opened, and a tok file's boundaries
 * and mask before anything uses them.
 *
 * Batches of B rows of T tokens. Without shuffling (llm.c's rule), batch k
 * is the B*T+1 consecutive tokens from offset k*B*T; row b's inputs are
 * tokens [b*T, b*T+T) of that span and its targets the same shifted by
 * one; there are floor((n-1) / (B*T)) batches. With shuffling, the file is
 * cut into windows of T+1 tokens starting every T tokens (floor((n-1)/T)
 * of them), the windows are put in a random order drawn from lib/rng with
 * the seed, and batch k takes windows k*B .. k*B+B-1 of that order as its
 * rows; there are floor(windows / B) batches. Both ways every row predicts
 * T tokens from the T before them, and when the window count is a multiple
 * of B both visit exactly the same rows.
 *
 * A tok file's rows follow its documents instead. Packed (the default),
 * a row holds whole documents, one after another, as many as fit in T+1
 * tokens; a document longer than that is cut into windows of T+1 tokens
 * every T tokens, as a bare file is. Unpacked, each document is one row,
 * cut to its first T+1 tokens. A target gets loss only when its mask bit
 * is set and it belongs to the same document as the token before it (no
 * document is predicted from another); positions past a row's tokens are
 * padding, input 0 and no loss. Rows with no target carrying loss are left
 * out. Rows are then taken in order or shuffled as windows are. */
#ifndef LORA_DATA_H
#define LORA_DATA_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "core/err.h"

typedef enum { LORA_DATA_AUTO, LORA_DATA_U16, LORA_DATA_U32, LORA_DATA_LLMC, LORA_DATA_BYTES, LORA_DATA_TOK } lora_data_format;

#define LORA_LLMC_MAGIC_U16 20240520
#define LORA_LLMC_MAGIC_U32 20240801
#define LORA_LLMC_HEADER_BYTES 1024
/* tok files: 24-byte header, 24-byte trailer (lora-data(5)) */
#define LORA_TOK_MAGIC "LORATOK\n"
#define LORA_TOK_END "LORAEND\n"
#define LORA_TOK_HEADER_BYTES 24
#define LORA_TOK_TRAILER_BYTES 24
#define LORA_TOK_MASK 1u /* header flag: a loss mask follows the boundaries */

typedef struct {
	char *path;
	lora_data_format format; /* as detected (never AUTO) */
	size_t ntokens;
	size_t elem;             /* bytes per token: 1, 2 or 4 */
	const unsigned char *tokens; /* first token inside the mapping */
	void *map;
	size_t map_len;
	int heap;                /* map is malloc'd (lora_data_from_memory) */
	size_t ndocs;            /* tok: documents (>= 1 when there are tokens); else 0, one stream */
	const unsigned char *ends; /* tok: ndocs little-endian u64, each document's end */
	const unsigned char *mask; /* tok: a bit per token (LSB first), or NULL: every token a target */
} lora_data;

/* Parse "auto", "u16", "u32", "llmc", "bytes", "tok"; 0 or -1. */
int lora_data_format_parse(const char *s, lora_data_format *f);
const char *lora_data_format_name(lora_data_format f);

/* Open a token file. AUTO recognises a tok or llm.c header by its magic,
 * then goes by extension: .u32 is u32, .bin and .u16 are u16, .tok is
 * tok; anything else needs a format. A token >= vocab is an error naming it and its
 * position (0-based, among the tokens); so is a file whose size is not a
 * whole number of tokens or disagrees with its header, and a tok file
 * whose trailer, boundaries or mask are out of order (each named). Caller
 * frees. */
int lora_data_open(lora_data **out, const char *path, lora_data_format fmt, size_t vocab, lora_err *e);
/* The same from the n bytes at buf, read from a stream (standard input)
 * and named name in messages; d takes buf (freed also on failure). */
int lora_data_from_memory(lora_data **out, const char *name, void *buf, size_t n, lora_data_format fmt, size_t vocab,
                          lora_err *e);
void lora_data_close(lora_data *d);
/* "name:bytes:fnv64" of the file's bytes (its base name, size and 64-bit
 * FNV-1a), which provenance records and --resume checks; caller frees,
 * NULL when memory runs out. */
char *lora_data_id(const lora_data *d);
/* Token i (i < ntokens). */
uint32_t lora_data_token(const lora_data *d, size_t i);
/* End (one past the last token) of document i (i < ndocs). */
size_t lora_data_doc_end(const lora_data *d, size_t i);
/* 1 when token i is a training target (its mask bit, or no mask). */
int lora_data_target(const lora_data *d, size_t i);

typedef struct {
	size_t off, len; /* tokens [off, off+len) of the file, 2 <= len <= T+1 */
} lora_data_row;

typedef struct {
	const lora_data *d;
	size_t B, T;
	size_t nbatches;
	size_t *order; /* shuffled window (or row) order, or NULL */
	lora_data_row *rows; /* tok files: the rows, before any shuffle; else NULL (windows) */
	size_t nrows;
} lora_data_batches;

enum {
	LORA_DATA_SHUFFLE = 1,  /* rows in an order drawn from the seed */
	LORA_DATA_UNPACKED = 2, /* tok files: a document per row (sample_packing: false) */
};
/* Plan batches of B x T over d (flags above). Data too short for one
 * batch is an error saying how many tokens (or rows) a batch needs. */
int lora_data_batches_init(lora_data_batches *b, const lora_data *d, size_t B, size_t T, unsigned flags,
                           uint64_t seed, lora_err *e);
void lora_data_batches_free(lora_data_batches *b);
/* Fill batch k (< nbatches): inputs and targets, each (B,T); a target
 * without loss is -1. Returns the count of targets with loss. */
size_t lora_data_batches_get(const lora_data_batches *b, size_t k, int32_t *inputs, int32_t *targets);
/* Row r of batch k: its first token's offset in the file and its length
 * (T+1 for a bare file's windows). */
lora_data_row lora_data_batches_row(const lora_data_batches *b, size_t k, size_t r);

/* Write n tokens to f as a token file of format fmt: u16 and u32
 * little-endian, or bytes (one byte each). The caller has checked that
 * every token fits. Returns 0, or LORA_EIO (errno set) on a write error. */
int lora_data_write(FILE *f, const int32_t *tokens, size_t n, lora_data_format fmt);

/* A token file written a document at a time: bare (U16, U32: the ids
 * only, boundaries and mask dropped) or TOK with elem 2 or 4 bytes per
 * token. A TOK writer keeps the boundaries and mask in memory (a 64-bit
 * end per document, a bit per token) until close writes them. */
typedef struct {
	FILE *f;
	lora_data_format fmt;
	size_t elem;
	int masked;          /* TOK: a mask is written */
	uint64_t n;          /* tokens written */
	uint64_t *ends;
	size_t nd, dcap;
	unsigned char *mask;
	size_t mcap;         /* bytes */
} lora_data_writer;

/* Start a file on f (TOK: its header; masked says whether a mask will be
 * written). Returns 0, LORA_EIO or LORA_ENOMEM (errno set). */
int lora_data_writer_open(lora_data_writer *w, FILE *f, lora_data_format fmt, size_t elem, int masked);
/* Append one document of n ids (n > 0; each fits elem); target[i] says
 * whether id i gets loss (NULL: all do). */
int lora_data_writer_doc(lora_data_writer *w, const uint32_t *ids, const unsigned char *target, size_t n);
/* TOK: the boundaries, the mask and the trailer. Frees w either way. */
int lora_data_writer_close(lora_data_writer *w);
void lora_data_writer_free(lora_data_writer *w);

#endif
