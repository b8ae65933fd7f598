/* gguf: validated mmap reader and streaming atomic writer of one GGUF file,
 * the format of llama.cpp, ggml and Ollama (version 3 written; 2 and 3
 * read, which share the layout).
 *
 * Format, every number little-endian: "GGUF", u32 version, u64 tensor
 * count, u64 key-value count; the key-value pairs (string key, i32 value
 * type, value; an array is i32 element type, u64 count, elements); the
 * tensor infos (string name, u32 n_dims, i64 ne[n_dims], i32 ggml type,
 * u64 offset); zero padding to the alignment (general.alignment, a u32
 * power of two, default 32); the data section, where each tensor starts at
 * its offset (from the start of the section) and is padded to the
 * alignment, back to back in info order, as ggml requires. A string is a
 * u64 length and that many bytes.
 *
 * Dimensions are ggml's: ne[0] varies fastest, so a row-major PyTorch
 * [out, in] matrix is written with ne = {in, out}. */
#ifndef LORA_GGUF_H
#define LORA_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/dtype.h"

#define LORA_GGUF_VERSION 3
#define LORA_GGUF_ALIGNMENT 32
#define LORA_GGUF_MAX_DIMS 4
#define LORA_GGUF_MAX_NAME 63 /* ggml's GGML_MAX_NAME less its NUL */

/* Value types of key-value pairs (gguf-py's GGUFValueType). */
typedef enum {
	LORA_GGUF_U8, LORA_GGUF_I8, LORA_GGUF_U16, LORA_GGUF_I16, LORA_GGUF_U32, LORA_GGUF_I32,
	LORA_GGUF_F32, LORA_GGUF_BOOL, LORA_GGUF_STRING, LORA_GGUF_ARRAY, LORA_GGUF_U64, LORA_GGUF_I64,
	LORA_GGUF_F64, LORA_GGUF_NTYPES
} lora_gguf_type;

/* The ggml tensor types this toolkit converts (the reader knows the block
 * layout of every type, so that it validates any file). */
enum { LORA_GGML_F32 = 0, LORA_GGML_F16 = 1, LORA_GGML_Q8_0 = 8, LORA_GGML_BF16 = 30 };
#define LORA_GGML_QK8_0 32 /* q8_0: blocks of 32 int8 values and one f16 scale */

typedef struct {
	char *key;
	lora_gguf_type type;           /* LORA_GGUF_ARRAY for an array */
	lora_gguf_type elem;           /* the element type (type itself for a scalar) */
	size_t n;                      /* elements: 1 for a scalar */
	const unsigned char *data;     /* numbers: n little-endian values, unaligned, in the mapping */
	const unsigned char **str;     /* strings: each one's bytes in the mapping, */
	size_t *len;                   /* and its length */
} lora_gguf_kv;

typedef struct {
	char *name;
	uint32_t type;                 /* ggml type */
	size_t ndim;
	uint64_t ne[LORA_GGUF_MAX_DIMS]; /* ggml order; 1 past ndim */
	size_t nelem, nbytes;
	size_t offset;                 /* from the start of the data section */
	const void *data;              /* in the mapping; valid until lora_gguf_close */
} lora_gguf_tensor;

typedef struct {
	char *path;
	uint32_t version;
	lora_gguf_kv *kv;              /* file order */
	size_t nkv;
	lora_gguf_tensor *tensors;     /* file order (= data order) */
	size_t ntensors;
	size_t alignment, data_offset, file_size;
	void *map;                     /* the whole file */
} lora_gguf;

/* Open and validate one GGUF file: magic, version, counts against the
 * bytes that could hold them, every string length, value type, array
 * length and element type, keys and tensor names non-empty, UTF-8 and
 * unique, general.alignment a u32 power of two, tensor names under 64
 * bytes, at most 4 dimensions, known ggml types with rows a whole number
 * of blocks, element and byte counts without overflow, offsets exactly
 * where ggml puts them, every tensor inside the file and nothing after the
 * last one but its padding. Memory follows the bytes of the file, never a
 * declared count. On error *out is NULL and e names the file and the key
 * or tensor at fault. Caller frees with lora_gguf_close. */
int lora_gguf_open(lora_gguf **out, const char *path, lora_err *e);
void lora_gguf_close(lora_gguf *g);
/* Key-value pair or tensor by name, or NULL (binary search). */
const lora_gguf_kv *lora_gguf_kv_find(const lora_gguf *g, const char *key);
const lora_gguf_tensor *lora_gguf_find(const lora_gguf *g, const char *name);

/* Element i (< kv->n) of a value: 0, or -1 when the value is not of that
 * kind (uint: an unsigned type, or a signed one holding a non-negative
 * number; float: f32 or f64; str: a string, not NUL-terminated). */
int lora_gguf_kv_uint(const lora_gguf_kv *kv, size_t i, uint64_t *v);
int lora_gguf_kv_float(const lora_gguf_kv *kv, size_t i, double *v);
int lora_gguf_kv_bool(const lora_gguf_kv *kv, size_t i, int *v);
int lora_gguf_kv_str(const lora_gguf_kv *kv, size_t i, const char **s, size_t *len);
/* "u32", "str", "arr[f64]" (an array's element type): for messages. */
const char *lora_gguf_type_name(lora_gguf_type t);
void lora_gguf_kv_describe(const lora_gguf_kv *kv, char *buf, size_t n);

/* ggml type name ("F32", "Q8_0"), or NULL for a type the reader does not
 * know. */
const char *lora_gguf_ggml_name(uint32_t type);
/* The ggml type of a float dtype, and back (-1 for any other). */
int lora_gguf_ggml_of(lora_dtype t);
int lora_gguf_dtype_of(uint32_t type, lora_dtype *t);
/* Tensor t's values as f32 (nelem of them) for F32, F16, BF16 and Q8_0;
 * -1 for other types. */
int lora_gguf_to_f32(float *dst, const lora_gguf_tensor *t);
/* ggml's q8_0 of n values (a multiple of 32): per block the f16 scale
 * d = max|x| / 127, then round(x / d) as int8, 34 bytes per block. */
void lora_gguf_q8_0_quantize(void *dst, const float *src, size_t n);
void lora_gguf_q8_0_dequantize(float *dst, const void *src, size_t n);

/* ---- writer ----
 * The header needs every key-value pair and every tensor's name, type and
 * shape up front; data is then written tensor by tensor in the declared
 * order (the writer adds the padding). Output goes to a temporary file
 * beside path renamed into place by lora_gguf_writer_commit, or to
 * standard output for "-" (refused on a terminal). */
typedef struct {
	const char *key;
	lora_gguf_type type;           /* LORA_GGUF_ARRAY for an array */
	lora_gguf_type elem;           /* an array's element type */
	size_t n;                      /* an array's length */
	union {
		uint64_t u;                /* unsigned types and bool */
		int64_t i;                 /* signed types */
		double f;                  /* f32 (rounded) and f64 */
		const char *s;             /* a string */
		const void *arr;           /* an array: n C values of the element's type, any alignment
		                              (uint8_t for bool, const char * for strings) */
	} v;
} lora_gguf_kvspec;

typedef struct {
	const char *name;
	uint32_t type;                 /* F32, F16, BF16 or Q8_0 */
	size_t ndim;
	uint64_t ne[LORA_GGUF_MAX_DIMS];
} lora_gguf_spec;

typedef struct lora_gguf_writer lora_gguf_writer;

/* Begin writing path. Keys and names are checked as the reader would
 * (general.alignment, when given, sets the alignment). Fails if path
 * exists unless force. */
int lora_gguf_writer_open(lora_gguf_writer **out, const char *path, const lora_gguf_kvspec *kv, size_t nkv,
                          const lora_gguf_spec *t, size_t nt, int force, lora_err *e);
/* Append bytes of the current tensor (several calls per tensor allowed);
 * more than its size is an error. */
int lora_gguf_writer_write(lora_gguf_writer *w, const void *data, size_t nbytes, lora_err *e);
/* Check every tensor was written in full, flush, fsync, rename; frees w. */
int lora_gguf_writer_commit(lora_gguf_writer *w, lora_err *e);
/* Remove the temporary file and free w (w may be NULL). */
void lora_gguf_writer_abort(lora_gguf_writer *w);

#endif
