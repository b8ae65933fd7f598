/* .lora codec: lossless round trips at each dtype, every truncation point,
 * corruption, hostile headers. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "io/lorafile.h"
#include "core/rng.h"

static lora_adapter *sample(lora_dtype t, uint64_t seed)
{
	lora_adapter *a = lora_adapter_new();
	lora_rng g;
	lora_rng_seed(&g, seed);
	a->dtype = t;
	a->base_name = strdup("tiny");
	a->provenance = strdup("{\"tool\":\"test\",\"seed\":7}");
	lora_adapter_add_target(a, "q_proj", NULL);
	const char *names[] = {"model.layers.0.q_proj", "model.layers.1.q_proj", "w"};
	size_t shapes[3][3] = {{16, 12, 4}, {8, 8, 2}, {3, 50, 3}};
	for (int i = 0; i < 3; i++) {
		lora_layer *l = lora_adapter_add(a, names[i], shapes[i][0], shapes[i][1], shapes[i][2],
		                                 2.5 * (i + 1), 0, NULL);
		for (size_t j = 0; j < l->rank * l->in; j++)
			l->A[j] = lora_rng_normal(&g);
		for (size_t j = 0; j < l->out * l->rank; j++)
			l->B[j] = lora_rng_normal(&g) * 1e-3f;
		/* store values the dtype represents exactly, so the round trip is exact */
		unsigned char tmp[2048 * 4];
		lora_dtype_from_f32(tmp, l->A, t, l->rank * l->in);
		lora_dtype_to_f32(l->A, tmp, t, l->rank * l->in);
		lora_dtype_from_f32(tmp, l->B, t, l->out * l->rank);
		lora_dtype_to_f32(l->B, tmp, t, l->out * l->rank);
	}
	return a;
}

static unsigned char *encode(const lora_adapter *a, size_t *n)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, n);
	lora_err e;
	int rc = lora_lorafile_write(a, f, "mem", NULL, &e);
	fclose(f);
	CHECK(rc == 0, "write: %s", e.msg);
	return (unsigned char *)buf;
}

static int decode(lora_adapter **a, const unsigned char *buf, size_t n, int mode, lora_err *e)
{
	FILE *f = fmemopen((void *)buf, n ? n : 1, "rb");
	if (n == 0) { /* fmemopen refuses size 0; read past the one byte instead */
		fgetc(f);
	}
	int rc = lora_lorafile_readf(a, f, "x.lora", mode, e);
	fclose(f);
	return rc;
}

static int same(const lora_adapter *a, const lora_adapter *b)
{
	if (a->nlayers != b->nlayers || a->dtype != b->dtype || a->rslora != b->rslora)
		return 0;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *x = &a->layers[i], *y = &b->layers[i];
		if (strcmp(x->name, y->name) || x->out != y->out || x->in != y->in || x->rank != y->rank ||
		    x->alpha != y->alpha || memcmp(x->A, y->A, x->rank * x->in * 4) ||
		    memcmp(x->B, y->B, x->out * x->rank * 4))
			return 0;
	}
	return 1;
}

/* sample() plus everything optional: DoRA magnitudes, lora_B biases,
 * fan_in_fan_out, an imported PEFT config and raw extra tensors of several
 * dtypes (one of zero size). */
static lora_adapter *sample_full(lora_dtype t, uint64_t seed)
{
	lora_adapter *a = sample(t, seed);
	lora_rng g;
	lora_rng_seed(&g, seed + 100);
	a->fan_in_fan_out = 1;
	a->peft_config = strdup("{\n  \"peft_type\": \"LORA\",\n  \"r\": 4\n}\n");
	for (size_t i = 0; i < a->nlayers; i++) {
		lora_layer *l = &a->layers[i];
		unsigned char tmp[64 * 4];
		if (i != 1) { /* layer 1 has neither: they are per layer */
			l->magnitude = malloc(l->out * sizeof(float));
			l->bias = malloc(l->out * sizeof(float));
			for (size_t j = 0; j < l->out; j++) {
				l->magnitude[j] = 1.0f + lora_rng_uniform(&g);
				l->bias[j] = lora_rng_normal(&g);
			}
			lora_dtype_from_f32(tmp, l->magnitude, t, l->out);
			lora_dtype_to_f32(l->magnitude, tmp, t, l->out);
			lora_dtype_from_f32(tmp, l->bias, t, l->out);
			lora_dtype_to_f32(l->bias, tmp, t, l->out);
		}
	}
	unsigned char raw[96];
	for (size_t k = 0; k < sizeof raw; k++)
		raw[k] = (unsigned char)(k * 37 + seed);
	size_t s1[2] = {4, 3}, s2[1] = {5}, s3[2] = {0, 7}, s4[3] = {2, 2, 3};
	lora_adapter_add_extra(a, "base_model.model.embed.lora_embedding_A", LORA_BF16, 2, s1, raw, NULL);
	lora_adapter_add_extra(a, "idx", LORA_I64, 1, s2, raw, NULL);
	lora_adapter_add_extra(a, "empty", LORA_F32, 2, s3, raw, NULL);
	lora_adapter_add_extra(a, "mask", LORA_BOOL, 3, s4, raw, NULL);
	return a;
}

static int same_full(const lora_adapter *a, const lora_adapter *b)
{
	if (!same(a, b) || a->fan_in_fan_out != b->fan_in_fan_out || !b->peft_config ||
	    strcmp(a->peft_config, b->peft_config) || a->nextras != b->nextras)
		return 0;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *x = &a->layers[i], *y = &b->layers[i];
		if (!x->magnitude != !y->magnitude || !x->bias != !y->bias ||
		    (x->magnitude && memcmp(x->magnitude, y->magnitude, x->out * 4)) ||
		    (x->bias && memcmp(x->bias, y->bias, x->out * 4)))
			return 0;
	}
	for (size_t i = 0; i < a->nextras; i++) {
		const lora_extra *x = &a->extras[i], *y = &b->extras[i];
		if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim ||
		    memcmp(x->shape, y->shape, x->ndim * sizeof *x->shape) || x->nbytes != y->nbytes ||
		    !y->data || memcmp(x->data, y->data, x->nbytes))
			return 0;
	}
	return 1;
}

/* Build a file from a hand-written header (CRC computed) and payload. */
static unsigned char *craft(const char *json, uint32_t version, const void *payload, size_t np, size_t *n)
{
	size_t hl = strlen(json);
	unsigned char *b = malloc(16 + hl + 4 + np);
	memcpy(b, LORA_FILE_MAGIC, 8);
	for (int i = 0; i < 4; i++) {
		b[8 + i] = (unsigned char)(version >> (8 * i));
		b[12 + i] = (unsigned char)(hl >> (8 * i));
	}
	memcpy(b + 16, json, hl);
	uint32_t c = (uint32_t)crc32(0, b, (uInt)(16 + hl));
	for (int i = 0; i < 4; i++)
		b[16 + hl + i] = (unsigned char)(c >> (8 * i));
	if (np)
		memcpy(b + 20 + hl, payload, np);
	*n = 20 + hl + np;
	return b;
}

int main(void)
{
	lora_err e;
	lora_adapter *b;
	lora_dtype types[] = {LORA_F32, LORA_F16, LORA_BF16};
	for (int k = 0; k < 3; k++) {
		lora_adapter *a = sample(types[k], 10 + k);
		a->rslora = k == 2;
		size_t n;
		unsigned char *buf = encode(a, &n);
		CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == 0, "read %s: %s", lora_dtype_name(types[k]), e.msg);
		CHECK(b && same(a, b), "round trip %s", lora_dtype_name(types[k]));
		CHECK(b && b->file_bytes == n, "file_bytes");
		CHECK(b && b->base_name && strcmp(b->base_name, "tiny") == 0, "base name kept");
		CHECK(b && b->provenance && strstr(b->provenance, "\"seed\":7"), "provenance kept");
		CHECK(b && b->ntargets == 1 && strcmp(b->targets[0], "q_proj") == 0, "targets kept");
		lora_adapter_free(b);
		/* header-only and verify modes */
		CHECK(decode(&b, buf, n, LORA_READ_HEADER, &e) == 0 && b->layers[0].A == NULL &&
		      b->nlayers == 3 && b->layers[2].in == 50, "header only");
		lora_adapter_free(b);
		CHECK(decode(&b, buf, n, LORA_READ_VERIFY, &e) == 0 && b->layers[1].B == NULL, "verify");
		lora_adapter_free(b);
		/* writing the decoded adapter again gives the same bytes */
		size_t n2;
		decode(&b, buf, n, LORA_READ_ALL, &e);
		unsigned char *buf2 = encode(b, &n2);
		CHECK(n2 == n && memcmp(buf, buf2, n) == 0, "re-encode is byte-identical");
		free(buf2);
		lora_adapter_free(b);
		/* every truncation point fails, with a truncation message once past the magic */
		for (size_t cut = 0; cut < n; cut++) {
			int rc = decode(&b, buf, cut, LORA_READ_ALL, &e);
			CHECK(rc == LORA_EFORMAT && b == NULL, "cut at %zu accepted", cut);
			if (cut >= 8)
				CHECK(strstr(e.msg, "truncated") != NULL, "cut at %zu: %s", cut, e.msg);
		}
		/* every single flipped byte is detected */
		for (size_t at = 0; at < n; at++) {
			buf[at] ^= 0x5a;
			int rc = decode(&b, buf, n, LORA_READ_ALL, &e);
			CHECK(rc != 0 && b == NULL, "flip at %zu accepted", at);
			buf[at] ^= 0x5a;
		}
		/* trailing garbage */
		unsigned char *longer = malloc(n + 1);
		memcpy(longer, buf, n);
		longer[n] = 0;
		CHECK(decode(&b, longer, n + 1, LORA_READ_ALL, &e) == LORA_EFORMAT &&
		      strstr(e.msg, "after the last tensor"), "trailing byte: %s", e.msg);
		free(longer);
		free(buf);
		lora_adapter_free(a);
	}

	/* the optional parts: round trips, modes, truncation, corruption */
	for (int k = 0; k < 3; k++) {
		lora_adapter *a = sample_full(types[k], 20 + k);
		size_t n, n2;
		unsigned char *buf = encode(a, &n);
		CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == 0, "read full %s: %s", lora_dtype_name(types[k]), e.msg);
		CHECK(b && same_full(a, b), "full round trip %s", lora_dtype_name(types[k]));
		unsigned char *buf2 = b ? encode(b, &n2) : NULL;
		CHECK(buf2 && n2 == n && memcmp(buf, buf2, n) == 0, "full re-encode is byte-identical");
		free(buf2);
		lora_adapter_free(b);
		CHECK(decode(&b, buf, n, LORA_READ_HEADER, &e) == 0 && b->layers[0].has_magnitude &&
		      b->layers[0].has_bias && !b->layers[1].has_magnitude && !b->layers[0].magnitude &&
		      b->nextras == 4 && b->extras[3].nbytes == 12 && !b->extras[0].data && b->fan_in_fan_out &&
		      b->file_bytes == n,
		      "full header only: %s", e.msg);
		CHECK(b && lora_adapter_dora_layers(b) == 2 && lora_adapter_bias_layers(b) == 2, "counts from header");
		lora_adapter_free(b);
		CHECK(decode(&b, buf, n, LORA_READ_VERIFY, &e) == 0 && !b->layers[0].magnitude && !b->extras[1].data,
		      "full verify: %s", e.msg);
		lora_adapter_free(b);
		for (size_t cut = 8; cut < n; cut++) {
			int rc = decode(&b, buf, cut, LORA_READ_ALL, &e);
			CHECK(rc == LORA_EFORMAT && b == NULL && strstr(e.msg, "truncated"), "full cut at %zu: %s", cut, e.msg);
		}
		for (size_t at = 0; at < n; at++) {
			buf[at] ^= 0x21;
			int rc = decode(&b, buf, n, LORA_READ_ALL, &e);
			CHECK(rc != 0 && b == NULL, "full flip at %zu accepted", at);
			buf[at] ^= 0x21;
		}
		free(buf);
		lora_adapter_free(a);
	}
	{
		/* payload order: every A and B first (what version-1 readers
		 * without these keys expect), then magnitudes and biases, then
		 * extras; the last payload is the last extra's */
		lora_adapter *a = sample_full(LORA_F32, 5);
		size_t n;
		unsigned char *buf = encode(a, &n);
		buf[n - 1] ^= 1;
		CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
		      strcmp(e.msg, "x.lora: extra 'mask': CRC mismatch (corrupt data)") == 0, "extra flip: %s", e.msg);
		free(buf);
		/* drop the extras and the bias: the magnitude of layer 2 is last */
		for (size_t i = 0; i < a->nextras; i++) {
			free(a->extras[i].name);
			free(a->extras[i].data);
		}
		a->nextras = 0;
		for (size_t i = 0; i < a->nlayers; i++) {
			free(a->layers[i].bias);
			a->layers[i].bias = NULL;
		}
		buf = encode(a, &n);
		buf[n - 1] ^= 1;
		CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
		      strcmp(e.msg, "x.lora: layer 'w' magnitude: CRC mismatch (corrupt data)") == 0, "magnitude flip: %s",
		      e.msg);
		free(buf);
		/* values are checked at write time, the vector by index */
		a->layers[2].magnitude[2] = 0.0f / 0.0f;
		FILE *nul = fopen("/dev/null", "wb");
		CHECK(lora_lorafile_write(a, nul, "out", NULL, &e) == LORA_EINVAL &&
		      strcmp(e.msg, "layer 'w' magnitude: non-finite value at [2]") == 0, "nan magnitude: %s", e.msg);
		a->layers[2].magnitude[2] = 1.0f;
		/* a value that is finite in f32 but not at the storage dtype */
		a->dtype = LORA_F16;
		a->layers[2].A[4] = 70000.0f;
		CHECK(lora_lorafile_write(a, nul, "out", NULL, &e) == LORA_EINVAL &&
		      strcmp(e.msg, "layer 'w' A: value 70000 at [0,4] overflows f16") == 0, "f16 overflow: %s", e.msg);
		a->dtype = LORA_BF16;
		CHECK(lora_lorafile_write(a, nul, "out", NULL, &e) == 0, "70000 fits bf16: %s", e.msg);
		a->layers[2].A[4] = 3.4e38f;
		CHECK(lora_lorafile_write(a, nul, "out", NULL, &e) == LORA_EINVAL &&
		      strcmp(e.msg, "layer 'w' A: value 3.4e+38 at [0,4] overflows bf16") == 0, "bf16 overflow: %s", e.msg);
		fclose(nul);
		lora_adapter_free(a);
	}
	{
		/* without the optional parts the header has none of their keys,
		 * so such files are what earlier writers produced */
		lora_adapter *a = sample(LORA_F16, 3);
		size_t n;
		unsigned char *buf = encode(a, &n);
		const char *keys[] = {"magnitude", "bias", "extras", "fan_in_fan_out", "peft_config"};
		for (size_t i = 0; i < 5; i++)
			CHECK(!memmem(buf, n, keys[i], strlen(keys[i])), "plain adapter writes '%s'", keys[i]);
		free(buf);
		lora_adapter_free(a);
	}

	/* a flipped payload byte names the layer and the factor */
	lora_adapter *a = sample(LORA_F32, 1);
	size_t n;
	unsigned char *buf = encode(a, &n);
	buf[n - 3] ^= 1;
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
	      strcmp(e.msg, "x.lora: layer 'w' B: CRC mismatch (corrupt data)") == 0, "payload flip: %s", e.msg);
	buf[n - 3] ^= 1;
	buf[0] = 'P';
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
	      strcmp(e.msg, "x.lora: not a .lora file (bad magic)") == 0, "magic: %s", e.msg);
	free(buf);

	/* non-finite values are refused at write time, naming the element */
	a->layers[1].A[5] = 1.0f / 0.0f;
	FILE *nul = fopen("/dev/null", "wb");
	CHECK(lora_lorafile_write(a, nul, "out", NULL, &e) == LORA_EINVAL &&
	      strcmp(e.msg, "layer 'model.layers.1.q_proj' A: non-finite value at [0,5]") == 0, "inf: %s", e.msg);
	fclose(nul);
	lora_adapter_free(a);

	/* hostile and odd headers */
	const char *ok = "{\"dtype\":\"f32\",\"layers\":[],\"future_key\":{\"x\":[1,2]}}";
	buf = craft(ok, 1, NULL, 0, &n);
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == 0 && b->nlayers == 0, "unknown keys tolerated: %s", e.msg);
	lora_adapter_free(b);
	free(buf);
	buf = craft(ok, 2, NULL, 0, &n);
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
	      strcmp(e.msg, "x.lora: unsupported .lora version 2 (this build reads version 1)") == 0, "version: %s", e.msg);
	free(buf);
	/* a 2^31 x 2^31 layer at rank 2^31 with a tiny file: refused without allocating */
	const char *huge = "{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2147483648,2147483648],"
	                   "\"rank\":2147483648,\"alpha\":1,\"A\":{\"zsize\":10,\"crc32\":0},\"B\":{\"zsize\":10,\"crc32\":0}}]}";
	buf = craft(huge, 1, "0123456789", 10, &n);
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
	      strcmp(e.msg, "x.lora: layer 'w': shape 2147483648x2147483648 at rank 2147483648 is too large") == 0,
	      "overflowing claim: %s", e.msg);
	free(buf);
	/* 2^51 elements fit in size_t but not in memory: only what arrives is allocated */
	const char *big = "{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2147483648,2147483648],"
	                  "\"rank\":1048576,\"alpha\":1,\"A\":{\"zsize\":10,\"crc32\":0},\"B\":{\"zsize\":10,\"crc32\":0}}]}";
	buf = craft(big, 1, "0123456789", 10, &n);
	lora_lorafile_set_max_payload(UINT64_MAX);
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == LORA_EFORMAT &&
	      strcmp(e.msg, "x.lora: layer 'w' A: CRC mismatch (corrupt data)") == 0, "huge claim: %s", e.msg);
	lora_lorafile_set_max_payload(LORA_FILE_MAX_PAYLOAD);
	free(buf);
	const char *bad[][2] = {
		{"[1,2]", "x.lora: header is not a JSON object"},
		/* a key twice: the last stands, as in Python */
		{"{\"dtype\":\"f32\",\"layers\":[],\"dtype\":\"f64\"}", "x.lora: header: 'dtype' must be f32, f16 or bf16"},
		{"{\"layers\":[]}", "x.lora: header: 'dtype' must be f32, f16 or bf16"},
		{"{\"dtype\":\"f32\"}", "x.lora: header: 'layers' must be an array"},
		{"{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2,-1],\"rank\":1,\"alpha\":1}]}",
		 "x.lora: layer 'w': shape must be two integers in [1, 2^31]"},
		{"{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2,2],\"rank\":0,\"alpha\":1}]}",
		 "x.lora: layer 'w': 'rank' must be an integer in [1, 2^31]"},
		{"{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2,2],\"rank\":1,\"alpha\":1,"
		 "\"A\":{\"zsize\":99999,\"crc32\":0},\"B\":{\"zsize\":1,\"crc32\":0}}]}",
		 "x.lora: layer 'w' A: 'zsize' and 'crc32' must be integers in range"},
		{"{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2,2],\"rank\":1,\"alpha\":1,"
		 "\"A\":{\"zsize\":1,\"crc32\":0},\"B\":{\"zsize\":1,\"crc32\":0}},{\"name\":\"v\",\"shape\":[2,2],"
		 "\"rank\":1,\"alpha\":1,\"A\":{\"zsize\":1,\"crc32\":0},\"B\":{\"zsize\":1,\"crc32\":0}},{\"name\":\"w\","
		 "\"shape\":[2,2],\"rank\":1,\"alpha\":1,\"A\":{\"zsize\":1,\"crc32\":0},\"B\":{\"zsize\":1,\"crc32\":0}}]}",
		 "x.lora: header: layer 'w' appears twice"},
		{"{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2,2],\"rank\":1,\"alpha\":1,"
		 "\"A\":{\"zsize\":1,\"crc32\":0},\"B\":{\"zsize\":1,\"crc32\":0},\"magnitude\":{\"zsize\":73,\"crc32\":0}}]}",
		 "x.lora: layer 'w' magnitude: 'zsize' and 'crc32' must be integers in range"},
		{"{\"dtype\":\"f32\",\"layers\":[{\"name\":\"w\",\"shape\":[2,2],\"rank\":1,\"alpha\":1,"
		 "\"A\":{\"zsize\":1,\"crc32\":0},\"B\":{\"zsize\":1,\"crc32\":0},\"bias\":[]}]}",
		 "x.lora: layer 'w' bias: 'zsize' and 'crc32' must be integers in range"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"fan_in_fan_out\":1}",
		 "x.lora: header: 'fan_in_fan_out' must be true or false"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"peft_config\":{}}", "x.lora: header: 'peft_config' must be a string"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":{}}", "x.lora: header: 'extras' must be an array"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"dtype\":\"F32\"}]}", "x.lora: header: extra 0 has no name"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[],"
		 "\"zsize\":9,\"crc32\":0}]}",
		 "x.lora: extra 'x': 'dtype' must be a safetensors dtype name"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"name\":\"x\",\"dtype\":\"F32\",\"shape\":[1.5]}]}",
		 "x.lora: extra 'x': 'shape' must be an array of at most 8 non-negative integers"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"name\":\"x\",\"dtype\":\"F32\",\"shape\":[1,2,3,4,5,6,7,8,9]}]}",
		 "x.lora: extra 'x': 'shape' must be an array of at most 8 non-negative integers"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"name\":\"x\",\"dtype\":\"I64\","
		 "\"shape\":[4294967296,4294967296]}]}",
		 "x.lora: extra 'x': shape is too large"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"name\":\"x\",\"dtype\":\"U8\",\"shape\":[3],"
		 "\"zsize\":68,\"crc32\":0}]}",
		 "x.lora: extra 'x': 'zsize' and 'crc32' must be integers in range"},
		{"{\"dtype\":\"f32\",\"layers\":[],\"extras\":[{\"name\":\"x\",\"dtype\":\"U8\",\"shape\":[3],"
		 "\"zsize\":9,\"crc32\":0},{\"name\":\"x\",\"dtype\":\"U8\",\"shape\":[3],\"zsize\":9,\"crc32\":0}]}",
		 "x.lora: header: extra 'x' appears twice"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		buf = craft(bad[i][0], 1, NULL, 0, &n);
		CHECK(decode(&b, buf, n, LORA_READ_HEADER, &e) == LORA_EFORMAT && strcmp(e.msg, bad[i][1]) == 0,
		      "bad header %zu: %s", i, e.msg);
		free(buf);
	}

	/* The payload limit counts the file's total: every tensor of sample()
	 * at f32 is at most 600 bytes, 1212 in all (192 + 256 + 64 + 64 + 600 +
	 * 36), and the header alone is read whatever the limit. */
	a = sample(LORA_F32, 3);
	buf = encode(a, &n);
	lora_adapter_free(a);
	CHECK(lora_lorafile_max_payload() == ((uint64_t)16 << 30), "default limit");
	lora_lorafile_set_max_payload(1212);
	CHECK(decode(&b, buf, n, LORA_READ_ALL, &e) == 0, "total at the limit: %s", e.msg);
	lora_adapter_free(b);
	lora_lorafile_set_max_payload(600);
	for (int mode = LORA_READ_ALL; mode <= LORA_READ_VERIFY; mode += LORA_READ_VERIFY) {
		CHECK(decode(&b, buf, n, mode, &e) == LORA_EINVAL &&
		          strcmp(e.msg, "x.lora: layer 'w' A: the payloads up to here decompress to 1176 bytes, past the "
		                        "limit of 600; raise it with LORA_MAX_PAYLOAD=SIZE (e.g. 32G)") == 0 && !b,
		      "sum past the limit, mode %d: %s", mode, e.msg);
	}
	lora_lorafile_set_max_payload(1211);
	CHECK(decode(&b, buf, n, LORA_READ_VERIFY, &e) == LORA_EINVAL && strstr(e.msg, "layer 'w' B: ") &&
	          strstr(e.msg, "to 1212 bytes, past the limit of 1211;"),
	      "one byte over: %s", e.msg);
	lora_lorafile_set_max_payload(1);
	CHECK(decode(&b, buf, n, LORA_READ_HEADER, &e) == 0 && b->nlayers == 3, "header only: %s", e.msg);
	lora_adapter_free(b);
	lora_lorafile_set_max_payload(LORA_FILE_MAX_PAYLOAD);
	free(buf);
	DONE();
}
