/* Fuzz the .lora reader (lora_lorafile_readf) in its three modes, through a
 * memory stream as a pipe would deliver the file.
 *
 * Every input is read twice: as it is, and with its checksums made right
 * (each payload's crc32 in the header set from the bytes that follow, the
 * header re-serialized and its CRC recomputed), so that mutations reach the
 * header's sizes and the payload decoder instead of stopping at a CRC
 * mismatch. The transformation is part of the harness, so a saved input
 * replays the same way without libFuzzer.
 *
 * An adapter read in full must also pass the header-only and verify-only
 * reads, and must survive a round trip: written with lora_lorafile_write and
 * read back, it is the same adapter bit for bit. */
#include <cJSON.h>
#include <zlib.h>

#include "fuzz.h"
#include "io/lorafile.h"
#include "same.h"

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int read_mem(lora_adapter **a, const uint8_t *data, size_t size, int mode, lora_err *e)
{
	static const uint8_t empty[1];
	FILE *f = fmemopen((void *)(size ? data : empty), size ? size : 1, "rb");
	FUZZ_CHECK(f != NULL);
	if (!size)
		fgetc(f); /* fmemopen cannot open an empty buffer: consume its one byte */
	int rc = lora_lorafile_readf(a, f, "in.lora", mode, e);
	fclose(f);
	if (rc) {
		fuzz_check_error(rc, e);
		FUZZ_CHECK(*a == NULL);
		FUZZ_CHECK(strncmp(e->msg, "in.lora: ", 9) == 0 || strcmp(e->msg, "out of memory") == 0);
	}
	return rc;
}

/* Set the "crc32" of payload object c (if it has a usable "zsize") from
 * the next bytes at *pos; 0 when the data ran out. */
static int fix_one(cJSON *c, const uint8_t *data, size_t size, size_t *pos)
{
	cJSON *zs = cJSON_GetObjectItemCaseSensitive(c, "zsize");
	if (!cJSON_IsNumber(zs) || !(zs->valuedouble >= 0) || zs->valuedouble > (double)(size - *pos))
		return 0;
	size_t n = (size_t)zs->valuedouble;
	uLong crc = crc32(0, NULL, 0);
	for (size_t off = 0; off < n; off += 1u << 30)
		crc = crc32(crc, data + *pos + off, (uInt)(n - off < (1u << 30) ? n - off : (1u << 30)));
	*pos += n;
	cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "crc32");
	if (cJSON_IsNumber(v))
		cJSON_SetNumberValue(v, (double)(uint32_t)crc);
	return 1;
}

/* The input with every checksum right, in a malloc'd buffer (*out, *n), or
 * NULL when it has no parsable header. Payloads follow the reader's order:
 * A and B of each layer, then magnitudes and biases, then extras. */
static uint8_t *fix_checksums(const uint8_t *data, size_t size, size_t *n)
{
	if (size < 20 || !lora_lorafile_is_lora(data, size))
		return NULL;
	uint32_t hl = get32(data + 12);
	if (hl > size - 20)
		return NULL;
	cJSON *h = cJSON_ParseWithLength((const char *)data + 16, hl);
	if (!cJSON_IsObject(h)) {
		cJSON_Delete(h);
		return NULL;
	}
	size_t pos = 16 + (size_t)hl + 4;
	cJSON *layers = cJSON_GetObjectItemCaseSensitive(h, "layers"), *it;
	int ok = 1;
	static const char *const ab[] = {"A", "B"}, *const tail[] = {"magnitude", "bias"};
	cJSON_ArrayForEach(it, layers)
		for (int k = 0; k < 2 && ok; k++) {
			cJSON *c = cJSON_GetObjectItemCaseSensitive(it, ab[k]);
			ok = c && fix_one(c, data, size, &pos);
		}
	cJSON_ArrayForEach(it, layers)
		for (int k = 0; k < 2 && ok; k++) {
			cJSON *c = cJSON_GetObjectItemCaseSensitive(it, tail[k]);
			ok = !c || fix_one(c, data, size, &pos);
		}
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(h, "extras"))
		ok = ok && fix_one(it, data, size, &pos);
	char *text = cJSON_PrintUnformatted(h);
	cJSON_Delete(h);
	if (!text)
		return NULL;
	size_t tl = strlen(text), rest = size - (16 + hl + 4);
	uint8_t *buf = malloc(16 + tl + 4 + rest);
	FUZZ_CHECK(buf != NULL);
	memcpy(buf, data, 12);
	put32(buf + 12, (uint32_t)tl);
	memcpy(buf + 16, text, tl);
	free(text);
	put32(buf + 16 + tl, (uint32_t)crc32(crc32(0, buf, 16), buf + 16, (uInt)tl));
	memcpy(buf + 16 + tl + 4, data + 16 + hl + 4, rest);
	*n = 16 + tl + 4 + rest;
	return buf;
}

static void one(const uint8_t *data, size_t size)
{
	lora_adapter *a = NULL, *h = NULL, *v = NULL, *b = NULL;
	lora_err e = {0};
	int full = read_mem(&a, data, size, LORA_READ_ALL, &e);
	int head = read_mem(&h, data, size, LORA_READ_HEADER, &e);
	int verify = read_mem(&v, data, size, LORA_READ_VERIFY, &e);
	if (full == 0) {
		FUZZ_CHECK(head == 0 && verify == 0);
		FUZZ_CHECK(h->nlayers == a->nlayers && v->nlayers == a->nlayers);
		FUZZ_CHECK(a->file_bytes == size);
		for (size_t i = 0; i < a->nlayers; i++) {
			FUZZ_CHECK(a->layers[i].A && a->layers[i].B);
			FUZZ_CHECK(!h->layers[i].A && !v->layers[i].A);
			FUZZ_CHECK(h->layers[i].rank == a->layers[i].rank);
		}
		char *buf = NULL;
		size_t len = 0;
		uint64_t n = 0;
		FILE *f = open_memstream(&buf, &len);
		FUZZ_CHECK(f != NULL);
		int rc = lora_lorafile_write(a, f, "out.lora", &n, &e);
		FUZZ_CHECK(fclose(f) == 0);
		if (rc)
			fprintf(stderr, "round trip: %s\n", e.msg);
		FUZZ_CHECK(rc == 0);
		FUZZ_CHECK(n == len);
		rc = read_mem(&b, (const uint8_t *)buf, len, LORA_READ_ALL, &e);
		if (rc)
			fprintf(stderr, "round trip: %s\n", e.msg);
		FUZZ_CHECK(rc == 0);
		fuzz_check_same(a, b, 1);
		free(buf);
	}
	lora_adapter_free(a);
	lora_adapter_free(h);
	lora_adapter_free(v);
	lora_adapter_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 0;
	one(data, size);
	uint8_t *fixed = fix_checksums(data, size, &n);
	if (fixed) {
		one(fixed, n);
		free(fixed);
	}
	return 0;
}
