/* mini-merge: the merge arithmetic done independently, for the test that
 * evaluating base + adapters at run time equals evaluating the merge.
 *
 *   mini-merge BASE OUTDIR ADAPTER[:SCALE]...
 *
 * Writes OUTDIR/config.json (copied) and OUTDIR/model.safetensors with
 * every tensor of BASE in f32; each adapted weight becomes
 * W + sum_i k_i * s_i * B_i A_i, accumulated naively in double. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/load.h"
#include "io/ckpt.h"

static void fail(const char *msg)
{
	fprintf(stderr, "mini-merge: %s\n", msg);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: mini-merge BASE OUTDIR ADAPTER[:SCALE]...\n");
		return 2;
	}
	lora_err e;
	lora_ckpt *m;
	if (lora_ckpt_open(&m, argv[1], &e))
		fail(e.msg);
	size_t na = (size_t)(argc - 3);
	lora_adapter **ad = calloc(na + 1, sizeof *ad);
	double *k = calloc(na + 1, sizeof *k);
	for (size_t i = 0; i < na; i++) {
		char *path;
		if (lora_load_spec(argv[3 + i], &path, &k[i], &e) || lora_load_adapter(&ad[i], path, &e))
			fail(e.msg);
		free(path);
	}
	mkdir(argv[2], 0777);
	char out[4096];
	if (m->config_path) {
		snprintf(out, sizeof out, "%s/config.json", argv[2]);
		FILE *in = fopen(m->config_path, "rb"), *o = fopen(out, "wb");
		if (!in || !o)
			fail("cannot copy config.json");
		int ch;
		while ((ch = fgetc(in)) != EOF)
			fputc(ch, o);
		fclose(in);
		fclose(o);
	}
	lora_st_spec *sp = calloc(m->ntensors, sizeof *sp);
	for (size_t i = 0; i < m->ntensors; i++) {
		sp[i].name = m->tensors[i]->name;
		sp[i].dtype = LORA_F32;
		sp[i].ndim = m->tensors[i]->ndim;
		memcpy(sp[i].shape, m->tensors[i]->shape, sizeof sp[i].shape);
	}
	snprintf(out, sizeof out, "%s/model.safetensors", argv[2]);
	lora_st_writer *w;
	if (lora_st_writer_open(&w, out, sp, m->ntensors, NULL, 0, 1, &e))
		fail(e.msg);
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		float *x = malloc((t->nelem ? t->nelem : 1) * sizeof *x);
		lora_dtype_to_f32(x, t->data, t->dtype, t->nelem);
		size_t n = strlen(t->name);
		for (size_t a = 0; a < na && n > 7 && strcmp(t->name + n - 7, ".weight") == 0; a++) {
			char mod[1024];
			snprintf(mod, sizeof mod, "%.*s", (int)(n - 7), t->name);
			const lora_layer *l = lora_adapter_find(ad[a], mod);
			if (!l)
				continue;
			if (t->ndim != 2 || t->shape[0] != l->out || t->shape[1] != l->in)
				fail("shape mismatch");
			double s = k[a] * lora_adapter_layer_scale(ad[a], l);
			for (size_t r = 0; r < l->out; r++)
				for (size_t c = 0; c < l->in; c++) {
					double d = 0;
					for (size_t q = 0; q < l->rank; q++)
						d += (double)l->B[r * l->rank + q] * l->A[q * l->in + c];
					x[r * l->in + c] = (float)((double)x[r * l->in + c] + s * d);
				}
		}
		if (lora_st_writer_write(w, x, t->nelem * sizeof *x, &e))
			fail(e.msg);
		free(x);
	}
	if (lora_st_writer_commit(w, &e))
		fail(e.msg);
	for (size_t i = 0; i < na; i++)
		lora_adapter_free(ad[i]);
	free(ad);
	free(k);
	free(sp);
	lora_ckpt_close(m);
	return 0;
}
