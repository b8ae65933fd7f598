/* optim: AdamW and SGD steps against updates worked out by hand, clipping,
 * schedules, thread-count independence and state files. Expected values
 * are written as the arithmetic of the published algorithms, in double,
 * with the decimal results (computed separately) beside them. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "train/optim.h"
#include "core/rng.h"

static int near(double got, double want, double tol)
{
	return fabs(got - want) <= tol;
}

/* float results against double expectations: a few float ulps */
#define CHECKF(got, want, what)                                                                  \
	CHECK(near((got), (want), 4e-7 * (fabs(want) > 1 ? fabs(want) : 1)), "%s: got %.9g, want %.9g", \
	      what, (double)(got), (double)(want))

static lora_optim_conf adamw(double lr, double wd)
{
	return (lora_optim_conf){LORA_OPTIM_ADAMW, lr, 0.9, 0.999, 1e-8, wd, 0};
}

static lora_optim_conf sgd(double lr, double wd, double mu)
{
	return (lora_optim_conf){LORA_OPTIM_SGD, lr, 0.9, 0.999, 1e-8, wd, mu};
}

static void test_adamw(void)
{
	lora_optim o;
	lora_err e = {0};
	lora_optim_conf c = adamw(0.01, 0);
	float p[3] = {1.0f, -2.0f, 0.5f};
	CHECK(lora_optim_init(&o, &c, 3, &e) == 0, "init: %s", e.msg);
	CHECK(o.m && o.v && o.step == 0 && o.m[0] == 0 && o.v[2] == 0, "adamw state starts at zero");

	/* t = 1, g = (0.1, -0.2, 0):
	 *   m = 0.1 g = (0.01, -0.02, 0),  v = 0.001 g^2 = (1e-5, 4e-5, 0)
	 *   bias correction at t = 1: mhat = m / 0.1 = g, vhat = v / 0.001 = g^2
	 *   p -= 0.01 * g / (|g| + 1e-8)
	 *   p0 = 1 - 0.01*0.1/(0.1+1e-8)     = 0.9900000009999999
	 *   p1 = -2 + 0.01*0.2/(0.2+1e-8)    = -1.9900000005
	 *   p2 = 0.5 (zero gradient, zero moments: 0 / (0 + eps) = 0) */
	float g1[3] = {0.1f, -0.2f, 0.0f};
	CHECK(lora_optim_step(&o, p, g1, 3, 0.01) == 0, "step 1");
	CHECK(o.step == 1, "step count 1");
	CHECKF(o.m[0], 0.1 * 0.1, "m after t=1");
	CHECKF(o.v[1], 0.001 * 0.2 * 0.2, "v after t=1");
	CHECKF(p[0], 1 - 0.01 * 0.1 / (0.1 + 1e-8), "adamw t=1 p0");
	CHECKF(p[0], 0.9900000009999999, "adamw t=1 p0 (decimal)");
	CHECKF(p[1], -2 + 0.01 * 0.2 / (0.2 + 1e-8), "adamw t=1 p1");
	CHECK(p[2] == 0.5f, "zero gradient leaves p: %.9g", p[2]);

	/* t = 2, g = (0.3, -0.2, 0):
	 *   m0 = 0.9*0.01 + 0.1*0.3 = 0.039;   v0 = 0.999*1e-5 + 0.001*0.09 = 9.999e-5
	 *   bias correction at t = 2: 1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999
	 *   mhat0 = 0.039/0.19 = 0.20526315789, vhat0 = 9.999e-5/0.001999 = 0.05002001
	 *   p0 = 0.99000000099999 - 0.01*0.20526315789/(sqrt(0.05002001)+1e-8) = 0.9808221902205589
	 * A constant gradient keeps mhat = g and vhat = g^2 exactly:
	 *   m1 = 0.9*-0.02 + 0.1*-0.2 = -0.038, mhat1 = -0.038/0.19 = -0.2
	 *   v1 = 0.999*4e-5 + 0.001*0.04 = 7.996e-5, vhat1 = 7.996e-5/0.001999 = 0.04
	 *   p1 = -1.9900000005 + 0.01*0.2/(0.2+1e-8) = -1.980000001 */
	float g2[3] = {0.3f, -0.2f, 0.0f};
	lora_optim_step(&o, p, g2, 3, 0.01);
	double m0 = 0.9 * 0.01 + 0.1 * 0.3, v0 = 0.999 * 1e-5 + 0.001 * 0.09;
	double want0 = (1 - 0.01 * 0.1 / (0.1 + 1e-8)) - 0.01 * (m0 / 0.19) / (sqrt(v0 / 0.001999) + 1e-8);
	CHECKF(o.m[0], 0.039, "m after t=2");
	CHECKF(o.v[0], 9.999e-5, "v after t=2");
	CHECKF(p[0], want0, "adamw t=2 p0");
	CHECKF(p[0], 0.9808221902205589, "adamw t=2 p0 (decimal)");
	CHECKF(p[1], -1.980000001, "adamw t=2 p1");

	/* t = 3, g = (-0.1, -0.2, 0):
	 *   m0 = 0.9*0.039 + 0.1*-0.1 = 0.0251;  v0 = 0.999*9.999e-5 + 0.001*0.01 = 1.0989001e-4
	 *   1 - 0.9^3 = 0.271, 1 - 0.999^3 = 0.002997001
	 *   p0 = 0.98082219022 - 0.01*(0.0251/0.271)/(sqrt(1.0989001e-4/0.002997001)+1e-8)
	 *      = 0.9759852719920118
	 *   p1 = -1.980000001 + 0.01*0.2/(0.2+1e-8) = -1.9700000015 */
	float g3[3] = {-0.1f, -0.2f, 0.0f};
	lora_optim_step(&o, p, g3, 3, 0.01);
	double want3 = want0 - 0.01 * (0.0251 / 0.271) / (sqrt(1.0989001e-4 / 0.002997001) + 1e-8);
	CHECKF(p[0], want3, "adamw t=3 p0");
	CHECKF(p[0], 0.9759852719920118, "adamw t=3 p0 (decimal)");
	CHECKF(p[1], -1.9700000015, "adamw t=3 p1");
	CHECK(p[2] == 0.5f, "zero gradient for three steps");
	CHECK(o.step == 3, "step count 3");
	CHECK(lora_optim_step(&o, p, g3, 2, 0.01) == LORA_EINVAL && o.step == 3, "wrong n refused");
	lora_optim_free(&o);

	/* Bias correction makes the first update lr * g/(|g|+eps) whatever the
	 * gradient's scale: 1e-3 and 10 both move p by (almost exactly) lr. */
	float q[2] = {0, 0}, gq[2] = {1e-3f, 10.0f};
	lora_optim_init(&o, &c, 2, &e);
	lora_optim_step(&o, q, gq, 2, 0.01);
	CHECKF(q[0], -0.01 * 1e-3 / (1e-3 + 1e-8), "t=1 small gradient moves lr");
	CHECKF(q[1], -0.01 * 10 / (10 + 1e-8), "t=1 large gradient moves lr");
	lora_optim_free(&o);

	/* Decoupled weight decay: p *= 1 - lr*wd, independent of the gradient.
	 *   wd = 0.1, lr = 0.01, p = 2, g = 0:   p = 2 * (1 - 0.001) = 1.998
	 *   (coupled decay would feed g = 0.2 to Adam and move p by lr: 1.99)
	 *   g = 0.5:  p = 1.998 - 0.01*0.5/(0.5+1e-8) = 1.98800000020 */
	c = adamw(0.01, 0.1);
	float w[2] = {2, 2}, gw[2] = {0, 0.5f};
	lora_optim_init(&o, &c, 2, &e);
	lora_optim_step(&o, w, gw, 2, 0.01);
	CHECKF(w[0], 1.998, "adamw decoupled decay, g = 0");
	CHECKF(w[1], 1.998 - 0.01 * 0.5 / (0.5 + 1e-8), "adamw decoupled decay, g = 0.5");
	CHECK(o.m[0] == 0 && o.v[0] == 0, "decay does not enter the moments");
	/* the rate passed to step is the one used: lr 0 changes nothing */
	float w0 = w[1];
	lora_optim_step(&o, w, gw, 2, 0.0);
	CHECK(w[1] == w0, "lr 0 leaves p");
	lora_optim_free(&o);
}

static void test_sgd(void)
{
	lora_optim o;
	lora_err e = {0};
	/* momentum 0.9, lr 0.1, no decay:
	 *   t1: buf = g1 = (0.5, 0.2);                      p = (1 - 0.05, -1 - 0.02) = (0.95, -1.02)
	 *   t2: buf = 0.9 buf + (-0.1, 0.4) = (0.35, 0.58);  p = (0.915, -1.078)
	 *   t3: buf = 0.9 buf + (0.2, 0.2) = (0.515, 0.722); p = (0.8635, -1.1502) */
	lora_optim_conf c = sgd(0.1, 0, 0.9);
	float p[2] = {1, -1}, g1[2] = {0.5f, 0.2f}, g2[2] = {-0.1f, 0.4f}, g3[2] = {0.2f, 0.2f};
	CHECK(lora_optim_init(&o, &c, 2, &e) == 0, "init: %s", e.msg);
	CHECK(o.m && !o.v, "sgd with momentum has one buffer");
	lora_optim_step(&o, p, g1, 2, 0.1);
	CHECKF(o.m[0], 0.5, "first step: buf = g");
	CHECKF(p[0], 0.95, "sgd t1 p0");
	CHECKF(p[1], -1.02, "sgd t1 p1");
	lora_optim_step(&o, p, g2, 2, 0.1);
	CHECKF(o.m[1], 0.58, "buf t2");
	CHECKF(p[0], 0.915, "sgd t2 p0");
	CHECKF(p[1], -1.078, "sgd t2 p1");
	lora_optim_step(&o, p, g3, 2, 0.1);
	CHECKF(p[0], 0.8635, "sgd t3 p0");
	CHECKF(p[1], -1.1502, "sgd t3 p1");
	lora_optim_free(&o);

	/* Coupled weight decay (torch SGD): g += wd*p before anything else.
	 *   wd 0.1, lr 0.1, p 2, g 0.5, no momentum: g = 0.7, p = 2 - 0.07 = 1.93
	 *   with momentum 0.9 the first buffer holds the decayed gradient, 0.7;
	 *   t2 (g 0.5 again, p 1.93): g = 0.5 + 0.193 = 0.693,
	 *       buf = 0.63 + 0.693 = 1.323, p = 1.93 - 0.1323 = 1.7977 */
	c = sgd(0.1, 0.1, 0);
	float w[1] = {2}, gw[1] = {0.5f};
	lora_optim_init(&o, &c, 1, &e);
	CHECK(!o.m && !o.v, "plain sgd has no state");
	lora_optim_step(&o, w, gw, 1, 0.1);
	CHECKF(w[0], 1.93, "sgd coupled decay");
	lora_optim_free(&o);
	c = sgd(0.1, 0.1, 0.9);
	w[0] = 2;
	lora_optim_init(&o, &c, 1, &e);
	lora_optim_step(&o, w, gw, 1, 0.1);
	CHECKF(o.m[0], 0.7, "momentum buffer starts from the decayed gradient");
	CHECKF(w[0], 1.93, "sgd momentum + decay t1");
	lora_optim_step(&o, w, gw, 1, 0.1);
	CHECKF(o.m[0], 1.323, "momentum buffer t2");
	CHECKF(w[0], 1.7977, "sgd momentum + decay t2");
	lora_optim_free(&o);
}

static void test_init_errors(void)
{
	lora_optim o;
	lora_err e = {0};
	lora_optim_conf c = adamw(0.01, 0);
	c.beta1 = 1;
	CHECK(lora_optim_init(&o, &c, 4, &e) == LORA_EINVAL && !strcmp(e.msg, "optimizer: beta1 must be in [0, 1), got 1"),
	      "beta1: %s", e.msg);
	c = adamw(0.01, 0);
	c.eps = 0;
	CHECK(lora_optim_init(&o, &c, 4, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "optimizer: epsilon must be a positive number, got 0"), "eps: %s", e.msg);
	c = adamw(-1, 0);
	CHECK(lora_optim_init(&o, &c, 4, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "optimizer: learning rate must be a non-negative number, got -1"), "lr: %s", e.msg);
	c = sgd(0.1, 0, 1.5);
	CHECK(lora_optim_init(&o, &c, 4, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "optimizer: momentum must be in [0, 1), got 1.5"), "momentum: %s", e.msg);
	c = sgd(0.1, NAN, 0);
	CHECK(lora_optim_init(&o, &c, 4, &e) == LORA_EINVAL, "NaN weight decay refused");
	/* zero parameters is a valid (empty) arena */
	c = adamw(0.01, 0);
	CHECK(lora_optim_init(&o, &c, 0, &e) == 0 && lora_optim_step(&o, NULL, NULL, 0, 0.01) == 0, "n = 0");
	lora_optim_free(&o);
}

static void test_clip(void)
{
	/* (3, 4): norm 5; max 1 -> coef = 1/(5 + 1e-6): (0.599999880000024, 0.799999840000032) */
	float g[2] = {3, 4};
	double norm = lora_optim_clip_grad_norm(g, 2, 1.0);
	CHECK(norm == 5.0, "norm %.17g", norm);
	CHECKF(g[0], 3 / 5.000001, "clipped g0");
	CHECKF(g[1], 0.799999840000032, "clipped g1");
	/* coef >= 1: untouched */
	float h[2] = {3, 4};
	CHECK(lora_optim_clip_grad_norm(h, 2, 10.0) == 5.0 && h[0] == 3 && h[1] == 4, "below max: unchanged");
	/* max 0 disables but still measures */
	CHECK(lora_optim_clip_grad_norm(h, 2, 0.0) == 5.0 && h[0] == 3 && h[1] == 4, "max 0: measure only");
	/* max equal to the norm still scales by 5/(5 + 1e-6), as torch does */
	lora_optim_clip_grad_norm(h, 2, 5.0);
	CHECK(h[0] < 3 && near(h[0], 3 * 5 / 5.000001, 1e-6), "max == norm: %.9g", h[0]);
	/* non-finite norm: reported, gradient left alone */
	float bad[3] = {INFINITY, 1, 2};
	CHECK(isinf(lora_optim_clip_grad_norm(bad, 3, 1.0)) && bad[1] == 1 && bad[2] == 2, "inf gradient left alone");
	float nan_[2] = {NAN, 1};
	CHECK(isnan(lora_optim_clip_grad_norm(nan_, 2, 1.0)) && nan_[1] == 1, "NaN gradient left alone");
	CHECK(lora_optim_clip_grad_norm(NULL, 0, 1.0) == 0, "empty vector");
	/* many blocks: 1000003 values of 0.5, norm 0.5*sqrt(1000003) */
	size_t n = 1000003;
	float *big = malloc(n * sizeof *big);
	for (size_t i = 0; i < n; i++)
		big[i] = 0.5f;
	norm = lora_optim_clip_grad_norm(big, n, 1.0);
	CHECK(near(norm, 0.5 * sqrt(1000003.0), 1e-9), "long norm %.17g", norm);
	double sq = 0;
	for (size_t i = 0; i < n; i++)
		sq += (double)big[i] * big[i];
	CHECK(near(sqrt(sq), 1.0, 1e-5), "clipped to norm 1: %.9g", sqrt(sq));
	free(big);
}

static void test_schedules(void)
{
	lora_optim_schedule s = {LORA_SCHED_COSINE, 2e-4, 10, 100};
	/* warmup: s/10; then 0.5*(1 + cos(pi*(s-10)/90)) */
	CHECK(lora_optim_lr_at(&s, 0) == 0, "cosine 0");
	CHECK(near(lora_optim_lr_at(&s, 5), 2e-4 * 0.5, 1e-18), "cosine 5");
	CHECK(near(lora_optim_lr_at(&s, 10), 2e-4, 1e-18), "cosine 10 (end of warmup)");
	CHECK(near(lora_optim_lr_at(&s, 40), 2e-4 * 0.75, 1e-18), "cosine 40: q = 1/3, 0.5*(1+cos(pi/3)) = 0.75");
	CHECK(near(lora_optim_lr_at(&s, 55), 2e-4 * 0.5, 1e-18), "cosine 55: q = 1/2, 0.5");
	CHECK(near(lora_optim_lr_at(&s, 100), 0, 1e-18), "cosine 100");
	CHECK(near(lora_optim_lr_at(&s, 150), 0, 1e-18), "cosine past the end holds 0");
	CHECK(lora_optim_lr_at(&s, -3) == 0, "negative step counts as 0");
	s.kind = LORA_SCHED_LINEAR;
	/* (100 - s)/90 after warmup */
	CHECK(lora_optim_lr_at(&s, 0) == 0, "linear 0");
	CHECK(near(lora_optim_lr_at(&s, 5), 1e-4, 1e-18), "linear 5");
	CHECK(near(lora_optim_lr_at(&s, 10), 2e-4, 1e-18), "linear 10");
	CHECK(near(lora_optim_lr_at(&s, 55), 1e-4, 1e-18), "linear 55: 45/90");
	CHECK(near(lora_optim_lr_at(&s, 91), 2e-4 / 10, 1e-18), "linear 91: 9/90");
	CHECK(lora_optim_lr_at(&s, 100) == 0 && lora_optim_lr_at(&s, 1000) == 0, "linear 100 and beyond");
	s.kind = LORA_SCHED_CONSTANT;
	CHECK(lora_optim_lr_at(&s, 0) == 0, "constant 0");
	CHECK(near(lora_optim_lr_at(&s, 5), 1e-4, 1e-18), "constant 5");
	CHECK(lora_optim_lr_at(&s, 10) == 2e-4 && lora_optim_lr_at(&s, 99) == 2e-4 && lora_optim_lr_at(&s, 500) == 2e-4,
	      "constant after warmup");
	/* no warmup: full rate from step 0 */
	lora_optim_schedule z = {LORA_SCHED_LINEAR, 1.0, 0, 4};
	CHECK(lora_optim_lr_at(&z, 0) == 1 && lora_optim_lr_at(&z, 1) == 0.75 && lora_optim_lr_at(&z, 3) == 0.25 && lora_optim_lr_at(&z, 4) == 0,
	      "linear, no warmup: 1, 0.75, .., 0");
	z.kind = LORA_SCHED_COSINE;
	CHECK(lora_optim_lr_at(&z, 0) == 1 && near(lora_optim_lr_at(&z, 2), 0.5, 1e-15), "cosine, no warmup");
	z.kind = LORA_SCHED_CONSTANT;
	CHECK(lora_optim_lr_at(&z, 0) == 1, "constant, no warmup");
	/* warmup of 1: step 0 is 0/1 */
	lora_optim_schedule one = {LORA_SCHED_CONSTANT, 3.0, 1, 10};
	CHECK(lora_optim_lr_at(&one, 0) == 0 && lora_optim_lr_at(&one, 1) == 3, "warmup 1");
}

/* Three AdamW and three SGD steps, clipping included, with the given
 * thread count; results into out (params, then state). */
static void run_threads(int threads, size_t n, float *out)
{
	omp_set_num_threads(threads);
	lora_rng r;
	lora_rng_seed(&r, 7);
	float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
	for (size_t i = 0; i < n; i++)
		p[i] = lora_rng_normal(&r);
	lora_optim a, s;
	lora_optim_conf ca = adamw(1e-3, 0.01), cs = sgd(0.05, 0.01, 0.9);
	lora_optim_init(&a, &ca, n, NULL);
	lora_optim_init(&s, &cs, n, NULL);
	double norms = 0;
	for (int t = 0; t < 3; t++) {
		for (size_t i = 0; i < n; i++)
			g[i] = lora_rng_normal(&r) * 0.01f;
		norms += lora_optim_clip_grad_norm(g, n, 0.5);
		lora_optim_step(&a, p, g, n, 1e-3);
		lora_optim_step(&s, p, g, n, 0.05);
	}
	memcpy(out, p, n * sizeof *p);
	memcpy(out + n, a.m, n * sizeof *p);
	memcpy(out + 2 * n, a.v, n * sizeof *p);
	memcpy(out + 3 * n, s.m, n * sizeof *p);
	memcpy(out + 4 * n, &norms, sizeof norms);
	lora_optim_free(&a);
	lora_optim_free(&s);
	free(p);
	free(g);
}

static void test_threads(void)
{
	size_t n = 300007; /* several blocks and a ragged tail */
	size_t bytes = (4 * n) * sizeof(float) + sizeof(double);
	float *one = calloc(1, bytes), *two = calloc(1, bytes), *three = calloc(1, bytes);
	run_threads(1, n, one);
	run_threads(2, n, two);
	run_threads(3, n, three);
	CHECK(memcmp(one, two, bytes) == 0, "1 and 2 threads give the same bytes");
	CHECK(memcmp(one, three, bytes) == 0, "1 and 3 threads give the same bytes");
	free(one);
	free(two);
	free(three);
	omp_set_num_threads(2);
}

static char *tmpname(const char *tag)
{
	const char *dir = getenv("TMPDIR");
	char *path = malloc(4096);
	snprintf(path, 4096, "%s/%s-XXXXXX", dir && *dir ? dir : "/tmp", tag);
	int fd = mkstemp(path);
	if (fd >= 0)
		close(fd);
	return path;
}

static long fsize(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fclose(f);
	return n;
}

static unsigned char *slurp(const char *path, long *n)
{
	*n = fsize(path);
	unsigned char *b = malloc((size_t)*n + 1);
	FILE *f = fopen(path, "rb");
	*n = (long)fread(b, 1, (size_t)*n, f);
	fclose(f);
	return b;
}

static void spit(const char *path, const unsigned char *b, long n)
{
	FILE *f = fopen(path, "wb");
	fwrite(b, 1, (size_t)n, f);
	fclose(f);
}

static void test_state(void)
{
	size_t n = 5003;
	lora_err e = {0};
	lora_rng r;
	lora_rng_seed(&r, 3);
	float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q), *g = malloc(n * sizeof *g);
	for (size_t i = 0; i < n; i++)
		p[i] = lora_rng_normal(&r);
	lora_optim a, b;
	lora_optim_conf c = adamw(1e-3, 0.01);
	lora_optim_init(&a, &c, n, &e);
	for (int t = 0; t < 2; t++) {
		for (size_t i = 0; i < n; i++)
			g[i] = lora_rng_normal(&r);
		lora_optim_step(&a, p, g, n, 1e-3);
	}
	char *path = tmpname("optim");
	CHECK(lora_optim_save(&a, path, &e) == 0, "save: %s", e.msg);
	CHECK(fsize(path) == (long)(40 + 8 * n + 4), "file size %ld", fsize(path));
	long len;
	unsigned char *raw = slurp(path, &len);
	CHECK(!memcmp(raw, "LORAOPT\0", 8) && raw[8] == 1 && raw[12] == 0 && raw[16] == (5003 & 255) &&
	          raw[17] == (5003 >> 8) && raw[24] == 2 && raw[32] == 2,
	      "header fields");
	uint32_t stored = (uint32_t)raw[len - 4] | (uint32_t)raw[len - 3] << 8 | (uint32_t)raw[len - 2] << 16 |
	                  (uint32_t)raw[len - 1] << 24;
	CHECK(stored == (uint32_t)crc32(0, raw, (uInt)(len - 4)), "CRC is zlib's crc32 of the bytes before it");

	/* resume: load into a fresh optimizer, take the same third step on
	 * both, compare bytes */
	CHECK(lora_optim_init(&b, &c, n, &e) == 0 && lora_optim_load(&b, path, &e) == 0, "load: %s", e.msg);
	CHECK(b.step == 2, "step restored");
	CHECK(!memcmp(a.m, b.m, n * 4) && !memcmp(a.v, b.v, n * 4), "moments restored bit for bit");
	memcpy(q, p, n * sizeof *p);
	for (size_t i = 0; i < n; i++)
		g[i] = lora_rng_normal(&r);
	lora_optim_step(&a, p, g, n, 1e-3);
	lora_optim_step(&b, q, g, n, 1e-3);
	CHECK(!memcmp(p, q, n * sizeof *p) && !memcmp(a.v, b.v, n * 4), "resumed step is bit-identical");

	char want[4200];
	/* one flipped bit in the moments */
	unsigned char *bad = malloc((size_t)len + 1);
	memcpy(bad, raw, (size_t)len);
	bad[100] ^= 0x10;
	spit(path, bad, len);
	uint64_t before = b.step;
	float m0 = b.m[0];
	snprintf(want, sizeof want, "%s: optimizer state CRC mismatch (file is corrupt)", path);
	CHECK(lora_optim_load(&b, path, &e) == LORA_EFORMAT && !strcmp(e.msg, want), "corrupt: %s", e.msg);
	CHECK(b.step == before && b.m[0] == m0, "failed load leaves the optimizer as it was");
	/* truncated */
	spit(path, raw, len - 10);
	snprintf(want, sizeof want, "%s: optimizer state is truncated", path);
	CHECK(lora_optim_load(&b, path, &e) == LORA_EFORMAT && !strcmp(e.msg, want), "truncated: %s", e.msg);
	spit(path, raw, 20);
	CHECK(lora_optim_load(&b, path, &e) == LORA_EFORMAT && !strcmp(e.msg, want), "truncated header: %s", e.msg);
	/* trailing byte */
	memcpy(bad, raw, (size_t)len);
	bad[len] = 0;
	spit(path, bad, len + 1);
	snprintf(want, sizeof want, "%s: unexpected bytes after the optimizer state", path);
	CHECK(lora_optim_load(&b, path, &e) == LORA_EFORMAT && !strcmp(e.msg, want), "trailing: %s", e.msg);
	/* bad magic */
	memcpy(bad, raw, (size_t)len);
	bad[0] = 'X';
	spit(path, bad, len);
	snprintf(want, sizeof want, "%s: not an optimizer state file (bad magic)", path);
	CHECK(lora_optim_load(&b, path, &e) == LORA_EFORMAT && !strcmp(e.msg, want), "magic: %s", e.msg);
	/* a state for another size or kind */
	spit(path, raw, len);
	lora_optim other;
	lora_optim_init(&other, &c, n + 1, &e);
	snprintf(want, sizeof want, "%s: optimizer state is for 5003 parameters, this run has 5004", path);
	CHECK(lora_optim_load(&other, path, &e) == LORA_EINVAL && !strcmp(e.msg, want), "size: %s", e.msg);
	lora_optim_free(&other);
	lora_optim_conf cs = sgd(0.1, 0, 0.9);
	lora_optim_init(&other, &cs, n, &e);
	snprintf(want, sizeof want, "%s: optimizer state is for adamw, this run uses sgd", path);
	CHECK(lora_optim_load(&other, path, &e) == LORA_EINVAL && !strcmp(e.msg, want), "kind: %s", e.msg);
	/* SGD: momentum buffer round trip, and a plain-SGD run refuses it */
	float pm[4] = {1, 2, 3, 4}, gm[4] = {1, 1, 1, 1};
	lora_optim sm;
	lora_optim_init(&sm, &cs, 4, &e);
	lora_optim_step(&sm, pm, gm, 4, 0.1);
	CHECK(lora_optim_save(&sm, path, &e) == 0 && fsize(path) == 40 + 16 + 4, "sgd save: %s", e.msg);
	lora_optim_free(&sm);
	lora_optim_init(&sm, &cs, 4, &e);
	CHECK(lora_optim_load(&sm, path, &e) == 0 && sm.step == 1 && sm.m[2] == 1.0f, "sgd load: %s", e.msg);
	lora_optim_free(&sm);
	lora_optim_conf plain = sgd(0.1, 0, 0);
	lora_optim_init(&sm, &plain, 4, &e);
	snprintf(want, sizeof want, "%s: optimizer state has a momentum buffer, this run uses no momentum", path);
	CHECK(lora_optim_load(&sm, path, &e) == LORA_EINVAL && !strcmp(e.msg, want), "momentum: %s", e.msg);
	lora_optim_free(&sm);
	/* missing file */
	unlink(path);
	snprintf(want, sizeof want, "%s: No such file or directory", path);
	CHECK(lora_optim_load(&b, path, &e) == LORA_EIO && !strcmp(e.msg, want), "missing: %s", e.msg);

	lora_optim_free(&other);
	lora_optim_free(&a);
	lora_optim_free(&b);
	free(bad);
	free(raw);
	free(path);
	free(p);
	free(q);
	free(g);
}

int main(void)
{
	test_adamw();
	test_sgd();
	test_init_errors();
	test_clip();
	test_schedules();
	test_threads();
	test_state();
	DONE();
}
