#include "math/blas_internal.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <stdio.h>
#include <unistd.h>

static int nthreads; /* 0 until set: the first use sets the default */

/* Debian's OpenBLAS (0.3.21) has its worker threads retry a failed buffer
 * allocation forever (fixed upstream in 0.3.30) and joins them at exit, so
 * under an address-space limit (ulimit -v) a tool would hang instead of
 * failing. Those threads start as the library loads, before main; an
 * executable's preinit_array runs earlier still: with such a limit,
 * OpenBLAS is asked to keep to the calling thread (it serves only the
 * factorisations; the OpenMP pool is untouched). Its loader may read the
 * environment it was started with, so the exit is guarded too: once
 * everything of ours has run, the process ends without joining them. */
static int as_limited;

static void end_now(int status, void *arg)
{
	(void)arg;
	fflush(NULL);
	_exit(status);
}

static void openblas_guard(int argc, char **argv, char **envp)
{
	struct rlimit r;
	(void)argc, (void)argv, (void)envp;
	as_limited = getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY;
	if (as_limited)
		setenv("OPENBLAS_NUM_THREADS", "1", 1);
}

__attribute__((section(".preinit_array"), used)) static void (*const preinit)(int, char **, char **) = openblas_guard;

static void openblas_threads(int n) { openblas_set_num_threads(as_limited || n < 1 ? 1 : n); }

static pthread_mutex_t probe_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t probe_cv = PTHREAD_COND_INITIALIZER;
static int probe_go;

static void *probe_wait(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&probe_mu);
	while (!probe_go)
		pthread_cond_wait(&probe_cv, &probe_mu);
	pthread_mutex_unlock(&probe_mu);
	return NULL;
}

void lora_blas_guard_exit(void)
{
	static int done;
	if (as_limited && !done++)
		on_exit(end_now, NULL);
}

int lora_blas_try_threads(int n, lora_err *e)
{
	int k = 0, err = 0;
	pthread_t *t = n > 1 ? malloc((size_t)(n - 1) * sizeof *t) : NULL;
	if (n > 1 && !t)
		return lora_err_set(e, LORA_ENOMEM, "cannot start %d threads: out of memory", n);
	probe_go = 0;
	/* all alive at once, as in the pool, each with the default stack */
	while (k < n - 1 && !(err = pthread_create(&t[k], NULL, probe_wait, NULL)))
		k++;
	pthread_mutex_lock(&probe_mu);
	probe_go = 1;
	pthread_cond_broadcast(&probe_cv);
	pthread_mutex_unlock(&probe_mu);
	for (int i = 0; i < k; i++)
		pthread_join(t[i], NULL);
	free(t);
	if (err)
		return lora_err_set(e, LORA_ENOMEM, "cannot start %d threads (%d started): %s", n, k + 1, strerror(err));
	return 0;
}

/* Below this many multiply-adds a product runs on the calling thread. */
#define SPLIT_MIN_MNK (1u << 18)

int lora_blas_set_threads(int n)
{
	if (n <= 0) {
		const char *s = getenv("OMP_NUM_THREADS");
		char *end;
		long v = s ? strtol(s, &end, 10) : 0;
		n = s && end != s && v > 0 && v < 4096 ? (int)v : omp_get_num_procs();
	}
	if (n < 1)
		n = 1;
	nthreads = n;
	/* oneDNN (built on the same libgomp) and our kernels share this pool;
	 * OpenBLAS, left with LAPACK and double products, runs in serial code
	 * only, so it gets the same count. */
	omp_set_num_threads(n);
	openblas_threads(n);
	return n;
}

int lora_blas_threads(void) { return nthreads ? nthreads : lora_blas_set_threads(0); }

/* ---- shape trace ---- */

static volatile int tracing;
static lora_blas_shape *trace;
static size_t ntrace, captrace;

static void record(int ta, int tb, size_t M, size_t N, size_t K, lora_dtype dt)
{
#pragma omp critical(lora_blas_trace)
	{
		if (ntrace == captrace) {
			size_t cap = captrace ? 2 * captrace : 256;
			lora_blas_shape *t = realloc(trace, cap * sizeof *t);
			if (t)
				trace = t, captrace = cap;
		}
		if (ntrace < captrace)
			trace[ntrace++] = (lora_blas_shape){ta, tb, M, N, K, dt};
	}
}

void lora_blas_trace_begin(void)
{
	free(trace);
	trace = NULL;
	ntrace = captrace = 0;
	tracing = 1;
}

lora_blas_shape *lora_blas_trace_end(size_t *n)
{
	lora_blas_shape *t = trace;
	tracing = 0;
	*n = t ? ntrace : 0;
	trace = NULL;
	ntrace = captrace = 0;
	return t;
}

/* ---- product clock ---- */

static volatile int clocking;
static double clocked;

static double seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void lora_blas_clock_begin(void)
{
	clocked = 0;
	clocking = 1;
}

double lora_blas_clock_end(void)
{
	clocking = 0;
	return clocked;
}

/* ---- errors ---- */

/* The products return nothing (they sit in the model's void kernels), so a
 * oneDNN failure is computed by OpenBLAS instead and remembered here, for
 * lora_blas_error to report: the result is right, only slower. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static lora_err first_err;
static int fail_next; /* test hook */

static void fail(int code, const char *what, dnnl_status_t st, size_t M, size_t N, size_t K)
{
	pthread_mutex_lock(&lock);
	if (!first_err.code)
		lora_err_set(&first_err, code, "matrix product %zux%zux%zu: oneDNN %s failed (status %d)", M, N, K, what,
		             (int)st);
	pthread_mutex_unlock(&lock);
}

int lora_blas_error(lora_err *e)
{
	pthread_mutex_lock(&lock);
	int code = first_err.code;
	if (code && e)
		*e = first_err;
	first_err = (lora_err){0};
	pthread_mutex_unlock(&lock);
	return code;
}

void lora_blas_fail_next(void) { fail_next = 1; }

/* ---- oneDNN primitives, one per shape ---- */

/* Everything a primitive is specialised for. threads: the pool it was
 * planned for; 1 inside a parallel region, where oneDNN runs on the
 * calling thread. */
typedef struct {
	int dt, ta, tb, threads; /* dt: dnnl_f32 or dnnl_bf16, of A and B (C is f32) */
	uint32_t alpha, beta;
	int64_t M, N, K, lda, ldb, ldc;
} key;

typedef struct {
	key k;
	dnnl_primitive_t prim;
	dnnl_memory_desc_t a, b, c, scratch;
	size_t scratch_bytes;
	int refs; /* executions in flight; an entry is evicted only at 0 */
	int live;
} entry;

/* Products of one model take a few dozen shapes; decoding adds one per
 * context length, so old ones are evicted round-robin. */
#define CACHE 128
static entry cache[CACHE];
static size_t next_victim;
static dnnl_engine_t engine;
static int engine_status = -1;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
	engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success ? 0 : 1;
}

static uint32_t bits(float x)
{
	uint32_t u;
	memcpy(&u, &x, sizeof u);
	return u;
}

/* op(X) rows x cols stored with row stride ld, transposed or not. */
static dnnl_status_t md_init(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int t, int64_t ld, int dt)
{
	dnnl_dims_t dims = {rows, cols}, strides = {t ? 1 : ld, t ? ld : 1};
	return dnnl_memory_desc_init_by_strides(md, 2, dims, (dnnl_data_type_t)dt, strides);
}

static dnnl_status_t create(entry *en, const key *k, float alpha, float beta)
{
	dnnl_matmul_desc_t desc;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_status_t st;
	en->k = *k;
	en->prim = NULL;
	if ((st = md_init(&en->a, k->M, k->K, k->ta, k->lda, k->dt)) ||
	    (st = md_init(&en->b, k->K, k->N, k->tb, k->ldb, k->dt)) || (st = md_init(&en->c, k->M, k->N, 0, k->ldc, dnnl_f32)) ||
	    (st = dnnl_matmul_desc_init(&desc, &en->a, &en->b, NULL, &en->c)) ||
	    (st = dnnl_primitive_attr_create(&attr)) ||
	    /* Our own scratchpad per execution: the library's would be shared
	     * by threads running the same primitive at once. */
	    (st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)) ||
	    (alpha != 1 && (st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha))))
		goto out;
	if (beta != 0 && ((st = dnnl_post_ops_create(&po)) || (st = dnnl_post_ops_append_sum(po, beta)) ||
	                  (st = dnnl_primitive_attr_set_post_ops(attr, po))))
		goto out;
	if ((st = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL)))
		goto out;
	const dnnl_memory_desc_t *s = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	en->scratch = *s;
	en->scratch_bytes = dnnl_memory_desc_get_size(s);
	st = dnnl_primitive_create(&en->prim, pd);
out:
	dnnl_primitive_desc_destroy(pd);
	dnnl_post_ops_destroy(po);
	dnnl_primitive_attr_destroy(attr);
	return st;
}

/* The cached entry for k, its reference taken; NULL when oneDNN failed. */
static entry *acquire(const key *k, float alpha, float beta, dnnl_status_t *st)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < CACHE; i++)
		if (cache[i].live && !memcmp(&cache[i].k, k, sizeof *k)) {
			cache[i].refs++;
			pthread_mutex_unlock(&lock);
			return &cache[i];
		}
	/* Created under the lock: creation is rare, and two threads asking for
	 * the same new shape (one attention product per head) make one. */
	entry *en = NULL;
	for (size_t n = 0; n < CACHE && !en; n++, next_victim = (next_victim + 1) % CACHE)
		if (!cache[next_victim].refs)
			en = &cache[next_victim];
	if (!en) { /* every entry in use: impossible with fewer threads than CACHE */
		pthread_mutex_unlock(&lock);
		*st = dnnl_out_of_memory;
		return NULL;
	}
	if (en->live)
		dnnl_primitive_destroy(en->prim);
	en->live = 0;
	*st = create(en, k, alpha, beta);
	if (*st) {
		dnnl_primitive_destroy(en->prim);
		pthread_mutex_unlock(&lock);
		return NULL;
	}
	en->live = 1;
	en->refs = 1;
	pthread_mutex_unlock(&lock);
	return en;
}

static void release(entry *en)
{
	pthread_mutex_lock(&lock);
	en->refs--;
	pthread_mutex_unlock(&lock);
}

static dnnl_status_t run(entry *en, const void *A, const void *B, float *C)
{
	dnnl_memory_t m[4] = {NULL, NULL, NULL, NULL};
	dnnl_stream_t stream = NULL;
	void *scratch = NULL;
	dnnl_status_t st = dnnl_out_of_memory;
	if (en->scratch_bytes && !(scratch = aligned_alloc(64, (en->scratch_bytes + 63) / 64 * 64)))
		goto out;
	if ((st = dnnl_memory_create(&m[0], &en->a, engine, (void *)A)) ||
	    (st = dnnl_memory_create(&m[1], &en->b, engine, (void *)B)) ||
	    (st = dnnl_memory_create(&m[2], &en->c, engine, C)) ||
	    (scratch && (st = dnnl_memory_create(&m[3], &en->scratch, engine, scratch))) ||
	    (st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags)))
		goto out;
	dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, m[0]}, {DNNL_ARG_WEIGHTS, m[1]}, {DNNL_ARG_DST, m[2]},
	                           {DNNL_ARG_SCRATCHPAD, m[3]}};
	if (!(st = dnnl_primitive_execute(en->prim, stream, scratch ? 4 : 3, args)))
		st = dnnl_stream_wait(stream);
out:
	dnnl_stream_destroy(stream);
	for (int i = 0; i < 4; i++)
		dnnl_memory_destroy(m[i]);
	free(scratch);
	return st;
}

/* ---- products ---- */

static void openblas(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                     const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
	            (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* C = beta C, without reading C when beta is 0 (BLAS's rule). */
static void scale(size_t M, size_t N, float beta, float *C, size_t ldc)
{
	for (size_t i = 0; i < M; i++)
		for (size_t j = 0; j < N; j++)
			C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
}

/* One oneDNN product with A and B of type dt (dnnl_f32 or dnnl_bf16) and C
 * f32. Returns oneDNN's status: on failure C is untouched and the failure
 * is recorded for lora_blas_error. */
static dnnl_status_t product(int dt, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const void *A,
                             size_t lda, const void *B, size_t ldb, float beta, float *C, size_t ldc)
{
	pthread_once(&engine_once, engine_init);
	/* oneDNN plans a primitive for the pool's size when it is created and
	 * runs on that many threads; a small product is not worth waking the
	 * pool for, so it is planned and run with the pool set to one. */
	int pool = omp_get_max_threads(), small = (double)M * (double)N * (double)K < SPLIT_MIN_MNK;
	int threads = omp_in_parallel() || small ? 1 : pool;
	key k = {dt, ta != 0, tb != 0, threads, bits(alpha), bits(beta), (int64_t)M, (int64_t)N, (int64_t)K,
	         (int64_t)lda, (int64_t)ldb, (int64_t)ldc};
	dnnl_status_t st = engine_status ? dnnl_runtime_error : dnnl_success;
	entry *en = NULL;
	if (fail_next) {
		fail_next = 0;
		st = dnnl_unimplemented;
	}
	if (threads != pool)
		omp_set_num_threads(threads);
	if (!st && (en = acquire(&k, alpha, beta, &st)) != NULL) {
		st = run(en, A, B, C);
		release(en);
	}
	if (threads != pool)
		omp_set_num_threads(pool);
	if (st)
		fail(st == dnnl_out_of_memory ? LORA_ENOMEM : LORA_EINVAL, en ? "execution" : "primitive creation", st, M,
		     N, K);
	return st;
}

static void sgemm1(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	if (K == 0 || alpha == 0)
		scale(M, N, beta, C, ldc);
	else if (product(dnnl_f32, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
		openblas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* oneDNN 2.6's f32 matmul runs some wide untransposed B at a third of its
 * rate (N = 5632 or 11264 with K = 2048: the input gradients of a
 * TinyLlama MLP), while panels of at most this many columns run at full
 * rate (bench/matmul.sh shows both). */
#define PANEL 2048

static void sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                  const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	if (M == 0 || N == 0)
		return;
	if (tb || N <= 2 * PANEL) {
		sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		return;
	}
	for (size_t j = 0; j < N; j += PANEL)
		sgemm1(ta, tb, M, N - j < PANEL ? N - j : PANEL, K, alpha, A, lda, B + j, ldb, beta, C + j, ldc);
}

void lora_blas_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                     const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	if (tracing)
		record(ta, tb, M, N, K, LORA_F32);
	double t0 = clocking && omp_get_level() == 0 ? seconds() : -1;
	sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
	if (t0 >= 0)
		clocked += seconds() - t0;
}

/* ---- products of mixed types ---- */

static int bf16_state = -1;
static pthread_once_t bf16_once = PTHREAD_ONCE_INIT;

/* oneDNN 2.6 multiplies bf16 from avx512_core up (emulated below
 * avx512_core_bf16); whether it can here is found by creating one. */
static void bf16_probe(void)
{
	pthread_once(&engine_once, engine_init);
	key k = {dnnl_bf16, 0, 1, 1, bits(1), bits(0), 16, 16, 16, 16, 16, 16};
	entry en = {0};
	int isa = dnnl_get_effective_cpu_isa();
	bf16_state = LORA_BLAS_BF16_NONE;
	if (!engine_status && !create(&en, &k, 1, 0))
		bf16_state = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16 ? LORA_BLAS_BF16_NATIVE
		                                                                                      : LORA_BLAS_BF16_EMULATED;
	dnnl_primitive_destroy(en.prim);
}

int lora_blas_bf16(void)
{
	pthread_once(&bf16_once, bf16_probe);
	return bf16_state;
}

/* Elements of B converted at once when its type is not the product's,
 * 8 MB in f32: smaller panels cut the products into narrow ones that
 * oneDNN runs ~10% slower (TinyLlama step on AVX2 kernels). */
#define PANEL_ELEMS ((size_t)1 << 21)
#define CONVERT_CHUNK 4096

/* n elements of src (type t, any alignment) to dst as f32 or bf16 (to). */
static void convert(void *dst, lora_dtype to, const void *src, lora_dtype t, size_t n)
{
	size_t es = lora_dtype_size(t), ed = lora_dtype_size(to), nc = (n + CONVERT_CHUNK - 1) / CONVERT_CHUNK;
#pragma omp parallel for if (nc > 8 && !omp_in_parallel())
	for (size_t c = 0; c < nc; c++) {
		size_t i = c * CONVERT_CHUNK, len = n - i < CONVERT_CHUNK ? n - i : CONVERT_CHUNK;
		const char *s = (const char *)src + i * es;
		char *d = (char *)dst + i * ed;
		float f[CONVERT_CHUNK];
		if (t == to) {
			memcpy(d, s, len * es);
		} else if (to == LORA_F32) {
			lora_dtype_to_f32((float *)(void *)d, s, t, len);
		} else {
			lora_dtype_to_f32(f, s, t, len);
			lora_dtype_from_f32(d, f, to, len);
		}
	}
}

/* The product with B's rows converted to type `to` (f32 or bf16, A's type)
 * a panel at a time. tb: a panel of B's rows gives columns of C; else it
 * is a slice of K, and C accumulates over the panels. */
static void panels(lora_dtype to, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const void *A,
                   size_t lda, const void *B, lora_dtype bdt, size_t ldb, float beta, float *C, size_t ldc)
{
	size_t rows = tb ? N : K, cols = tb ? K : N, ea = lora_dtype_size(to), eb = lora_dtype_size(bdt);
	size_t P = PANEL_ELEMS / (cols ? cols : 1);
	P = P < 16 ? 16 : P > rows ? rows : P;
	/* The panel starts 16 bytes past a 32-byte boundary: oneDNN 2.6's AVX2
	 * sgemm multiplies an untransposed B that is 32-byte aligned at 60% of
	 * its rate (256x1024 by 1024x2048: 89 against 148 GFLOP/s; AVX-512 runs
	 * both alike), and the panels are that B in every input gradient. */
	char *mem = malloc(P * cols * 4 + 64);
	void *buf = mem ? mem + (48 - (uintptr_t)mem % 32) % 32 : NULL;
	float *wide = NULL; /* A in f32, made when a bf16 product fails */
	if (!buf) {
		fail(LORA_ENOMEM, "panel allocation", dnnl_out_of_memory, M, N, K);
		/* row by row needs no more than one row of B */
		P = 1;
		buf = mem = malloc(cols * 4 + 64);
	}
	for (size_t r0 = 0; r0 < rows && buf; r0 += P) {
		size_t n = rows - r0 < P ? rows - r0 : P;
		const char *src = (const char *)B + r0 * ldb * eb;
		/* the pool converts the rows: on one thread this cost a fifth of an
		 * f32 step from a bf16 checkpoint */
#pragma omp parallel for schedule(static) if (n * cols >= 8 * CONVERT_CHUNK && !omp_in_parallel())
		for (size_t i = 0; i < n; i++)
			convert((char *)buf + i * cols * ea, to, src + i * ldb * eb, bdt, cols);
		const void *a = tb ? A : (const char *)A + r0 * (ta ? lda : 1) * ea;
		float *c = tb ? C + r0 : C;
		size_t pm = M, pn = tb ? n : N, pk = tb ? K : n;
		float pb = tb || r0 == 0 ? beta : 1;
		if (to == LORA_F32) {
			sgemm(ta, tb, pm, pn, pk, alpha, a, lda, buf, cols, pb, c, ldc);
			continue;
		}
		if (!product(dnnl_bf16, ta, tb, pm, pn, pk, alpha, a, lda, buf, cols, pb, c, ldc))
			continue;
		/* bf16 widened to f32 is exact: the same product, slower */
		size_t na = ta ? (K - 1) * lda + M : (M - 1) * lda + K;
		if (!wide && (wide = malloc(na * sizeof *wide)) != NULL)
			convert(wide, LORA_F32, A, LORA_BF16, na);
		float *fb = malloc(n * cols * sizeof *fb);
		if (wide && fb) {
			convert(fb, LORA_F32, buf, LORA_BF16, n * cols);
			sgemm(ta, tb, pm, pn, pk, alpha, tb ? wide : wide + r0 * (ta ? lda : 1), lda, fb, cols, pb, c, ldc);
		}
		free(fb);
	}
	free(mem);
	free(wide);
}

void lora_blas_gemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const void *A, lora_dtype adt,
                    size_t lda, const void *B, lora_dtype bdt, size_t ldb, float beta, float *C, size_t ldc)
{
	if (tracing)
		record(ta, tb, M, N, K, adt);
	if (M == 0 || N == 0)
		return;
	if (K == 0 || alpha == 0) {
		scale(M, N, beta, C, ldc);
		return;
	}
	int direct = bdt == adt && (uintptr_t)B % lora_dtype_size(bdt) == 0;
	double t0 = clocking && omp_get_level() == 0 ? seconds() : -1;
	if (direct && adt == LORA_F32)
		sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
	else if (!direct || product(dnnl_bf16, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
		panels(adt, ta, tb, M, N, K, alpha, A, lda, B, bdt, ldb, beta, C, ldc);
	if (t0 >= 0)
		clocked += seconds() - t0;
}

void lora_blas_sgemm_naive(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                           size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	for (size_t i = 0; i < M; i++)
		for (size_t j = 0; j < N; j++) {
			double s = 0;
			for (size_t k = 0; k < K; k++) {
				float a = ta ? A[k * lda + i] : A[i * lda + k];
				float b = tb ? B[j * ldb + k] : B[k * ldb + j];
				s += (double)a * b;
			}
			float *c = &C[i * ldc + j];
			*c = (float)(alpha * s + (beta != 0 ? (double)beta * *c : 0));
		}
}

void lora_blas_sgemm_openblas(int n, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                              size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	openblas_threads(n);
	if (M && N)
		openblas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
	openblas_threads(lora_blas_threads());
}

const char *lora_blas_isa(void)
{
	switch (dnnl_get_effective_cpu_isa()) {
	case dnnl_cpu_isa_sse41: return "sse41";
	case dnnl_cpu_isa_avx: return "avx";
	case dnnl_cpu_isa_avx2: return "avx2";
	case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
	case dnnl_cpu_isa_avx512_core: return "avx512_core";
	case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
	case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
	case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
	default: return "other";
	}
}
