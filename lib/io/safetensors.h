/* safetensors: validated mmap reader and streaming atomic writer of one
 * .safetensors file (io/ckpt.h sees several as one checkpoint).
 *
 * Format: u64 LE header length N, N bytes of UTF-8 JSON mapping tensor name
 * to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
 * "__metadata__" object of string values), then the data section. Offsets
 * are relative to the start of the data section. Everything is validated
 * before any tensor byte is used; see lora_st_open. */
#ifndef LORA_SAFETENSORS_H
#define LORA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/dtype.h"

#define LORA_ST_MAX_HEADER 100000000u

typedef struct {
	char *name;
	lora_dtype dtype;
	size_t ndim;
	size_t shape[LORA_MAX_DIMS];
	size_t nelem;
	const void *data; /* points into the mapping; valid until lora_st_close */
	size_t nbytes;
	size_t offset;    /* begin offset inside the data section */
} lora_st_tensor;

typedef struct {
	char *key, *value;
} lora_st_meta;

typedef struct {
	char *path;
	lora_st_tensor *tensors; /* sorted by data offset (file order) */
	size_t ntensors;
	lora_st_meta *meta;      /* __metadata__, in file order */
	size_t nmeta;
	size_t file_size, header_size;
	void *map;               /* whole-file mapping (NULL for an empty data section) */
} lora_st;

/* Open and validate one safetensors file: header length bound
 * (LORA_ST_MAX_HEADER) and within the file, UTF-8 JSON object, known dtype
 * names, integer shapes whose element count times dtype size equals the
 * byte length (overflow-checked), data_offsets contiguous from 0 with no gap,
 * overlap or trailing bytes, unique names, __metadata__ string values only.
 * On error *out is NULL and e names the file (and tensor when one is at fault).
 * Caller frees with lora_st_close. */
int lora_st_open(lora_st **out, const char *path, lora_err *e);
void lora_st_close(lora_st *st);
/* Tensor by name, or NULL. */
const lora_st_tensor *lora_st_find(const lora_st *st, const char *name);
/* Drop the tensor's pages from this process's memory (they are re-read
 * from the file if touched again): streaming tools call it after each
 * tensor so their resident size stays bounded by one tensor, not the model. */
void lora_st_release(const lora_st_tensor *t);

/* Streaming writer. The header needs every name, dtype and shape up front;
 * data is then written tensor by tensor in the declared order. The output is
 * a temporary file in the destination directory renamed into place by
 * lora_st_writer_commit; lora_st_writer_abort (or any error) removes it. */
typedef struct lora_st_writer lora_st_writer;
typedef struct {
	const char *name;
	lora_dtype dtype;
	size_t ndim;
	size_t shape[LORA_MAX_DIMS];
} lora_st_spec;

/* Begin writing path with the given tensors (written in this order) and
 * optional metadata (nmeta pairs, may be 0). Fails if path exists unless
 * force. */
int lora_st_writer_open(lora_st_writer **out, const char *path, const lora_st_spec *specs, size_t n,
                        const lora_st_meta *meta, size_t nmeta, int force, lora_err *e);
/* Append bytes of the current tensor; may be called several times per
 * tensor. Writing more than the declared size is an error. */
int lora_st_writer_write(lora_st_writer *w, const void *data, size_t nbytes, lora_err *e);
/* Check every tensor was written in full, flush, fsync, rename; frees w. */
int lora_st_writer_commit(lora_st_writer *w, lora_err *e);
/* Remove the temporary file and free w (w may be NULL). */
void lora_st_writer_abort(lora_st_writer *w);

#endif
