#include "core/dtype_internal.h"

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

/* ---- arrays ----
 *
 * The rules above again, branch-free, on blocks of a fixed length: GCC's
 * cheap vectoriser at -O2 wants a known trip count and no branches. Each
 * body is compiled for the baseline and, picked at run time, for AVX2
 * (both kinds of our machines) and AVX-512. tests/unit/test_tensor.c
 * checks every variant against the scalar functions above over every
 * 16-bit code and the f32 edge cases. */

#define BLOCK 64

/* Run stmt for i in [0, n): whole blocks first, then the tail. */
#define BLOCKED(n, stmt)                                                     \
	do {                                                                     \
		size_t i0_ = 0;                                                      \
		for (; i0_ + BLOCK <= (n); i0_ += BLOCK)                             \
			for (size_t j_ = 0; j_ < BLOCK; j_++) {                          \
				size_t i = i0_ + j_;                                         \
				stmt;                                                        \
			}                                                                \
		for (size_t i = i0_; i < (n); i++) {                                 \
			stmt;                                                            \
		}                                                                    \
	} while (0)

static inline uint16_t load16(const unsigned char *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	h = __builtin_bswap16(h);
#endif
	return h;
}

static inline void store16(unsigned char *p, uint16_t h)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	h = __builtin_bswap16(h);
#endif
	memcpy(p, &h, 2);
}

/* c ? a : b by masks, so that no branch (nor a trapping float operation
 * moved under one) keeps the loop from being vectorised. */
static inline uint32_t pick(int c, uint32_t a, uint32_t b)
{
	uint32_t m = 0u - (uint32_t)c;
	return (a & m) | (b & ~m);
}

static inline uint16_t to_bf16(uint32_t u)
{
	uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
	return (uint16_t)pick((u & 0x7fffffffu) > 0x7f800000u, (u >> 16) | 0x0040u, rne);
}

static inline uint32_t from_f16(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu, exp = em & 0x7c00u;
	uint32_t normal = (em << 13) + (112u << 23);
	/* A subnormal's mantissa under the exponent of 2^-14, less 2^-14:
	 * man * 2^-24 exactly (and +0 for a zero). */
	uint32_t sub = f32_bits(bits_f32(normal + (1u << 23)) - 0x1p-14f);
	return sign | pick(exp == 0x7c00u, normal + (112u << 23), pick(exp == 0, sub, normal));
}

static inline uint16_t to_f16(uint32_t u)
{
	uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
	uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
	uint32_t sub = f32_bits(bits_f32(a) * 0x1p24f + 0x1p23f) - f32_bits(0x1p23f);
	uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
	return (uint16_t)(sign | pick(a > 0x7f800000u, nan,
	                              pick(a >= 0x477ff000u, 0x7c00u, pick(a < 0x38800000u, sub, normal))));
}

static inline size_t nonfinite(const float *x, size_t n)
{
	size_t i0 = 0;
	for (; i0 + BLOCK <= n; i0 += BLOCK) {
		uint32_t bad = 0;
		for (size_t j = 0; j < BLOCK; j++)
			bad |= (f32_bits(x[i0 + j]) & 0x7f800000u) == 0x7f800000u;
		if (bad)
			break;
	}
	for (size_t i = i0; i < n; i++)
		if (!isfinite(x[i]))
			return i;
	return n;
}

#define ARRAY_KERNELS(isa, attr)                                                                         \
	attr static void to_f32_##isa(float *restrict d, const unsigned char *restrict s, lora_dtype t, size_t n) \
	{                                                                                                    \
		if (t == LORA_BF16)                                                                              \
			BLOCKED(n, d[i] = bits_f32((uint32_t)load16(s + 2 * i) << 16));                              \
		else                                                                                             \
			BLOCKED(n, d[i] = bits_f32(from_f16(load16(s + 2 * i))));                                    \
	}                                                                                                    \
	attr static void from_f32_##isa(unsigned char *restrict d, const float *restrict s, lora_dtype t, size_t n) \
	{                                                                                                    \
		if (t == LORA_BF16)                                                                              \
			BLOCKED(n, store16(d + 2 * i, to_bf16(f32_bits(s[i]))));                                     \
		else                                                                                             \
			BLOCKED(n, store16(d + 2 * i, to_f16(f32_bits(s[i]))));                                      \
	}                                                                                                    \
	attr static size_t nonfinite_##isa(const float *x, size_t n) { return nonfinite(x, n); }

ARRAY_KERNELS(base, )
#if defined(__x86_64__) || defined(__i386__)
ARRAY_KERNELS(avx2, __attribute__((target("avx2"))))
ARRAY_KERNELS(avx512, __attribute__((target("avx512f,avx512bw"))))
#endif

static const struct {
	void (*to_f32)(float *restrict, const unsigned char *restrict, lora_dtype, size_t);
	void (*from_f32)(unsigned char *restrict, const float *restrict, lora_dtype, size_t);
	size_t (*nonfinite)(const float *, size_t);
} variants[] = {
	{to_f32_base, from_f32_base, nonfinite_base},
#if defined(__x86_64__) || defined(__i386__)
	{to_f32_avx2, from_f32_avx2, nonfinite_avx2},
	{to_f32_avx512, from_f32_avx512, nonfinite_avx512},
#endif
};

static int isa_cap = 2; /* lora_dtype_kernels: the highest variant allowed */

static int isa(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (isa_cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
		return 2;
	if (isa_cap >= 1 && __builtin_cpu_supports("avx2"))
		return 1;
#endif
	return 0;
}

int lora_dtype_kernels(int cap)
{
	isa_cap = cap;
	return isa();
}

void lora_dtype_to_f32(float *dst, const void *src, lora_dtype t, size_t n)
{
	if (t == LORA_F32)
		memcpy(dst, src, n * 4);
	else if (t == LORA_F16 || t == LORA_BF16)
		variants[isa()].to_f32(dst, src, t, n);
}

void lora_dtype_from_f32(void *dst, const float *src, lora_dtype t, size_t n)
{
	if (t == LORA_F32)
		memcpy(dst, src, n * 4);
	else if (t == LORA_F16 || t == LORA_BF16)
		variants[isa()].from_f32(dst, src, t, n);
}

size_t lora_dtype_find_nonfinite(const float *x, size_t n) { return variants[isa()].nonfinite(x, n); }

size_t lora_dtype_find_overflow(const void *x, lora_dtype t, size_t n)
{
	const unsigned char *b = x;
	if (t == LORA_F32)
		return lora_dtype_find_nonfinite(x, n);
	for (size_t i = 0; i < n; i++) {
		uint16_t h = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
		float v = t == LORA_F16 ? lora_dtype_f16_to_f32(h) : lora_dtype_bf16_to_f32(h);
		if (!isfinite(v))
			return i;
	}
	return n;
}
