#include "core/shape.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int lora_shape_mul(size_t a, size_t b, size_t *out)
{
	if (a && b > SIZE_MAX / a)
		return -1;
	*out = a * b;
	return 0;
}

int lora_shape_bytes(const size_t *shape, size_t ndim, size_t elem, size_t *out)
{
	size_t n = elem;
	for (size_t i = 0; i < ndim; i++)
		if (lora_shape_mul(n, shape[i], &n))
			return -1;
	*out = n;
	return 0;
}

void *lora_shape_alloc(size_t n, size_t size)
{
	size_t b;
	if (lora_shape_mul(n, size, &b))
		return NULL;
	return malloc(b ? b : 1);
}

int lora_shape_grow(void *pp, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 16, bytes;
	while (c < need)
		if (lora_shape_mul(c, 2, &c))
			return -1;
	void *p;
	if (lora_shape_mul(c, size, &bytes) || !(p = realloc(*(void **)pp, bytes)))
		return -1;
	*(void **)pp = p;
	*cap = c;
	return 0;
}

char *lora_shape_format(char *buf, size_t cap, const size_t *shape, size_t ndim)
{
	size_t at = 0;
	if (!cap)
		return buf;
	buf[0] = 0;
	for (size_t d = 0; d < ndim && at < cap; d++)
		at += (size_t)snprintf(buf + at, cap - at, "%s%zu", d ? "x" : "", shape[d]);
	if (!ndim)
		snprintf(buf, cap, "scalar");
	return buf;
}
