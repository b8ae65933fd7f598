/* The model against an independent reference: loss and every LoRA
 * gradient computed by PyTorch (tests/ref/llama_ref.py, from Hugging
 * Face's modeling semantics, in float64) for the fixture cases under
 * DIR (tests/fixtures/model). Relative error below 1e-4 everywhere.
 *
 *   test_model_ref DIR */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "math/blas.h"
#include "check.h"
#include "model/llama.h"
#include "io/ckpt.h"

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	rewind(f);
	char *s = malloc((size_t)len + 1);
	*n = fread(s, 1, (size_t)len, f);
	s[*n] = 0;
	fclose(f);
	return s;
}

/* ||got - want|| / ||want|| and max |got - want| / max |want|. */
static double rel_err(const float *got, const float *want, size_t n, double *maxrel)
{
	double d = 0, w = 0, md = 0, mw = 0;
	for (size_t i = 0; i < n; i++) {
		double x = (double)got[i] - want[i];
		d += x * x, w += (double)want[i] * want[i];
		md = fabs(x) > md ? fabs(x) : md;
		mw = fabs(want[i]) > mw ? fabs(want[i]) : mw;
	}
	*maxrel = mw > 0 ? md / mw : md;
	return w > 0 ? sqrt(d / w) : sqrt(d);
}

static double cosine(const float *x, const float *y, size_t n)
{
	double xy = 0, xx = 0, yy = 0;
	for (size_t i = 0; i < n; i++)
		xy += (double)x[i] * y[i], xx += (double)x[i] * x[i], yy += (double)y[i] * y[i];
	return xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : xx == yy;
}

/* Loss of a training forward with a attached to m, and its gradients. */
static double train_step(lora_llama *m, lora_adapter *a, const int32_t *in, const int32_t *tg, size_t B, size_t T,
                         const char *name)
{
	lora_err e;
	double loss = NAN;
	CHECK(lora_llama_attach(m, a, 1, 1, "fixture", &e) == 0, "%s: %s", name, e.msg);
	CHECK(lora_llama_plan(m, B, T, LORA_LLAMA_TRAIN, &e) == 0, "%s", e.msg);
	lora_llama_zero_grad(m);
	CHECK(lora_llama_forward(m, in, tg, &loss, NULL, &e) == 0, "%s", e.msg);
	CHECK(lora_llama_backward(m, &e) == 0, "%s", e.msg);
	return loss;
}

/* The same case in bf16 compute: the loss within 1e-2 of PyTorch's (f32
 * weights are rounded to bf16 here, the activations of every big product
 * too) and every gradient's cosine with PyTorch's at least 0.99. On a CPU
 * where oneDNN has no bf16, the clear error instead. */
static void run_bf16(const lora_ckpt *ck, const char *name, lora_adapter *a, const lora_st *gr, const int32_t *in,
                     const int32_t *tg, size_t B, size_t T, double want_loss)
{
	lora_llama *m = NULL;
	lora_err e;
	double worst = 1;
	CHECK(lora_llama_open(&m, ck, &e) == 0, "%s: %s", name, e.msg);
	int rc = lora_llama_set_compute(m, LORA_LLAMA_BF16, &e);
	if (lora_blas_bf16() == LORA_BLAS_BF16_NONE) {
		CHECK(rc == LORA_EINVAL && strstr(e.msg, "bf16 compute needs a CPU with AVX-512") &&
		          lora_llama_compute_dtype(m) == LORA_F32,
		      "bf16 without bf16 in oneDNN: %d %s", rc, e.msg);
		lora_llama_free(m);
		return;
	}
	CHECK(rc == 0 && lora_llama_compute_dtype(m) == LORA_BF16, "%s: bf16: %s", name, e.msg);
	double loss = train_step(m, a, in, tg, B, T, name), rl = fabs(loss - want_loss) / want_loss;
	CHECK(rl < 1e-2, "%s: bf16 loss %.9f, PyTorch %.9f", name, loss, want_loss);
	for (size_t i = 0; i < a->nlayers; i++) {
		float *d[2];
		lora_llama_grad(m, i, &d[0], &d[1]);
		for (int k = 0; k < 2; k++) {
			char key[256];
			snprintf(key, sizeof key, "%s.lora_%c", a->layers[i].name, k ? 'B' : 'A');
			const lora_st_tensor *t = lora_st_find(gr, key);
			float *want = malloc(t->nelem * sizeof *want);
			lora_dtype_to_f32(want, t->data, t->dtype, t->nelem);
			double c = cosine(d[k], want, t->nelem);
			CHECK(c >= 0.99, "%s: bf16 gradient %s: cosine %.4f with PyTorch's", name, key, c);
			worst = c < worst ? c : worst;
			free(want);
		}
	}
	printf("# %-16s bf16: loss rel %.1e, worst gradient cosine %.5f\n", name, rl, worst);
	lora_llama_free(m);
}

static void run_case(const char *root, const char *name)
{
	char path[1024];
	size_t n;
	lora_err e;
	snprintf(path, sizeof path, "%s/%s/expect.json", root, name);
	char *text = slurp(path, &n);
	CHECK(text != NULL, "%s: cannot read", path);
	if (!text)
		return;
	cJSON *j = cJSON_Parse(text);
	free(text);
	size_t B = (size_t)cJSON_GetObjectItem(j, "B")->valuedouble, T = (size_t)cJSON_GetObjectItem(j, "T")->valuedouble;
	double want_loss = cJSON_GetObjectItem(j, "loss")->valuedouble;
	double want_base = cJSON_GetObjectItem(j, "loss_base")->valuedouble;
	const cJSON *toks = cJSON_GetObjectItem(j, "tokens");
	int32_t *in = malloc(B * T * sizeof *in), *tg = malloc(B * T * sizeof *tg);
	for (size_t b = 0; b < B; b++)
		for (size_t t = 0; t < T; t++) {
			in[b * T + t] = (int32_t)cJSON_GetArrayItem(toks, (int)(b * T + t))->valuedouble;
			tg[b * T + t] = (int32_t)cJSON_GetArrayItem(toks, (int)(b * T + t + 1))->valuedouble;
		}

	/* The adapter, straight from the PEFT safetensors and the manifest. */
	lora_st *ad, *gr;
	snprintf(path, sizeof path, "%s/%s/adapter/adapter_model.safetensors", root, name);
	CHECK(lora_st_open(&ad, path, &e) == 0, "%s", e.msg);
	snprintf(path, sizeof path, "%s/%s/grads.safetensors", root, name);
	CHECK(lora_st_open(&gr, path, &e) == 0, "%s", e.msg);
	lora_adapter *a = lora_adapter_new();
	a->rslora = cJSON_IsTrue(cJSON_GetObjectItem(j, "rslora"));
	const cJSON *ls = cJSON_GetObjectItem(j, "layers");
	for (const cJSON *l = ls->child; l; l = l->next) {
		const char *ln = cJSON_GetObjectItem(l, "name")->valuestring;
		size_t r = (size_t)cJSON_GetObjectItem(l, "rank")->valuedouble;
		double alpha = cJSON_GetObjectItem(l, "alpha")->valuedouble;
		char key[256];
		snprintf(key, sizeof key, "base_model.model.%s.lora_A.weight", ln);
		const lora_st_tensor *tA = lora_st_find(ad, key);
		snprintf(key, sizeof key, "base_model.model.%s.lora_B.weight", ln);
		const lora_st_tensor *tB = lora_st_find(ad, key);
		lora_layer *y = lora_adapter_add(a, ln, tB->shape[0], tA->shape[1], r, alpha, 0, &e);
		lora_dtype_to_f32(y->A, tA->data, tA->dtype, tA->nelem);
		lora_dtype_to_f32(y->B, tB->data, tB->dtype, tB->nelem);
	}

	snprintf(path, sizeof path, "%s/%s", root, name);
	lora_ckpt *ck;
	lora_llama *m = NULL, *base = NULL;
	CHECK(lora_ckpt_open(&ck, path, &e) == 0, "%s", e.msg);
	CHECK(lora_llama_open(&m, ck, &e) == 0, "%s: %s", name, e.msg);
	CHECK(lora_llama_open(&base, ck, &e) == 0, "%s: %s", name, e.msg);
	if (!m || !base) {
		lora_ckpt_close(ck);
		return;
	}

	double loss;
	CHECK(lora_llama_plan(base, B, T, 0, &e) == 0, "%s", e.msg);
	CHECK(lora_llama_forward(base, in, tg, &loss, NULL, &e) == 0, "%s", e.msg);
	double rb = fabs(loss - want_base) / want_base;
	CHECK(rb < 1e-4, "%s: base loss %.9f, PyTorch %.9f", name, loss, want_base);

	loss = train_step(m, a, in, tg, B, T, name);
	double rl = fabs(loss - want_loss) / want_loss;
	CHECK(rl < 1e-4, "%s: loss %.9f, PyTorch %.9f", name, loss, want_loss);
	double worst = 0, worst_max = 0;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		float *dA, *dB;
		lora_llama_grad(m, i, &dA, &dB);
		for (int k = 0; k < 2; k++) {
			char key[256];
			snprintf(key, sizeof key, "%s.lora_%c", l->name, k ? 'B' : 'A');
			const lora_st_tensor *t = lora_st_find(gr, key);
			CHECK(t != NULL, "%s: no reference gradient %s", name, key);
			if (!t)
				continue;
			float *want = malloc(t->nelem * sizeof *want);
			lora_dtype_to_f32(want, t->data, t->dtype, t->nelem);
			double mr, r = rel_err(k ? dB : dA, want, t->nelem, &mr);
			CHECK(r < 1e-4 && mr < 1e-4, "%s: gradient %s: relative error %.3g (max-norm %.3g)", name, key, r, mr);
			worst = r > worst ? r : worst;
			worst_max = mr > worst_max ? mr : worst_max;
			free(want);
		}
	}
	printf("# %-16s loss rel %.1e, base loss rel %.1e, %zu gradients: worst rel %.1e (max-norm %.1e)\n", name, rl,
	       rb, 2 * a->nlayers, worst, worst_max);
	lora_llama_free(m);
	lora_llama_free(base);
	run_bf16(ck, name, a, gr, in, tg, B, T, want_loss);
	lora_ckpt_close(ck);
	lora_adapter_free(a);
	lora_st_close(ad);
	lora_st_close(gr);
	cJSON_Delete(j);
	free(in);
	free(tg);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: test_model_ref DIR\n");
		return 2;
	}
	lora_blas_set_threads(0);
	char path[1024], line[256];
	snprintf(path, sizeof path, "%s/cases", argv[1]);
	FILE *f = fopen(path, "r");
	CHECK(f != NULL, "%s: cannot open", path);
	int ncases = 0;
	while (f && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (*line) {
			run_case(argv[1], line);
			ncases++;
		}
	}
	if (f)
		fclose(f);
	CHECK(ncases >= 3, "only %d fixture cases", ncases);
	DONE();
}
