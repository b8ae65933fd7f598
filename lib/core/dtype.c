#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
	const char *st, *name;
	size_t size;
} dtypes[LORA_DTYPE_COUNT] = {
	[LORA_F32] = {"F32", "f32", 4},     [LORA_F16] = {"F16", "f16", 2},
	[LORA_BF16] = {"BF16", "bf16", 2},  [LORA_F64] = {"F64", "f64", 8},
	[LORA_I64] = {"I64", "i64", 8},     [LORA_I32] = {"I32", "i32", 4},
	[LORA_I16] = {"I16", "i16", 2},     [LORA_I8] = {"I8", "i8", 1},
	[LORA_U64] = {"U64", "u64", 8},     [LORA_U32] = {"U32", "u32", 4},
	[LORA_U16] = {"U16", "u16", 2},     [LORA_U8] = {"U8", "u8", 1},
	[LORA_BOOL] = {"BOOL", "bool", 1},  [LORA_F8_E4M3] = {"F8_E4M3", "f8_e4m3", 1},
	[LORA_F8_E5M2] = {"F8_E5M2", "f8_e5m2", 1},
};

const char *lora_dtype_st_name(lora_dtype t) { return dtypes[t].st; }
const char *lora_dtype_name(lora_dtype t) { return dtypes[t].name; }
size_t lora_dtype_size(lora_dtype t) { return dtypes[t].size; }
int lora_dtype_is_float(lora_dtype t) { return t == LORA_F32 || t == LORA_F16 || t == LORA_BF16; }

int lora_dtype_from_st(const char *s, lora_dtype *t)
{
	for (int i = 0; i < LORA_DTYPE_COUNT; i++)
		if (strcmp(s, dtypes[i].st) == 0) {
			*t = (lora_dtype)i;
			return 0;
		}
	return -1;
}

int lora_dtype_parse(const char *s, lora_dtype *t)
{
	for (int i = LORA_F32; i <= LORA_BF16; i++)
		if (strcmp(s, dtypes[i].name) == 0) {
			*t = (lora_dtype)i;
			return 0;
		}
	return -1;
}


static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float lora_dtype_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t lora_dtype_f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
		return (uint16_t)((u >> 16) | 0x0040u);
	/* Round to nearest even: add 0x7fff plus the lowest kept bit. Overflow
	 * into the exponent yields inf, as it should. */
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

float lora_dtype_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
	if (exp == 0x1f) /* inf or NaN, payload kept */
		return bits_f32(sign | 0x7f800000u | (man << 13));
	if (exp == 0) {
		if (man == 0)
			return bits_f32(sign);
		/* subnormal: man * 2^-24, exact in f32 */
		float v = (float)man * 0x1p-24f;
		return sign ? -v : v;
	}
	return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t lora_dtype_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u) /* NaN */
		return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
	if (a >= 0x477ff000u) /* >= 65520 rounds to inf (and inf stays inf) */
		return (uint16_t)(sign | 0x7c00u);
	if (a < 0x38800000u) { /* below the smallest normal f16, 2^-14 */
		/* Scale so that one f16 subnormal step (2^-24) is one unit; the
		 * float addition rounds to nearest even in hardware. */
		float v = bits_f32(a) * 0x1p24f;
		float r = v + 0x1p23f; /* forces rounding at the units place */
		uint32_t m = f32_bits(r) - f32_bits(0x1p23f);
		return (uint16_t)(sign | m);
	}
	/* normal: rebias exponent, round mantissa from 23 to 10 bits, RNE */
	uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
	return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

void lora_dtype_to_f32(float *dst, const void *src, lora_dtype t, size_t n)
{
	const unsigned char *p = src;
	switch (t) {
	case LORA_F32:
		memcpy(dst, src, n * 4);
		break;
	case LORA_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = lora_dtype_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
		break;
	case LORA_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = lora_dtype_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
		break;
	default:
		break;
	}
}

void lora_dtype_from_f32(void *dst, const float *src, lora_dtype t, size_t n)
{
	unsigned char *p = dst;
	uint16_t h;
	switch (t) {
	case LORA_F32:
		memcpy(dst, src, n * 4);
		break;
	case LORA_F16:
	case LORA_BF16:
		for (size_t i = 0; i < n; i++) {
			h = t == LORA_F16 ? lora_dtype_f32_to_f16(src[i]) : lora_dtype_f32_to_bf16(src[i]);
			p[2 * i] = (unsigned char)h;
			p[2 * i + 1] = (unsigned char)(h >> 8);
		}
		break;
	default:
		break;
	}
}

size_t lora_dtype_find_nonfinite(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return i;
	return n;
}
