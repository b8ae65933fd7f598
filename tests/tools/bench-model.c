/* bench-model: speed and memory of one LoRA training step (forward +
 * backward, then lora-train's optimizer step) of the model, against the
 * rate OpenBLAS reaches on the same matrix products in the same run.
 *
 *   bench-model -m MODEL [-b B] [-T T] [-j N] [-r RANK] [-t TARGETS]
 *               [--steps S] [--recompute] [--dropout P] [--no-ceiling]
 *
 * Prints key=value lines: tokens_per_s, step_ms and its split into
 * products_ms (top-level matrix products) and other_ms (the rest,
 * optimizer_ms included; other_share its fraction of the step), the time
 * of each kernel in the step (kernel_<name>_ms, their sum kernels_ms),
 * model_flops_per_token,
 * peak_rss_mib (after the steps, before anything else is allocated),
 * activation_mib, and unless --no-ceiling: gemm_calls,
 * ceiling_gflops (the better of OpenBLAS's own threading at N threads and
 * blas (oneDNN) on the traced shapes), achieved_gflops and mfu; and for
 * scale the rate on the step's single largest product and the utilisation
 * against that. With --per-shape: for each distinct product of the step
 * (most FLOPs first) its calls and the GFLOP/s of blas (oneDNN) and of
 * OpenBLAS at N threads, each timed alone, and both over the whole step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "math/blas_internal.h"
#include "cli.h"
#include "ops/init.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "model/kernels_internal.h"
#include "model/llama_internal.h"
#include "train/optim.h"
#include "train/train.h"

enum { O_STEPS = 256, O_RECOMPUTE, O_NOCEIL, O_SHAPES, O_COMPUTE, O_DROPOUT };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "model directory", "@file"},
	{'b', 'b', "batch", "B", "rows per batch (default 4)", NULL},
	{'T', 'T', "seq", "T", "sequence length (default 256)", NULL},
	{'j', 'j', "threads", "N", "threads (default: all cores)", NULL},
	{'r', 'r', "rank", "R", "LoRA rank (default 8)", NULL},
	{'t', 't', "targets", "LIST", "adapted modules (default q_proj,v_proj)", NULL},
	{O_STEPS, 0, "steps", "S", "timed steps (default 3)", NULL},
	{O_RECOMPUTE, 0, "recompute", NULL, "recompute blocks in backward", NULL},
	{O_NOCEIL, 0, "no-ceiling", NULL, "skip the sgemm ceiling", NULL},
	{O_COMPUTE, 0, "compute", "TYPE", "auto (default), f32 or bf16", "auto f32 bf16"},
	{O_SHAPES, 0, "per-shape", NULL, "time each distinct product, oneDNN against OpenBLAS", NULL},
	{O_DROPOUT, 0, "dropout", "P", "LoRA dropout probability (default 0)", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {"bench-model", "-m MODEL [options]", "Benchmark a LoRA training step.", NULL, opts,
                               NULL};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double peak_rss_mib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss / 1024.0;
}

static void die(const lora_err *e)
{
	lora_cli_fail(&tool, e);
	exit(1);
}

/* Operands of the replays, in f32 and bf16. */
static uint16_t *Ab, *Bb;

/* Time the traced products; native: OpenBLAS with its own threading in
 * f32 (the products as they ran before oneDNN and bf16), else blas (oneDNN
 * on the pool) in each product's own type. */
static double replay(const lora_blas_shape *s, size_t n, int nthr, int native, float *A, float *B, float *C)
{
	double t0 = now();
	for (size_t i = 0; i < n; i++) {
		size_t M = s[i].M, N = s[i].N, K = s[i].K;
		size_t lda = s[i].ta ? M : K, ldb = s[i].tb ? K : N;
		if (!lda)
			lda = 1;
		if (!ldb)
			ldb = 1;
		if (native)
			lora_blas_sgemm_openblas(nthr, s[i].ta, s[i].tb, M, N, K, 1, A, lda, B, ldb, 0, C, N ? N : 1);
		else if (s[i].dt == LORA_BF16)
			lora_blas_gemm(s[i].ta, s[i].tb, M, N, K, 1, Ab, LORA_BF16, lda, Bb, LORA_BF16, ldb, 0, C, N ? N : 1);
		else
			lora_blas_sgemm(s[i].ta, s[i].tb, M, N, K, 1, A, lda, B, ldb, 0, C, N ? N : 1);
	}
	return now() - t0;
}

/* The tail of lora-train's step (lib/train/train.c): gradients gathered
 * into one arena, clipped, one AdamW update, the parameters checked and
 * scattered back. */
typedef struct {
	lora_optim o;
	float *p, *g;
	size_t n;
} optimizer;

static optimizer optimizer_new(const lora_adapter *a)
{
	optimizer o = {.n = lora_train_nparams(a)};
	lora_optim_conf conf = {LORA_OPTIM_ADAMW, 1e-4, 0.9, 0.999, 1e-8, 0.01, 0};
	lora_err e = {0};
	o.p = malloc(o.n * sizeof(float));
	o.g = malloc(o.n * sizeof(float));
	if ((!o.p || !o.g) && lora_err_nomem(&e))
		die(&e);
	if (lora_optim_init(&o.o, &conf, o.n, &e))
		die(&e);
	return o;
}

static void optimizer_step(optimizer *o, const lora_llama *m, lora_adapter *a)
{
	float *p = o->p, *g = o->g;
	for (size_t i = 0; i < a->nlayers; i++) {
		lora_layer *l = &a->layers[i];
		float *dA, *dB;
		lora_llama_grad(m, i, &dA, &dB);
		memcpy(g, dA, l->rank * l->in * sizeof(float)), g += l->rank * l->in;
		memcpy(g, dB, l->out * l->rank * sizeof(float)), g += l->out * l->rank;
		memcpy(p, l->A, l->rank * l->in * sizeof(float)), p += l->rank * l->in;
		memcpy(p, l->B, l->out * l->rank * sizeof(float)), p += l->out * l->rank;
	}
	lora_optim_clip_grad_norm(o->g, o->n, 1.0);
	lora_optim_step(&o->o, o->p, o->g, o->n, 1e-4);
	if (lora_dtype_find_nonfinite(o->p, o->n) < o->n) {
		lora_err e;
		lora_err_set(&e, LORA_EINVAL, "a parameter became non-finite");
		die(&e);
	}
	p = o->p;
	for (size_t i = 0; i < a->nlayers; i++) {
		lora_layer *l = &a->layers[i];
		memcpy(l->A, p, l->rank * l->in * sizeof(float)), p += l->rank * l->in;
		memcpy(l->B, p, l->out * l->rank * sizeof(float)), p += l->out * l->rank;
	}
}

static void optimizer_free(optimizer *o)
{
	lora_optim_free(&o->o);
	free(o->p);
	free(o->g);
}

static int same(const lora_blas_shape *x, const lora_blas_shape *y)
{
	return x->ta == y->ta && x->tb == y->tb && x->M == y->M && x->N == y->N && x->K == y->K && x->dt == y->dt;
}

static double flops_of(const lora_blas_shape *x) { return 2.0 * (double)x->M * (double)x->N * (double)x->K; }

/* Every distinct shape of the trace timed alone by both paths (best of
 * three, each at least 50 ms), most FLOPs per step first. */
static void per_shape(const lora_blas_shape *s, size_t n, int nthr, float *A, float *B, float *C)
{
	lora_blas_shape *u = malloc(n * sizeof *u);
	size_t *cnt = calloc(n, sizeof *cnt), nu = 0;
	for (size_t i = 0; i < n; i++) {
		size_t j = 0;
		while (j < nu && !same(&u[j], &s[i]))
			j++;
		if (j == nu)
			u[nu++] = s[i];
		cnt[j]++;
	}
	for (size_t i = 1; i < nu; i++) /* insertion sort by FLOPs per step */
		for (size_t j = i; j > 0 && flops_of(&u[j]) * cnt[j] > flops_of(&u[j - 1]) * cnt[j - 1]; j--) {
			lora_blas_shape t = u[j];
			size_t c = cnt[j];
			u[j] = u[j - 1], cnt[j] = cnt[j - 1], u[j - 1] = t, cnt[j - 1] = c;
		}
	double tot[2] = {0, 0}, fl = 0;
	for (size_t i = 0; i < nu; i++) {
		double rate[2];
		for (int native = 0; native < 2; native++) {
			double best = 1e30;
			replay(&u[i], 1, nthr, native, A, B, C);
			for (int rep = 0; rep < 3; rep++) {
				int k = 0;
				double t0 = now(), t;
				do
					replay(&u[i], 1, nthr, native, A, B, C), k++;
				while ((t = now() - t0) < 0.05);
				best = t / k < best ? t / k : best;
			}
			rate[native] = flops_of(&u[i]) / best;
			tot[native] += best * (double)cnt[i];
		}
		fl += flops_of(&u[i]) * (double)cnt[i];
		printf("shape=%s%s %zux%zux%zu calls=%zu onednn_gflops=%.1f openblas_gflops=%.1f\n", u[i].ta ? "T" : "N",
		       u[i].tb ? "T" : "N", u[i].M, u[i].N, u[i].K, cnt[i], rate[0] / 1e9, rate[1] / 1e9);
	}
	printf("step_onednn_gflops=%.1f\nstep_openblas_gflops=%.1f\n", fl / tot[0] / 1e9, fl / tot[1] / 1e9);
	free(u);
	free(cnt);
}

int main(int argc, char **argv)
{
	const char *model = NULL, *targets = "q_proj,v_proj";
	size_t B = 4, T = 256, rank = 8;
	int jobs = 0, steps = 3, recompute = 0, ceiling = 1, shapes_too = 0, id;
	lora_llama_compute compute = LORA_LLAMA_AUTO;
	double dropout = 0;
	lora_cli c;
	lora_err e = {0};
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': model = c.arg; break;
		case 'b': B = (size_t)lora_cli_int(&tool, "-b", c.arg, 1, 1 << 16); break;
		case 'T': T = (size_t)lora_cli_int(&tool, "-T", c.arg, 1, 1 << 20); break;
		case 'j': jobs = (int)lora_cli_int(&tool, "-j", c.arg, 1, 1024); break;
		case 'r': rank = (size_t)lora_cli_int(&tool, "-r", c.arg, 1, 4096); break;
		case 't': targets = c.arg; break;
		case O_STEPS: steps = (int)lora_cli_int(&tool, "--steps", c.arg, 1, 1000); break;
		case O_RECOMPUTE: recompute = 1; break;
		case O_NOCEIL: ceiling = 0; break;
		case O_SHAPES: shapes_too = 1; break;
		case O_COMPUTE: compute = lora_cli_compute(&tool, c.arg); break;
		case O_DROPOUT:
			dropout = lora_cli_double(&tool, "--dropout", c.arg);
			if (!(dropout >= 0 && dropout < 1))
				lora_cli_usage_error(&tool, "--dropout must be in [0, 1)");
			break;
		default: lora_cli_usage_error(&tool, "unexpected operand '%s'", c.arg);
		}
	}
	if (!model)
		lora_cli_usage_error(&tool, "need -m MODEL");
	int nthr = lora_blas_set_threads(jobs);
	lora_ckpt *ck;
	lora_llama *m;
	lora_targets tg;
	lora_adapter *a = lora_adapter_new();
	if (lora_ckpt_open(&ck, model, &e) || lora_llama_open(&m, ck, &e) || lora_llama_set_compute(m, compute, &e) ||
	    lora_targets_init(&tg, targets, NULL, &e) ||
	    lora_init_from_model(a, ck, &tg, rank, 2.0 * (double)rank, &e))
		die(&e);
	lora_init_weights(a, LORA_INIT_GAUSSIAN, 1);
	lora_targets_free(&tg);
	if (lora_llama_attach(m, a, 1, 1, "bench", &e) ||
	    lora_llama_plan(m, B, T, LORA_LLAMA_TRAIN | (recompute ? LORA_LLAMA_RECOMPUTE : 0), &e))
		die(&e);
	lora_llama_set_dropout(m, (float)dropout, 1);
	const lora_config *cfg = lora_llama_get_config(m);
	size_t N = B * T;
	int32_t *in = malloc(N * sizeof *in), *tgt = malloc(N * sizeof *tgt);
	lora_rng r;
	lora_rng_seed(&r, 7);
	for (size_t i = 0; i < N; i++)
		in[i] = (int32_t)(lora_rng_u64(&r) % cfg->vocab_size), tgt[i] = (int32_t)(lora_rng_u64(&r) % cfg->vocab_size);
	double loss;
	/* One untimed step (first touch of every page), traced. */
	lora_blas_trace_begin();
	if (lora_llama_forward(m, in, tgt, &loss, NULL, &e) || lora_llama_backward(m, &e))
		die(&e);
	size_t ncalls;
	lora_blas_shape *shapes = lora_blas_trace_end(&ncalls);
	optimizer opt = optimizer_new(a);
	double best = 1e30, gemm = 0, topt = 0, ksec[LORA_KCLOCK_N], kbest[LORA_KCLOCK_N] = {0};
	for (int s = 0; s < steps; s++) {
		double t0 = now();
		lora_blas_clock_begin();
		lora_kernels_clock_begin();
		lora_llama_zero_grad(m);
		double l;
		if (lora_llama_forward(m, in, tgt, &l, NULL, &e) || lora_llama_backward(m, &e))
			die(&e);
		double g = lora_blas_clock_end(), t1 = now();
		lora_kernels_clock_end(ksec);
		optimizer_step(&opt, m, a);
		double dt = now() - t0;
		if (dt < best) {
			best = dt, gemm = g, topt = now() - t1;
			memcpy(kbest, ksec, sizeof ksec);
		}
	}
	optimizer_free(&opt);
	double rss = peak_rss_mib();
	double fpt = lora_llama_flops_per_token(m, T, 1);
	printf("threads=%d\nbatch=%zu\nseq=%zu\nloss=%.4f\ncompute=%s\n", nthr, B, T, loss,
	       lora_dtype_name(lora_llama_compute_dtype(m)));
	printf("step_ms=%.1f\ntokens_per_s=%.0f\nmodel_flops_per_token=%.0f\n", best * 1e3, (double)N / best, fpt);
	printf("products_ms=%.1f\nother_ms=%.1f\noptimizer_ms=%.2f\nother_share=%.3f\n", gemm * 1e3,
	       (best - gemm) * 1e3, topt * 1e3, (best - gemm) / best);
	double ksum = 0;
	for (int k = 0; k < LORA_KCLOCK_N; k++)
		if (kbest[k] > 0) {
			printf("kernel_%s_ms=%.2f\n", lora_kernels_clock_name(k), kbest[k] * 1e3);
			ksum += kbest[k];
		}
	printf("kernels_ms=%.1f\n", ksum * 1e3);
	printf("achieved_gflops=%.1f\npeak_rss_mib=%.1f\nactivation_mib=%.1f\nweights_mib=%.1f\n",
	       fpt * (double)N / best / 1e9, rss, (double)lora_llama_activation_bytes(m) / 1048576.0,
	       (double)lora_llama_weight_bytes(m) / 1048576.0);
	if (ceiling && ncalls) {
		size_t amax = 1, bmax = 1, cmax = 1;
		double flops = 0;
		for (size_t i = 0; i < ncalls; i++) {
			size_t M = shapes[i].M, Nn = shapes[i].N, K = shapes[i].K;
			amax = M * K > amax ? M * K : amax;
			bmax = K * Nn > bmax ? K * Nn : bmax;
			cmax = M * Nn > cmax ? M * Nn : cmax;
			flops += 2.0 * (double)M * (double)Nn * (double)K;
		}
		float *A = malloc(amax * 4), *Bm = malloc(bmax * 4), *C = malloc(cmax * 4);
		for (size_t i = 0; i < amax; i++)
			A[i] = lora_rng_uniform(&r) - 0.5f;
		for (size_t i = 0; i < bmax; i++)
			Bm[i] = lora_rng_uniform(&r) - 0.5f;
		memset(C, 0, cmax * 4);
		Ab = malloc(amax * 2), Bb = malloc(bmax * 2);
		lora_dtype_from_f32(Ab, A, LORA_BF16, amax);
		lora_dtype_from_f32(Bb, Bm, LORA_BF16, bmax);
		double tp = 1e30, tn = 1e30;
		replay(shapes, ncalls, nthr, 0, A, Bm, C);
		for (int s = 0; s < steps; s++) {
			double t = replay(shapes, ncalls, nthr, 0, A, Bm, C);
			tp = t < tp ? t : tp;
		}
		replay(shapes, ncalls, nthr, 1, A, Bm, C);
		for (int s = 0; s < steps; s++) {
			double t = replay(shapes, ncalls, nthr, 1, A, Bm, C);
			tn = t < tn ? t : tn;
		}
		double rate_pool = flops / tp, rate_native = flops / tn, ceil = rate_pool > rate_native ? rate_pool : rate_native;
		printf("gemm_calls=%zu\ngemm_flops_per_step=%.0f\n", ncalls, flops);
		printf("sgemm_openblas_gflops=%.1f\nsgemm_pool_gflops=%.1f\nceiling_gflops=%.1f\n", rate_native / 1e9,
		       rate_pool / 1e9, ceil / 1e9);
		printf("mfu=%.3f\n", fpt * (double)N / best / ceil);
		/* For scale: the rate on the step's single biggest product alone. */
		size_t big = 0;
		for (size_t i = 1; i < ncalls; i++)
			if ((double)shapes[i].M * shapes[i].N * shapes[i].K > (double)shapes[big].M * shapes[big].N * shapes[big].K)
				big = i;
		double tb = 1e30, fb = 2.0 * (double)shapes[big].M * shapes[big].N * shapes[big].K;
		for (int s = 0; s < steps + 1; s++) {
			double t = replay(shapes + big, 1, nthr, 1, A, Bm, C);
			t = t < replay(shapes + big, 1, nthr, 0, A, Bm, C) ? t : replay(shapes + big, 1, nthr, 0, A, Bm, C);
			tb = t < tb ? t : tb;
		}
		printf("largest_gemm=%zux%zux%zu\nlargest_gemm_gflops=%.1f\nmfu_vs_largest=%.3f\n", shapes[big].M,
		       shapes[big].N, shapes[big].K, fb / tb / 1e9, fpt * (double)N / best / (fb / tb));
		if (shapes_too)
			per_shape(shapes, ncalls, nthr, A, Bm, C);
		free(A), free(Bm), free(C), free(Ab), free(Bb);
	}
	free(shapes);
	free(in);
	free(tgt);
	lora_llama_free(m);
	lora_ckpt_close(ck);
	lora_adapter_free(a);
	return 0;
}
