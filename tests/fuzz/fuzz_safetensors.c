/* Fuzz the safetensors reader (lora_st_open): the input is one file. A file
 * it accepts must be what its contract says: tensors in file order, back to
 * back from offset 0 to the end of the file, each inside the mapping with
 * shape x dtype size == bytes, every name found by lora_st_find. */
#include "fuzz.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_file("x.safetensors", data, size);
	lora_st *st = NULL;
	lora_err e = {0};
	int rc = lora_st_open(&st, path, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(st == NULL);
		FUZZ_CHECK(strstr(e.msg, path) == e.msg);
		return 0;
	}
	FUZZ_CHECK(st->file_size == size);
	FUZZ_CHECK(8 + st->header_size <= size);
	size_t pos = 0, sum = 0;
	const unsigned char *base = st->map ? (const unsigned char *)st->map + 8 + st->header_size : NULL;
	for (size_t i = 0; i < st->ntensors; i++) {
		const lora_st_tensor *t = &st->tensors[i];
		size_t nb;
		FUZZ_CHECK(t->ndim <= LORA_MAX_DIMS);
		FUZZ_CHECK(lora_shape_bytes(t->shape, t->ndim, lora_dtype_size(t->dtype), &nb) == 0);
		FUZZ_CHECK(nb == t->nbytes);
		FUZZ_CHECK(t->offset == pos);
		FUZZ_CHECK(t->data != NULL);
		if (t->nbytes) {
			FUZZ_CHECK(base && (const unsigned char *)t->data == base + t->offset);
			/* Touch every byte: all of them must be inside the file. */
			const unsigned char *p = t->data;
			for (size_t k = 0; k < t->nbytes; k++)
				sum += p[k];
			if (lora_dtype_is_float(t->dtype)) {
				float f[64];
				size_t n = t->nelem < 64 ? t->nelem : 64;
				lora_dtype_to_f32(f, t->data, t->dtype, n);
			}
		}
		pos += t->nbytes;
		FUZZ_CHECK(lora_st_find(st, t->name) == t);
	}
	FUZZ_CHECK(8 + st->header_size + pos == size);
	for (size_t i = 0; i < st->nmeta; i++)
		FUZZ_CHECK(st->meta[i].key && st->meta[i].value);
	lora_st_close(st);
	return (int)(sum & 0);
}
