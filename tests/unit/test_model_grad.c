/* Gradient check of the model's backward: directional finite differences
 * of the loss along random directions in LoRA-parameter space, against
 * the analytic gradient, for tiny configs that cover grouped-query
 * attention, head_dim != hidden/heads, tied and untied heads, biases,
 * rsLoRA, every target module, dropout, sliding windows, several query
 * blocks, recomputation and frozen extra adapters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "math/blas.h"
#include "check.h"
#include "test_model_util.h"

typedef struct {
	const char *name;
	tm_spec spec;
	unsigned mask;     /* trainable modules */
	size_t rank0;
	int rslora;
	float dropout;
	size_t B, T;
	int recompute;
	unsigned frozen;   /* modules of a second, frozen adapter (0: none) */
	int ignore;        /* some targets ignored (-1) */
} gcase;

static double loss_of(lora_llama *m, const int32_t *in, const int32_t *tg)
{
	double loss;
	lora_err e;
	if (lora_llama_forward(m, in, tg, &loss, NULL, &e)) {
		printf("FAIL forward: %s\n", e.msg);
		return NAN;
	}
	return loss;
}

/* Every factor value of a, and the matching gradient, as flat views. */
typedef struct {
	float **p, **g;
	size_t *n, count;
} views;

static void collect(views *v, lora_adapter *a, lora_llama *m)
{
	v->count = 2 * a->nlayers;
	v->p = calloc(v->count, sizeof *v->p);
	v->g = calloc(v->count, sizeof *v->g);
	v->n = calloc(v->count, sizeof *v->n);
	for (size_t i = 0; i < a->nlayers; i++) {
		float *dA, *dB;
		lora_llama_grad(m, i, &dA, &dB);
		lora_layer *l = &a->layers[i];
		v->p[2 * i] = l->A, v->g[2 * i] = dA, v->n[2 * i] = l->rank * l->in;
		v->p[2 * i + 1] = l->B, v->g[2 * i + 1] = dB, v->n[2 * i + 1] = l->out * l->rank;
	}
}

static void views_free(views *v)
{
	free(v->p);
	free(v->g);
	free(v->n);
}

/* Move every parameter by t * dir. */
static void step(views *v, float **dir, double t, float **orig)
{
	for (size_t k = 0; k < v->count; k++)
		for (size_t i = 0; i < v->n[k]; i++)
			v->p[k][i] = (float)((double)orig[k][i] + t * dir[k][i]);
}

/* The tolerance of a directional derivative: relative, with an absolute
 * floor per unit length of the direction. Float rounding of the loss and
 * of the gradient leaves differences up to ~3e-5 per unit length in these
 * configurations; a real bug (a sign, a lost scale, a missing path) moves
 * a directional derivative by its own size, 4e-4 to 0.5 here. Without the
 * floor, a direction along which the loss barely changes turns rounding
 * into a large relative error. */
#define GRAD_RTOL 1e-2
#define GRAD_ATOL 1e-4

/* Directional check along dir (only tensors with dir[k] != NULL move).
 * Returns the error as a fraction of the tolerance. */
static double check_dir(lora_llama *m, views *v, float **dir, float **orig, const int32_t *in, const int32_t *tg,
                        double *analytic, double *numeric)
{
	double dot = 0, norm = 0;
	for (size_t k = 0; k < v->count; k++)
		for (size_t i = 0; i < v->n[k]; i++) {
			dot += (double)v->g[k][i] * dir[k][i];
			norm += (double)dir[k][i] * dir[k][i];
		}
	/* Central differences at two step sizes, combined by Richardson
	 * extrapolation: the O(h^2) term cancels, so h can be large enough
	 * for float rounding of the loss not to matter. */
	double h = 4e-2 / sqrt(norm), fd[2];
	for (int s = 0; s < 2; s++) {
		double hs = s ? h / 2 : h;
		step(v, dir, hs, orig);
		double lp = loss_of(m, in, tg);
		step(v, dir, -hs, orig);
		double lm = loss_of(m, in, tg);
		fd[s] = (lp - lm) / (2 * hs);
	}
	step(v, dir, 0, orig);
	double num = (4 * fd[1] - fd[0]) / 3;
	*analytic = dot, *numeric = num;
	double scale = fabs(dot) > fabs(num) ? fabs(dot) : fabs(num);
	return fabs(dot - num) / (GRAD_RTOL * scale + GRAD_ATOL * sqrt(norm));
}

static void run_case(const gcase *gc)
{
	char *tmp = tm_tmpdir();
	if (tm_write(tmp, &gc->spec)) {
		CHECK(0, "%s: cannot write the model", gc->name);
		return;
	}
	lora_llama *m = tm_open(tmp);
	CHECK(m != NULL, "%s: open", gc->name);
	if (!m)
		return;
	lora_err e;
	lora_adapter *a = tm_adapter(&gc->spec, gc->mask, gc->rank0, 3.0, gc->rslora, 0.3f, 11);
	lora_adapter *fz = gc->frozen ? tm_adapter(&gc->spec, gc->frozen, 2, 4.0, 0, 0.3f, 12) : NULL;
	if (fz)
		CHECK(lora_llama_attach(m, fz, 0.7, 0, "frozen", &e) == 0, "%s: attach frozen: %s", gc->name, e.msg);
	CHECK(lora_llama_attach(m, a, 1.3, 1, "trained", &e) == 0, "%s: attach: %s", gc->name, e.msg);
	int flags = LORA_LLAMA_TRAIN | (gc->recompute ? LORA_LLAMA_RECOMPUTE : 0);
	CHECK(lora_llama_plan(m, gc->B, gc->T, flags, &e) == 0, "%s: plan: %s", gc->name, e.msg);
	lora_llama_set_dropout(m, gc->dropout, 99);
	size_t N = gc->B * gc->T;
	int32_t *in = malloc(N * sizeof *in), *tg = malloc(N * sizeof *tg);
	lora_rng r;
	lora_rng_seed(&r, 5);
	for (size_t i = 0; i < N; i++) {
		in[i] = (int32_t)(lora_rng_u64(&r) % gc->spec.V);
		tg[i] = (int32_t)(lora_rng_u64(&r) % gc->spec.V);
		if (gc->ignore && i % 3 == 1)
			tg[i] = -1;
	}
	double loss;
	lora_llama_zero_grad(m);
	CHECK(lora_llama_forward(m, in, tg, &loss, NULL, &e) == 0, "%s: forward: %s", gc->name, e.msg);
	CHECK(lora_llama_backward(m, &e) == 0, "%s: backward: %s", gc->name, e.msg);
	CHECK(isfinite(loss) && loss > 0, "%s: loss %g", gc->name, loss);

	views v;
	collect(&v, a, m);
	float **orig = calloc(v.count, sizeof *orig), **dir = calloc(v.count, sizeof *dir);
	for (size_t k = 0; k < v.count; k++) {
		orig[k] = malloc(v.n[k] * sizeof(float));
		memcpy(orig[k], v.p[k], v.n[k] * sizeof(float));
	}
	/* The gradient must be non-trivial for the check to mean anything. */
	double gn = 0;
	for (size_t k = 0; k < v.count; k++)
		for (size_t i = 0; i < v.n[k]; i++)
			gn += (double)v.g[k][i] * v.g[k][i];
	CHECK(gn > 1e-12, "%s: gradient is zero", gc->name);
	/* Three random directions over everything, then one per tensor. */
	double worst = 0;
	for (int t = 0; t < 3 + (int)v.count; t++) {
		int only = t >= 3 ? t - 3 : -1;
		for (size_t k = 0; k < v.count; k++) {
			free(dir[k]);
			dir[k] = calloc(v.n[k], sizeof(float));
			if (only < 0 || (size_t)only == k)
				for (size_t i = 0; i < v.n[k]; i++)
					dir[k][i] = lora_rng_normal(&r);
		}
		double an, nu, err = check_dir(m, &v, dir, orig, in, tg, &an, &nu);
		const char *what = only < 0 ? "all factors" : a->layers[only / 2].name;
		CHECK(err <= 1, "%s: direction %d (%s%s): analytic %.8g, finite differences %.8g, %.2f x tolerance",
		      gc->name, t, what, only < 0 ? "" : (only % 2 ? " B" : " A"), an, nu, err);
		if (err > worst)
			worst = err;
	}
	printf("# %-28s loss %.6f  worst error %.3f of the tolerance over %zu directions\n", gc->name, loss, worst,
	       3 + v.count);
	for (size_t k = 0; k < v.count; k++) {
		free(orig[k]);
		free(dir[k]);
	}
	free(orig);
	free(dir);
	views_free(&v);
	free(in);
	free(tg);
	tm_close(m);
	lora_adapter_free(a);
	lora_adapter_free(fz);
	tm_rmtree(tmp);
	free(tmp);
}

/* Recomputation must not change a single gradient value. */
static void recompute_same(void)
{
	tm_spec s = {"llama", 16, 24, 3, 4, 2, 6, 32, 0, 0, 0, 0, NULL, NULL, LORA_F32, 3};
	char *dir = tm_tmpdir();
	tm_write(dir, &s);
	float *g[2] = {NULL, NULL};
	size_t n = 0;
	double loss[2];
	for (int rc = 0; rc < 2; rc++) {
		lora_llama *m = tm_open(dir);
		lora_adapter *a = tm_adapter(&s, 0x7f, 2, 4, 0, 0.3f, 1);
		lora_err e;
		lora_llama_attach(m, a, 1, 1, "a", &e);
		lora_llama_plan(m, 2, 9, LORA_LLAMA_TRAIN | (rc ? LORA_LLAMA_RECOMPUTE : 0), &e);
		lora_llama_set_dropout(m, 0.25f, 7);
		int32_t in[18], tg[18];
		for (int i = 0; i < 18; i++)
			in[i] = (i * 7) % 32, tg[i] = (i * 5 + 3) % 32;
		lora_llama_zero_grad(m);
		lora_llama_forward(m, in, tg, &loss[rc], NULL, &e);
		lora_llama_backward(m, &e);
		n = 0;
		for (size_t i = 0; i < a->nlayers; i++)
			n += a->layers[i].rank * (a->layers[i].in + a->layers[i].out);
		g[rc] = malloc(n * sizeof(float));
		size_t k = 0;
		for (size_t i = 0; i < a->nlayers; i++) {
			float *dA, *dB;
			lora_llama_grad(m, i, &dA, &dB);
			memcpy(g[rc] + k, dA, a->layers[i].rank * a->layers[i].in * sizeof(float));
			k += a->layers[i].rank * a->layers[i].in;
			memcpy(g[rc] + k, dB, a->layers[i].rank * a->layers[i].out * sizeof(float));
			k += a->layers[i].rank * a->layers[i].out;
		}
		tm_close(m);
		lora_adapter_free(a);
	}
	CHECK(loss[0] == loss[1], "recompute changed the loss: %.9g vs %.9g", loss[0], loss[1]);
	CHECK(memcmp(g[0], g[1], n * sizeof(float)) == 0, "recompute changed the gradients");
	free(g[0]);
	free(g[1]);
	tm_rmtree(dir);
	free(dir);
}

int main(void)
{
	lora_blas_set_threads(0);
	const char *llama3 = "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
	                     "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16},";
	const char *linear = "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0},";
	gcase cases[] = {
		{"gqa, head_dim 6, untied", {"llama", 16, 24, 2, 4, 2, 6, 32, 0, 0, 0, 0, NULL, NULL, LORA_F32, 1},
		 0x7f, 2, 0, 0, 2, 7, 0, 0, 0},
		{"qwen2 biases, tied, rslora", {"qwen2", 16, 20, 2, 4, 1, 0, 40, 1, 1, 0, 0, linear, NULL, LORA_F32, 2},
		 0x7f, 3, 1, 0, 2, 6, 0, 0, 1},
		{"all biases, dropout", {"llama", 12, 16, 2, 2, 2, 8, 24, 0, 1, 1, 1, NULL, NULL, LORA_BF16, 3},
		 0x7f, 2, 0, 0.3f, 2, 5, 0, 0, 0},
		{"mistral window, 2 blocks", {"mistral", 16, 24, 2, 4, 2, 4, 32, 0, 0, 0, 0, llama3,
		                              "\"sliding_window\": 20,", LORA_F16, 4},
		 0x7f, 2, 0, 0, 1, 70, 0, 0, 0},
		{"qwen2 window on block 1", {"qwen2", 8, 12, 2, 2, 1, 0, 16, 0, 1, 0, 0, NULL,
		                             "\"use_sliding_window\": true, \"sliding_window\": 3, \"max_window_layers\": 1,",
		                             LORA_F32, 5},
		 0x11, 2, 0, 0, 2, 8, 1, 0, 0},
		{"q,v only + frozen mlp", {"llama", 16, 24, 3, 4, 4, 0, 32, 1, 0, 0, 0, NULL, NULL, LORA_F32, 6},
		 0x05, 2, 0, 0.1f, 2, 6, 1, 0x70, 0},
		{"down only + frozen qkvo", {"llama", 16, 24, 2, 2, 1, 0, 32, 0, 0, 0, 0, NULL, NULL, LORA_F32, 7},
		 0x40, 2, 0, 0, 2, 6, 0, 0x0f, 0},
		{"o only", {"llama", 16, 24, 2, 4, 2, 0, 32, 0, 0, 0, 0, NULL, NULL, LORA_F32, 8},
		 0x08, 2, 1, 0, 2, 6, 0, 0, 0},
		{"gate/up only", {"llama", 16, 24, 2, 4, 2, 0, 32, 0, 0, 0, 0, NULL, NULL, LORA_F32, 9},
		 0x30, 2, 0, 0, 2, 6, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		run_case(&cases[i]);
	recompute_same();
	DONE();
}
