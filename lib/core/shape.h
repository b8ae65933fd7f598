/* shape: tensor shapes: overflow-checked products, allocation by element
 * count, and the one way shapes are written in messages ("64x128"). */
#ifndef LORA_SHAPE_H
#define LORA_SHAPE_H

#include <stddef.h>

#define LORA_MAX_DIMS 8
/* Room for any shape formatted by lora_shape_format. */
#define LORA_SHAPE_STR (LORA_MAX_DIMS * 21)

/* The smaller of two sizes (ranks, dimensions). */
static inline size_t lora_shape_min(size_t a, size_t b) { return a < b ? a : b; }
/* *out = a * b, or return -1 on size_t overflow. */
int lora_shape_mul(size_t a, size_t b, size_t *out);
/* Product of shape[0..ndim) times elem; -1 on overflow. */
int lora_shape_bytes(const size_t *shape, size_t ndim, size_t elem, size_t *out);
/* malloc of n elements of size bytes; NULL on overflow, never malloc(0). */
void *lora_shape_alloc(size_t n, size_t size);
/* Arrays that grow by doubling, so that n appends cost O(n) copies: *pp
 * (a pointer to *cap elements of size bytes) is made to hold at least need,
 * *cap updated; -1 on overflow or no memory, *pp and *cap unchanged. */
int lora_shape_grow(void *pp, size_t *cap, size_t need, size_t size);
/* "64x128" ("scalar" for ndim 0) into buf; returns buf. */
char *lora_shape_format(char *buf, size_t cap, const size_t *shape, size_t ndim);

#endif
