/* Fuzz the GGUF reader (lora_gguf_open), the GGUF adapter reader
 * (lora_gguflora_read) on top of it and lora-inspect's report of a GGUF
 * model (lora_report_gguf_model): the input is one file. A file it
 * accepts must be what its contract says: tensors back to back in the data
 * section, each padded to the alignment and inside the file, every value
 * readable through the accessors, every name found. It must also survive a
 * round trip: written again by lora_gguf_writer (when its strings hold no
 * NUL, which C strings cannot carry) and read back, it is the same file
 * value for value. An adapter read in full must agree with its header-only
 * read, hold finite factors, and be written and read back to the same
 * factors (as qwen2, whose rows are not permuted; folded f32 lora_B within
 * a rounding). */
#include <math.h>

#include "fuzz.h"
#include "io/gguf.h"
#include "io/gguflora.h"
#include "ops/report.h"

/* The accepted file as writer specs (pointers into g), or 0 when a string
 * holds a NUL or a scalar f32 is a NaN, which the writer's double cannot
 * carry bit for bit. */
static int to_specs(const lora_gguf *g, lora_gguf_kvspec *kv, lora_gguf_spec *t, char ***strs)
{
	*strs = calloc(g->nkv ? g->nkv : 1, sizeof **strs);
	FUZZ_CHECK(*strs != NULL);
	for (size_t i = 0; i < g->nkv; i++) {
		const lora_gguf_kv *x = &g->kv[i];
		lora_gguf_kvspec *k = &kv[i];
		k->key = x->key, k->type = x->type, k->elem = x->elem, k->n = x->n;
		if (x->elem == LORA_GGUF_STRING) {
			char **s = calloc(x->n ? x->n : 1, sizeof *s);
			FUZZ_CHECK(s != NULL);
			(*strs)[i] = (char *)s;
			for (size_t j = 0; j < x->n; j++) {
				if (memchr(x->str[j], 0, x->len[j]))
					return 0;
				s[j] = strndup((const char *)x->str[j], x->len[j]);
			}
			if (x->type == LORA_GGUF_ARRAY)
				k->v.arr = s;
			else
				k->v.s = s[0];
		} else if (x->type == LORA_GGUF_ARRAY) {
			k->v.arr = x->data; /* little-endian bytes, as the host holds them */
		} else {
			uint64_t u = 0;
			static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
			memcpy(&u, x->data, (size_t)size[x->type]);
			if (x->type == LORA_GGUF_F32) {
				float f;
				memcpy(&f, &u, 4);
				if (isnan(f))
					return 0; /* through a double, a signalling NaN comes back quiet */
				k->v.f = f;
			} else if (x->type == LORA_GGUF_F64) {
				memcpy(&k->v.f, &u, 8);
			} else if (x->type == LORA_GGUF_I8 || x->type == LORA_GGUF_I16 || x->type == LORA_GGUF_I32) {
				int sh = 64 - 8 * size[x->type];
				k->v.i = (int64_t)(u << sh) >> sh;
			} else {
				k->v.u = u;
			}
		}
	}
	for (size_t i = 0; i < g->ntensors; i++) {
		const lora_gguf_tensor *x = &g->tensors[i];
		t[i].name = x->name, t[i].type = x->type, t[i].ndim = x->ndim ? x->ndim : 1;
		memcpy(t[i].ne, x->ne, sizeof t[i].ne);
	}
	return 1;
}

static void free_strs(const lora_gguf *g, char **strs)
{
	for (size_t i = 0; i < g->nkv; i++) {
		char **s = (char **)strs[i];
		for (size_t j = 0; s && j < g->kv[i].n; j++)
			free(s[j]);
		free(s);
	}
	free(strs);
}

static void same(const lora_gguf *a, const lora_gguf *b)
{
	FUZZ_CHECK(a->nkv == b->nkv && a->ntensors == b->ntensors && a->alignment == b->alignment);
	for (size_t i = 0; i < a->nkv; i++) {
		const lora_gguf_kv *x = &a->kv[i], *y = &b->kv[i];
		FUZZ_CHECK(strcmp(x->key, y->key) == 0 && x->type == y->type && x->elem == y->elem && x->n == y->n);
		for (size_t j = 0; j < x->n && x->elem == LORA_GGUF_STRING; j++)
			FUZZ_CHECK(x->len[j] == y->len[j] && !memcmp(x->str[j], y->str[j], x->len[j]));
		static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
		if (x->elem != LORA_GGUF_STRING)
			FUZZ_CHECK(x->n == 0 || !memcmp(x->data, y->data, x->n * (size_t)size[x->elem]));
	}
	for (size_t i = 0; i < a->ntensors; i++) {
		const lora_gguf_tensor *x = &a->tensors[i], *y = &b->tensors[i];
		FUZZ_CHECK(strcmp(x->name, y->name) == 0 && x->type == y->type && x->nbytes == y->nbytes);
		FUZZ_CHECK(!memcmp(x->ne, y->ne, sizeof x->ne) && !memcmp(x->data, y->data, x->nbytes));
	}
}

static void round_trip(const lora_gguf *g)
{
	lora_gguf_kvspec *kv = calloc(g->nkv ? g->nkv : 1, sizeof *kv);
	lora_gguf_spec *t = calloc(g->ntensors ? g->ntensors : 1, sizeof *t);
	char **strs = NULL;
	FUZZ_CHECK(kv && t);
	if (to_specs(g, kv, t, &strs)) {
		char path[4400];
		snprintf(path, sizeof path, "%s/out.gguf", fuzz_dir());
		lora_gguf_writer *w;
		lora_gguf *b = NULL;
		lora_err e = {0};
		int rc = lora_gguf_writer_open(&w, path, kv, g->nkv, t, g->ntensors, 1, &e);
		for (size_t i = 0; !rc && i < g->ntensors; i++)
			rc = lora_gguf_writer_write(w, g->tensors[i].data, g->tensors[i].nbytes, &e);
		if (!rc)
			rc = lora_gguf_writer_commit(w, &e);
		if (rc)
			fprintf(stderr, "round trip: %s\n", e.msg);
		FUZZ_CHECK(rc == 0);
		rc = lora_gguf_open(&b, path, &e);
		if (rc)
			fprintf(stderr, "round trip: %s\n", e.msg);
		FUZZ_CHECK(rc == 0);
		same(g, b);
		lora_gguf_close(b);
	}
	free_strs(g, strs);
	free(kv);
	free(t);
}

static void adapter(const char *path)
{
	lora_adapter *h = NULL, *a = NULL, *b = NULL;
	lora_gguflora_base base = {"llama", 2, 1};
	lora_err e = {0};
	int rh = lora_gguflora_read(&h, path, NULL, 1, &e);
	if (rh)
		fuzz_check_error(rh, &e);
	int ra = lora_gguflora_read(&a, path, &base, 0, &e);
	if (ra) {
		fuzz_check_error(ra, &e);
		FUZZ_CHECK(a == NULL);
	} else {
		FUZZ_CHECK(rh == 0 && h->nlayers == a->nlayers);
		for (size_t i = 0; i < a->nlayers; i++) {
			const lora_layer *l = &a->layers[i];
			FUZZ_CHECK(h->layers[i].rank == l->rank && h->layers[i].alpha == l->alpha);
			FUZZ_CHECK(lora_dtype_find_nonfinite(l->A, l->rank * l->in) == l->rank * l->in);
			FUZZ_CHECK(lora_dtype_find_nonfinite(l->B, l->out * l->rank) == l->out * l->rank);
		}
		char out[4400];
		snprintf(out, sizeof out, "%s/back.gguf", fuzz_dir());
		lora_gguflora_base q = {"qwen2", 0, 0};
		if (lora_gguflora_write(a, out, &q, 1, &e) == 0) {
			int rc = lora_gguflora_read(&b, out, &q, 0, &e);
			if (rc)
				fprintf(stderr, "round trip: %s\n", e.msg);
			FUZZ_CHECK(rc == 0 && b->nlayers == a->nlayers && b->rslora == a->rslora);
			for (size_t i = 0; i < a->nlayers; i++) {
				const lora_layer *x = &a->layers[i], *y = &b->layers[i];
				FUZZ_CHECK(!strcmp(x->name, y->name) && x->alpha == y->alpha && x->rank == y->rank);
				FUZZ_CHECK(!memcmp(x->A, y->A, x->rank * x->in * sizeof *x->A));
				for (size_t k = 0; k < x->out * x->rank; k++)
					FUZZ_CHECK(fabsf(x->B[k] - y->B[k]) <= 1e-6f * fabsf(x->B[k]) + 1e-37f); /* subnormals lose bits */
			}
		} else {
			fuzz_check_error(LORA_EINVAL, &e);
		}
	}
	lora_adapter_free(h);
	lora_adapter_free(a);
	lora_adapter_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_file("x.gguf", data, size);
	lora_gguf *g = NULL;
	lora_err e = {0};
	int rc = lora_gguf_open(&g, path, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(g == NULL);
		FUZZ_CHECK(strstr(e.msg, path) == e.msg);
		return 0;
	}
	FUZZ_CHECK(g->file_size == size && g->data_offset <= size);
	size_t pos = 0, sum = 0;
	for (size_t i = 0; i < g->ntensors; i++) {
		const lora_gguf_tensor *t = &g->tensors[i];
		FUZZ_CHECK(t->offset == pos && t->offset % g->alignment == 0);
		FUZZ_CHECK(g->data_offset + t->offset + t->nbytes <= size);
		FUZZ_CHECK(lora_gguf_find(g, t->name) == t && strlen(t->name) <= LORA_GGUF_MAX_NAME);
		const unsigned char *p = t->data;
		for (size_t k = 0; k < t->nbytes; k++)
			sum += p[k];
		float *f = lora_shape_alloc(t->nelem, sizeof *f);
		if (f)
			lora_gguf_to_f32(f, t);
		free(f);
		pos += (t->nbytes + g->alignment - 1) / g->alignment * g->alignment;
	}
	/* lora-inspect's report of a GGUF model, text and JSON, reads any
	 * accepted file */
	FILE *null = fopen("/dev/null", "w");
	FUZZ_CHECK(null != NULL);
	for (int json = 0; json < 2; json++) {
		lora_report_opts ro = {.json = json, .per_layer = 1};
		rc = lora_report_gguf_model(null, path, g, &ro, &e);
		FUZZ_CHECK(rc == 0 || rc == LORA_ENOMEM);
	}
	fclose(null);
	for (size_t i = 0; i < g->nkv; i++) {
		const lora_gguf_kv *kv = &g->kv[i];
		FUZZ_CHECK(lora_gguf_kv_find(g, kv->key) == kv);
		for (size_t j = 0; j < kv->n; j++) {
			uint64_t u;
			double d;
			int b;
			const char *s;
			size_t len;
			int kinds = !lora_gguf_kv_uint(kv, j, &u) + !lora_gguf_kv_float(kv, j, &d) + !lora_gguf_kv_bool(kv, j, &b) +
			            !lora_gguf_kv_str(kv, j, &s, &len);
			FUZZ_CHECK(kinds <= 1);
			if (!lora_gguf_kv_str(kv, j, &s, &len))
				for (size_t k = 0; k < len; k++)
					sum += (unsigned char)s[k];
		}
	}
	round_trip(g);
	lora_gguf_close(g);
	adapter(fuzz_file("x.gguf", data, size));
	return (int)(sum & 0);
}
