/* dtype: element types and float conversions.
 *
 * Every safetensors dtype is known by name and size so that readers can
 * validate any checkpoint; arithmetic is done in f32 and only F32, F16 and
 * BF16 are converted. Conversions to f16/bf16 round to nearest even and keep
 * inf, NaN (quieted) and subnormals. */
#ifndef LORA_DTYPE_H
#define LORA_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/shape.h"

typedef enum {
	LORA_F32, LORA_F16, LORA_BF16,           /* the float types we compute on */
	LORA_F64, LORA_I64, LORA_I32, LORA_I16, LORA_I8, LORA_U64, LORA_U32,
	LORA_U16, LORA_U8, LORA_BOOL, LORA_F8_E4M3, LORA_F8_E5M2,
	LORA_DTYPE_COUNT
} lora_dtype;

/* Safetensors name ("F32", "BF16", ...) of a dtype. */
const char *lora_dtype_st_name(lora_dtype t);
/* Short lower-case name used on our command lines and in .lora ("f32"). */
const char *lora_dtype_name(lora_dtype t);
/* Parse a safetensors name; 0 or -1 if unknown. */
int lora_dtype_from_st(const char *s, lora_dtype *t);
/* Parse "f32", "f16", "bf16" (the float types only); 0 or -1. */
int lora_dtype_parse(const char *s, lora_dtype *t);
size_t lora_dtype_size(lora_dtype t);
/* 1 if t is F32, F16 or BF16. */
int lora_dtype_is_float(lora_dtype t);


float lora_dtype_f16_to_f32(uint16_t h);
uint16_t lora_dtype_f32_to_f16(float f);
float lora_dtype_bf16_to_f32(uint16_t h);
uint16_t lora_dtype_f32_to_bf16(float f);

/* Convert n elements of little-endian src (dtype t) to f32 dst. */
void lora_dtype_to_f32(float *dst, const void *src, lora_dtype t, size_t n);
/* Convert n f32 values to little-endian dst of dtype t (float types only). */
void lora_dtype_from_f32(void *dst, const float *src, lora_dtype t, size_t n);

/* Return the index of the first non-finite value among n, or n if none. */
size_t lora_dtype_find_nonfinite(const float *x, size_t n);
/* The same among n values of dtype t at x (little-endian; f32, f16 or
 * bf16): after lora_dtype_from_f32 of finite values, the first one the
 * dtype cannot hold (f16 above 65504, bf16 near FLT_MAX), which became
 * +-inf. */
size_t lora_dtype_find_overflow(const void *x, lora_dtype t, size_t n);

#endif
