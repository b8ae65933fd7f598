/* data: token datasets and how they are cut into batches.
 *
 * A token file is one of:
 *   u16    raw little-endian uint16 tokens (.bin, .u16)
 *   u32    raw little-endian uint32 tokens (.u32)
 *   llmc   llm.c's token file: 256 little-endian int32 header words (magic
 *          20240520 with uint16 tokens, or 20240801 with uint32 tokens;
 *          version 1; word 2 the token count), then the tokens
 *   bytes  every byte is a token (byte-level models)
 * The file is mapped, not read; every token is checked against the
 * vocabulary once, when the file is opened.
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
 * of B both visit exactly the same rows. */
#ifndef LORA_DATA_H
#define LORA_DATA_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "core/err.h"

typedef enum { LORA_DATA_AUTO, LORA_DATA_U16, LORA_DATA_U32, LORA_DATA_LLMC, LORA_DATA_BYTES } lora_data_format;

#define LORA_LLMC_MAGIC_U16 20240520
#define LORA_LLMC_MAGIC_U32 20240801
#define LORA_LLMC_HEADER_BYTES 1024

typedef struct {
	char *path;
	lora_data_format format; /* as detected (never AUTO) */
	size_t ntokens;
	size_t elem;             /* bytes per token: 1, 2 or 4 */
	const unsigned char *tokens; /* first token inside the mapping */
	void *map;
	size_t map_len;
	int heap;                /* map is malloc'd (lora_data_from_memory) */
} lora_data;

/* Parse "auto", "u16", "u32", "llmc", "bytes"; 0 or -1. */
int lora_data_format_parse(const char *s, lora_data_format *f);
const char *lora_data_format_name(lora_data_format f);

/* Open a token file. AUTO recognises an llm.c header by its magic, then
 * goes by extension: .u32 is u32, .bin and .u16 are u16; anything else
 * needs a format. A token >= vocab is an error naming it and its position
 * (0-based, among the tokens); so is a file whose size is not a whole
 * number of tokens or disagrees with its llm.c header. Caller frees. */
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

typedef struct {
	const lora_data *d;
	size_t B, T;
	size_t nbatches;
	size_t *order; /* shuffled window order, or NULL */
} lora_data_batches;

/* Plan batches of B x T over d, shuffled with seed or not. Data too short
 * for one batch is an error saying how many tokens a batch needs. */
int lora_data_batches_init(lora_data_batches *b, const lora_data *d, size_t B, size_t T, int shuffle, uint64_t seed,
                           lora_err *e);
void lora_data_batches_free(lora_data_batches *b);
/* Fill batch k (< nbatches): inputs and targets, each (B,T). */
void lora_data_batches_get(const lora_data_batches *b, size_t k, int32_t *inputs, int32_t *targets);
/* Token offset in the file of row r of batch k (its first input). */
size_t lora_data_batches_row_offset(const lora_data_batches *b, size_t k, size_t r);

/* Write n tokens to f as a token file of format fmt: u16 and u32
 * little-endian, or bytes (one byte each). The caller has checked that
 * every token fits. Returns 0, or LORA_EIO (errno set) on a write error. */
int lora_data_write(FILE *f, const int32_t *tokens, size_t n, lora_data_format fmt);

#endif
