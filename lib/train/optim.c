#include "train/optim.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/outfile.h"
#include "core/path.h"

/* Elementwise loops run over blocks of this many elements. The block
 * boundaries, not the threads, decide how a loop is split, so every element
 * meets the same (vector or scalar) code path whatever the thread count. */
#define BLOCK 4096
/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN (1u << 16)

static int bad(lora_err *e, const char *what, double v, const char *range)
{
	return lora_err_set(e, LORA_EINVAL, "optimizer: %s must be %s, got %g", what, range, v);
}

/* [0, 1), and not NaN */
static int unit(double v)
{
	return v >= 0 && v < 1;
}

int lora_optim_init(lora_optim *o, const lora_optim_conf *conf, size_t n, lora_err *e)
{
	memset(o, 0, sizeof *o);
	if (conf->kind != LORA_OPTIM_ADAMW && conf->kind != LORA_OPTIM_SGD)
		return lora_err_set(e, LORA_EINVAL, "optimizer: unknown kind %d", (int)conf->kind);
	if (!(conf->lr >= 0 && isfinite(conf->lr)))
		return bad(e, "learning rate", conf->lr, "a non-negative number");
	if (!(conf->weight_decay >= 0 && isfinite(conf->weight_decay)))
		return bad(e, "weight decay", conf->weight_decay, "a non-negative number");
	if (conf->kind == LORA_OPTIM_ADAMW) {
		if (!unit(conf->beta1))
			return bad(e, "beta1", conf->beta1, "in [0, 1)");
		if (!unit(conf->beta2))
			return bad(e, "beta2", conf->beta2, "in [0, 1)");
		if (!(conf->eps > 0 && isfinite(conf->eps)))
			return bad(e, "epsilon", conf->eps, "a positive number");
	} else if (!unit(conf->momentum)) {
		return bad(e, "momentum", conf->momentum, "in [0, 1)");
	}
	size_t k = conf->kind == LORA_OPTIM_ADAMW ? 2 : conf->momentum > 0 ? 1 : 0;
	if (n > SIZE_MAX / sizeof(float))
		return lora_err_set(e, LORA_ENOMEM, "optimizer: %zu parameters overflow memory", n);
	/* calloc even for n = 0 so a non-NULL buffer always means "this kind has it" */
	if (k >= 1 && !(o->m = calloc(n ? n : 1, sizeof(float))))
		goto nomem;
	if (k == 2 && !(o->v = calloc(n ? n : 1, sizeof(float))))
		goto nomem;
	o->conf = *conf;
	o->n = n;
	return 0;
nomem:
	lora_optim_free(o);
	return lora_err_set(e, LORA_ENOMEM, "optimizer: out of memory for the state of %zu parameters", n);
}

void lora_optim_free(lora_optim *o)
{
	free(o->m);
	free(o->v);
	o->m = o->v = NULL;
	o->n = 0;
	o->step = 0;
}

static size_t nblocks(size_t n)
{
	return n / BLOCK + (n % BLOCK != 0);
}

int lora_optim_step(lora_optim *o, float *params, const float *grads, size_t n, double lr)
{
	if (n != o->n)
		return LORA_EINVAL;
	const lora_optim_conf *c = &o->conf;
	size_t nb = nblocks(n);
	uint64_t t = o->step + 1;
	if (c->kind == LORA_OPTIM_ADAMW) {
		float *m = o->m, *v = o->v;
		double b1 = c->beta1, b2 = c->beta2, eps = c->eps;
		double decay = 1.0 - lr * c->weight_decay;
		double bc1 = 1.0 - pow(b1, (double)t);
		double bc2 = 1.0 - pow(b2, (double)t);
		double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
		for (size_t b = 0; b < nb; b++) {
			size_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
			for (size_t i = lo; i < hi; i++) {
				double g = grads[i];
				/* The update reads the moments as stored (rounded to
				 * float), so a resumed run computes the same bits. */
				m[i] = (float)(b1 * m[i] + (1.0 - b1) * g);
				v[i] = (float)(b2 * v[i] + (1.0 - b2) * g * g);
				double denom = sqrt((double)v[i]) / bc2_sqrt + eps;
				params[i] = (float)(params[i] * decay - step_size * (double)m[i] / denom);
			}
		}
	} else {
		float *buf = o->m;
		double wd = c->weight_decay, mu = c->momentum;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
		for (size_t b = 0; b < nb; b++) {
			size_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
			for (size_t i = lo; i < hi; i++) {
				double g = (double)grads[i] + wd * params[i];
				if (buf) {
					/* torch starts the buffer as a copy of g; the buffer
					 * starts at zero, so mu*0 + g is that copy. */
					buf[i] = (float)(mu * buf[i] + g);
					g = buf[i];
				}
				params[i] = (float)(params[i] - lr * g);
			}
		}
	}
	o->step = t;
	return 0;
}

double lora_optim_clip_grad_norm(float *g, size_t n, double max_norm)
{
	/* Blocks are summed in groups of GROUP; partial sums are added in
	 * block order. Squares of finite floats cannot overflow a double. */
	enum { GROUP = 256 };
	double part[GROUP], sum = 0;
	size_t nb = nblocks(n);
	for (size_t b0 = 0; b0 < nb; b0 += GROUP) {
		size_t cnt = nb - b0 < GROUP ? nb - b0 : GROUP;
#pragma omp parallel for schedule(static) if (cnt * BLOCK >= PAR_MIN)
		for (size_t j = 0; j < cnt; j++) {
			size_t lo = (b0 + j) * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
			double s = 0;
			for (size_t i = lo; i < hi; i++)
				s += (double)g[i] * g[i];
			part[j] = s;
		}
		for (size_t j = 0; j < cnt; j++)
			sum += part[j];
	}
	double norm = sqrt(sum);
	if (max_norm > 0 && isfinite(norm)) {
		double coef = max_norm / (norm + 1e-6);
		if (coef < 1) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
			for (size_t b = 0; b < nb; b++) {
				size_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
				for (size_t i = lo; i < hi; i++)
					g[i] = (float)(g[i] * coef);
			}
		}
	}
	return norm;
}

double lora_optim_lr_at(const lora_optim_schedule *s, long step)
{
	double W = s->warmup > 0 ? (double)s->warmup : 0, T = (double)s->total;
	double st = step > 0 ? (double)step : 0;
	if (st < W)
		return s->lr * st / (W > 1 ? W : 1);
	if (s->kind == LORA_SCHED_CONSTANT)
		return s->lr;
	/* Past the end, hold the value at T rather than let cosine climb. */
	if (st > T)
		st = T;
	double span = T - W > 1 ? T - W : 1, f;
	if (s->kind == LORA_SCHED_LINEAR) {
		f = (T - st) / span;
	} else {
		double q = (st - W) / span;
		f = 0.5 * (1.0 + cos(M_PI * q));
	}
	return s->lr * (f > 0 ? f : 0);
}

/* ---- state files ---- */

#define HEADER 40

/* CRC-32 with the reflected IEEE polynomial, identical to zlib's crc32():
 * a dozen lines here keep zlib behind the .lora codec alone. */
typedef struct {
	uint32_t table[256];
	uint32_t crc;
} crc32_ctx;

static void crc_init(crc32_ctx *c)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t r = i;
		for (int k = 0; k < 8; k++)
			r = r & 1 ? 0xedb88320u ^ (r >> 1) : r >> 1;
		c->table[i] = r;
	}
	c->crc = 0xffffffffu;
}

static void crc_add(crc32_ctx *c, const unsigned char *p, size_t n)
{
	uint32_t r = c->crc;
	for (size_t i = 0; i < n; i++)
		r = c->table[(r ^ p[i]) & 0xff] ^ (r >> 8);
	c->crc = r;
}

static uint32_t crc_end(const crc32_ctx *c)
{
	return c->crc ^ 0xffffffffu;
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t nbufs(const lora_optim *o)
{
	return (o->m != NULL) + (o->v != NULL);
}

/* Values per chunk when converting floats to and from bytes. */
#define CHUNK 16384

int lora_optim_write(const lora_optim *o, FILE *f, const char *name, lora_err *e)
{
	unsigned char h[HEADER] = {0}, buf[4 * CHUNK];
	crc32_ctx crc;
	errno = 0;
	memcpy(h, LORA_OPTIM_MAGIC, 8);
	put32(h + 8, LORA_OPTIM_VERSION);
	put32(h + 12, (uint32_t)o->conf.kind);
	put64(h + 16, (uint64_t)o->n);
	put64(h + 24, o->step);
	put32(h + 32, nbufs(o));
	crc_init(&crc);
	crc_add(&crc, h, HEADER);
	if (fwrite(h, 1, HEADER, f) != HEADER)
		goto ioerr;
	const float *bufs[2] = {o->m, o->v};
	for (int k = 0; k < 2; k++) {
		if (!bufs[k])
			continue;
		for (size_t i = 0; i < o->n; i += CHUNK) {
			size_t cnt = o->n - i < CHUNK ? o->n - i : CHUNK;
			for (size_t j = 0; j < cnt; j++) {
				uint32_t u;
				memcpy(&u, &bufs[k][i + j], 4);
				put32(buf + 4 * j, u);
			}
			crc_add(&crc, buf, 4 * cnt);
			if (fwrite(buf, 4, cnt, f) != cnt)
				goto ioerr;
		}
	}
	put32(h, crc_end(&crc));
	if (fwrite(h, 1, 4, f) != 4)
		goto ioerr;
	return 0;
ioerr:
	return lora_err_set(e, LORA_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
}

static const char *kind_name(uint32_t k)
{
	return k == LORA_OPTIM_ADAMW ? "adamw" : k == LORA_OPTIM_SGD ? "sgd" : "an unknown optimizer";
}

/* fread exactly n bytes: 0, or an error naming the file. */
static int readn(FILE *f, void *p, size_t n, const char *name, lora_err *e)
{
	if (fread(p, 1, n, f) == n)
		return 0;
	if (ferror(f))
		return lora_err_set(e, LORA_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
	return lora_err_set(e, LORA_EFORMAT, "%s: optimizer state is truncated", name);
}

/* Read and check a state for o into fresh buffers (*nb, caller frees)
 * and *step, leaving o untouched. */
static int read_state(const lora_optim *o, FILE *f, const char *name, float *nb[2], uint64_t *step,
                      lora_err *e)
{
	unsigned char h[HEADER], buf[4 * CHUNK];
	crc32_ctx crc;
	int rc = readn(f, h, HEADER, name, e);
	if (rc)
		return rc;
	if (memcmp(h, LORA_OPTIM_MAGIC, 8) != 0)
		return lora_err_set(e, LORA_EFORMAT, "%s: not an optimizer state file (bad magic)", name);
	uint32_t version = get32(h + 8), kind = get32(h + 12), k = get32(h + 32);
	uint64_t n = get64(h + 16);
	if (version != LORA_OPTIM_VERSION)
		return lora_err_set(e, LORA_EFORMAT, "%s: optimizer state version %u is not supported (expected %d)",
		                    name, version, LORA_OPTIM_VERSION);
	if (kind > LORA_OPTIM_SGD || k > 2 || get32(h + 36) != 0 || (kind == LORA_OPTIM_ADAMW) != (k == 2))
		return lora_err_set(e, LORA_EFORMAT, "%s: corrupt optimizer state header", name);
	if (kind != (uint32_t)o->conf.kind)
		return lora_err_set(e, LORA_EINVAL, "%s: optimizer state is for %s, this run uses %s", name,
		                    kind_name(kind), kind_name((uint32_t)o->conf.kind));
	if (n != (uint64_t)o->n)
		return lora_err_set(e, LORA_EINVAL, "%s: optimizer state is for %llu parameters, this run has %zu",
		                    name, (unsigned long long)n, o->n);
	if (k != nbufs(o))
		return lora_err_set(e, LORA_EINVAL, "%s: optimizer state %s momentum buffer, this run %s", name,
		                    k ? "has a" : "has no", k ? "uses no momentum" : "uses momentum");
	crc_init(&crc);
	crc_add(&crc, h, HEADER);
	/* n equals the size of buffers o already holds, so n * 4 cannot
	 * overflow and the allocation is no larger than the caller's own. */
	for (uint32_t b = 0; b < k; b++) {
		if (!(nb[b] = malloc(o->n ? o->n * sizeof(float) : 1)))
			return lora_err_set(e, LORA_ENOMEM, "%s: out of memory for the optimizer state", name);
		for (size_t i = 0; i < o->n; i += CHUNK) {
			size_t cnt = o->n - i < CHUNK ? o->n - i : CHUNK;
			if ((rc = readn(f, buf, 4 * cnt, name, e)))
				return rc;
			crc_add(&crc, buf, 4 * cnt);
			for (size_t j = 0; j < cnt; j++) {
				uint32_t u = get32(buf + 4 * j);
				memcpy(&nb[b][i + j], &u, 4);
			}
		}
	}
	if ((rc = readn(f, buf, 4, name, e)))
		return rc;
	if (get32(buf) != crc_end(&crc))
		return lora_err_set(e, LORA_EFORMAT, "%s: optimizer state CRC mismatch (file is corrupt)", name);
	*step = get64(h + 24);
	return 0;
}

/* Replace o's buffers and step with the ones read. */
static void commit(lora_optim *o, float *nb[2], uint64_t step)
{
	if (o->m) {
		free(o->m);
		o->m = nb[0];
		nb[0] = NULL;
	}
	if (o->v) {
		free(o->v);
		o->v = nb[1];
		nb[1] = NULL;
	}
	o->step = step;
}

int lora_optim_read(lora_optim *o, FILE *f, const char *name, lora_err *e)
{
	float *nb[2] = {NULL, NULL};
	uint64_t step;
	int rc = read_state(o, f, name, nb, &step, e);
	if (!rc)
		commit(o, nb, step);
	free(nb[0]);
	free(nb[1]);
	return rc;
}

int lora_optim_save(const lora_optim *o, const char *path, lora_err *e)
{
	lora_outfile out;
	int rc = lora_outfile_open(&out, path, LORA_OUT_FORCE | LORA_OUT_BINARY, e);
	if (rc)
		return rc;
	const char *name = out.is_stdout ? "<stdout>" : path;
	if ((rc = lora_optim_write(o, out.fp, name, e))) {
		lora_outfile_abort(&out);
		return rc;
	}
	return lora_outfile_commit(&out, e);
}

int lora_optim_load(lora_optim *o, const char *path, lora_err *e)
{
	float *nb[2] = {NULL, NULL};
	uint64_t step;
	int fd = lora_path_open_file(path, NULL, e);
	if (fd < 0)
		return fd;
	FILE *f = fdopen(fd, "rb");
	if (!f) {
		close(fd);
		return lora_err_nomem(e);
	}
	int rc = read_state(o, f, path, nb, &step, e);
	if (rc)
		goto out;
	/* Trailing bytes mean the file is not what it claims: refuse before
	 * touching o. */
	if (fgetc(f) != EOF) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: unexpected bytes after the optimizer state", path);
		goto out;
	}
	if (ferror(f)) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno ? errno : EIO));
		goto out;
	}
	commit(o, nb, step);
out:
	free(nb[0]);
	free(nb[1]);
	fclose(f);
	return rc;
}
