#include "ops/merge.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/outdir.h"
#include "core/outfile.h"
#include "core/path.h"
#include "io/gguf.h"
#include "io/gguflora.h"
#include "io/load.h"
#include "math/blas.h"
#include "math/linalg.h"

/* One change to one model tensor. */
typedef struct {
	const char *tensor; /* model tensor name */
	size_t input;       /* which adapter, for order and messages */
	const lora_layer *l;
	const lora_adapter *a;
	float coef;         /* user scale (negated to subtract) times alpha/r */
	int bias;           /* add coef * l->bias to this 1-D tensor */
} op;

static int cmp_op(const void *x, const void *y)
{
	const op *a = x, *b = y;
	int c = strcmp(a->tensor, b->tensor);
	return c ? c : (a->input > b->input) - (a->input < b->input);
}

typedef struct {
	op *ops;
	size_t n;
	char **names; /* owned tensor names the ops point to */
} plan;

static void plan_free(plan *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->names[i]);
	free(p->names);
	free(p->ops);
}

static int plan_add(plan *p, const char *tensor, size_t input, const lora_adapter *a,
                    const lora_layer *l, float coef, int bias, lora_err *e)
{
	op *o = realloc(p->ops, (p->n + 1) * sizeof *o);
	char **nm = realloc(p->names, (p->n + 1) * sizeof *nm);
	if (o)
		p->ops = o;
	if (nm)
		p->names = nm;
	if (!o || !nm || !(nm[p->n] = strdup(tensor)))
		return lora_err_nomem(e);
	o[p->n] = (op){nm[p->n], input, l, a, coef, bias};
	p->n++;
	return 0;
}

/* Match every adapter layer to the model and check shapes, before any
 * heavy work or output. */
static int build_plan(plan *p, const lora_ckpt *m, const lora_merge_input *in, size_t n,
                      const lora_merge_opts *o, lora_err *e)
{
	char name[1100];
	for (size_t i = 0; i < n; i++) {
		const lora_adapter *a = in[i].a;
		if (a->nextras && !o->ignore_unknown) {
			/* Name every one, so nothing is silently dropped later either. */
			char names[600] = "";
			for (size_t k = 0; k < a->nextras; k++)
				snprintf(names + strlen(names), sizeof names - strlen(names), "%s'%s'", k ? ", " : "",
				         a->extras[k].name);
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: %zu tensor%s not linear LoRA factors and cannot be merged "
			                    "(--ignore-unknown skips them): %s",
			                    in[i].path, a->nextras, a->nextras == 1 ? " is" : "s are", names);
		}
		for (size_t k = 0; k < a->nlayers; k++) {
			const lora_layer *l = &a->layers[k];
			snprintf(name, sizeof name, "%s.weight", l->name);
			const lora_st_tensor *t = lora_ckpt_find(m, name);
			if (!t)
				return lora_err_set(e, LORA_EINVAL, "%s: layer '%s': no tensor '%s' in %s", in[i].path,
				                    l->name, name, m->path);
			size_t want0 = a->fan_in_fan_out ? l->in : l->out, want1 = a->fan_in_fan_out ? l->out : l->in;
			if (t->ndim != 2 || t->shape[0] != want0 || t->shape[1] != want1) {
				char got[64] = "";
				for (size_t d = 0; d < t->ndim; d++)
					snprintf(got + strlen(got), sizeof got - strlen(got), "%s%zu", d ? "x" : "", t->shape[d]);
				return lora_err_set(e, LORA_EINVAL,
				                    "%s: tensor '%s': shape %s in %s does not match the adapter (%zux%zu)",
				                    in[i].path, name, t->ndim ? got : "scalar", m->path, want0, want1);
			}
			if (!lora_dtype_is_float(t->dtype))
				return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' is %s, an unsupported dtype (F32, F16 and BF16 "
				                    "weights can be merged)", m->path, name, lora_dtype_st_name(t->dtype));
			if (l->magnitude && o->subtract)
				return lora_err_set(e, LORA_EINVAL,
				                    "%s: layer '%s' is DoRA: its merge rescales rows and cannot be subtracted",
				                    in[i].path, l->name);
			float coef = (float)((o->subtract ? -1.0 : 1.0) * in[i].scale * lora_adapter_layer_scale(a, l));
			int rc = plan_add(p, name, i, a, l, coef, 0, e);
			if (rc)
				return rc;
			if (l->bias) {
				snprintf(name, sizeof name, "%s.bias", l->name);
				const lora_st_tensor *b = lora_ckpt_find(m, name);
				if (!b)
					return lora_err_set(e, LORA_EINVAL, "%s: layer '%s' has a lora_B bias but %s has no '%s'",
					                    in[i].path, l->name, m->path, name);
				if (b->ndim != 1 || b->shape[0] != l->out || !lora_dtype_is_float(b->dtype))
					return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' in %s is not a float vector of %zu",
					                    in[i].path, name, m->path, l->out);
				if ((rc = plan_add(p, name, i, a, l, coef, 1, e)))
					return rc;
			}
		}
	}
	qsort(p->ops, p->n, sizeof *p->ops, cmp_op);
	for (size_t i = 1; i < p->n; i++)
		if (p->ops[i].input == p->ops[i - 1].input && strcmp(p->ops[i].tensor, p->ops[i - 1].tensor) == 0)
			return lora_err_set(e, LORA_EINVAL, "%s: two layers of this adapter change '%s'",
			                    in[p->ops[i].input].path, p->ops[i].tensor);
	return 0;
}

/* Ops for a tensor: [*first, *first + count). */
static size_t find_ops(const plan *p, const char *tensor, size_t *first)
{
	size_t lo = 0, hi = p->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(p->ops[mid].tensor, tensor) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t k = lo;
	while (k < p->n && strcmp(p->ops[k].tensor, tensor) == 0)
		k++;
	*first = lo;
	return k - lo;
}

/* W += coef * B A, or for fan_in_fan_out weights (stored in x out) W += coef * A^T B^T. */
static void apply_op(float *W, const op *x)
{
	const lora_layer *l = x->l;
	if (x->bias) {
		for (size_t j = 0; j < l->out; j++)
			W[j] += x->coef * l->bias[j];
		return;
	}
	if (!x->a->fan_in_fan_out)
		lora_linalg_sgemm(0, 0, l->out, l->in, l->rank, x->coef, l->B, l->A, 1.0f, W);
	else
		lora_linalg_sgemm(1, 1, l->in, l->out, l->rank, x->coef, l->A, l->B, 1.0f, W);
	if (!l->magnitude)
		return;
	/* DoRA: each output row of W + dW is rescaled to length m_j. */
	size_t rows = l->out, cols = l->in;
	for (size_t j = 0; j < rows; j++) {
		double ss = 0;
		for (size_t k = 0; k < cols; k++) {
			float v = x->a->fan_in_fan_out ? W[k * rows + j] : W[j * cols + k];
			ss += (double)v * v;
		}
		float f = ss > 0 ? (float)(l->magnitude[j] / sqrt(ss)) : 0.0f;
		for (size_t k = 0; k < cols; k++)
			if (x->a->fan_in_fan_out)
				W[k * rows + j] *= f;
			else
				W[j * cols + k] *= f;
	}
}

static lora_dtype out_dtype(const lora_st_tensor *t, const lora_merge_opts *o)
{
	return o->dtype >= 0 && lora_dtype_is_float(t->dtype) ? (lora_dtype)o->dtype : t->dtype;
}

/* ---- the output stream ----
 *
 * Output bytes go through a few slots to a writer thread, which writes them
 * to the shard's file while this thread converts and multiplies the next
 * ones, so that the disk (or, where the file system refuses direct I/O,
 * write(2)'s copy into the page cache, as costly as the rest of a merge)
 * and the arithmetic overlap. */
#define SLOTS 16
#define SLOT (4u << 20) /* bytes; a whole number of elements of every dtype */

typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t more, room;
	unsigned char *buf; /* SLOTS x SLOT */
	size_t len[SLOTS];
	uint64_t head, tail; /* slots handed over, written */
	void *w;             /* the file being written, */
	int (*write)(void *w, const void *p, size_t n, lora_err *e); /* by this */
	int stop, rc;        /* rc: the first write error, in e; later slots are dropped */
	lora_err e;
	pthread_t thread;
} stream;

static void *writer_main(void *arg)
{
	stream *s = arg;
	lora_err e = {0};
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->head == s->tail && !s->stop)
			pthread_cond_wait(&s->more, &s->mu);
		if (s->head == s->tail)
			break;
		size_t i = (size_t)(s->tail % SLOTS);
		void *w = s->w;
		int failed = s->rc;
		pthread_mutex_unlock(&s->mu);
		int rc = failed ? 0 : s->write(w, s->buf + i * SLOT, s->len[i], &e);
		pthread_mutex_lock(&s->mu);
		if (rc)
			s->rc = rc, s->e = e;
		s->tail++;
		pthread_cond_signal(&s->room);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* A buffer every byte of which is used again and again, on huge pages
 * where the system gives them: with 4 KiB pages, TLB misses made the
 * conversions through a few hundred MB a fifth to a third slower. */
static void *big_alloc(size_t bytes)
{
	void *p = NULL;
	if (posix_memalign(&p, (size_t)2 << 20, bytes))
		return NULL;
#ifdef MADV_HUGEPAGE
	madvise(p, bytes, MADV_HUGEPAGE);
#endif
	return p;
}

static int stream_start(stream *s, lora_err *e)
{
	*s = (stream){.buf = big_alloc((size_t)SLOTS * SLOT)};
	if (!s->buf)
		return lora_err_nomem(e);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->more, NULL);
	pthread_cond_init(&s->room, NULL);
	if (pthread_create(&s->thread, NULL, writer_main, s) == 0)
		return 0;
	pthread_cond_destroy(&s->room);
	pthread_cond_destroy(&s->more);
	pthread_mutex_destroy(&s->mu);
	free(s->buf);
	return lora_err_set(e, LORA_ENOMEM, "cannot start a writer thread");
}

static void stream_stop(stream *s)
{
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_signal(&s->more);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->room);
	pthread_cond_destroy(&s->more);
	pthread_mutex_destroy(&s->mu);
	free(s->buf);
}

/* Wait until every slot handed over is written; then w (may be NULL) is
 * the file further slots go to. Returns the first write error, if any. */
static int stream_drain(stream *s, void *w, lora_err *e)
{
	pthread_mutex_lock(&s->mu);
	while (s->tail != s->head)
		pthread_cond_wait(&s->room, &s->mu);
	int rc = s->rc;
	if (rc)
		*e = s->e;
	s->w = w;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* The next free slot, waited for; NULL once a write has failed. */
static unsigned char *stream_slot(stream *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->head - s->tail == SLOTS && !s->rc)
		pthread_cond_wait(&s->room, &s->mu);
	unsigned char *p = s->rc ? NULL : s->buf + (size_t)(s->head % SLOTS) * SLOT;
	pthread_mutex_unlock(&s->mu);
	return p;
}

/* Hand the slot stream_slot gave over, filled with n bytes. */
static void stream_put(stream *s, size_t n)
{
	pthread_mutex_lock(&s->mu);
	s->len[s->head % SLOTS] = n;
	s->head++;
	pthread_cond_signal(&s->more);
	pthread_mutex_unlock(&s->mu);
}

static int st_write(void *w, const void *p, size_t n, lora_err *e)
{
	return lora_st_writer_write(w, p, n, e);
}

static int gguf_write(void *w, const void *p, size_t n, lora_err *e)
{
	return lora_gguf_writer_write(w, p, n, e);
}

/* Output types are dtypes, and for GGUF q8_0 blocks too. */
#define OUT_Q8_0 LORA_DTYPE_COUNT
#define Q8_BLOCK 34 /* bytes of a block of 32 values */

static size_t out_bytes(int od, size_t n)
{
	return od == OUT_Q8_0 ? n / LORA_GGML_QK8_0 * Q8_BLOCK : n * lora_dtype_size((lora_dtype)od);
}

/* Elements of type od a slot holds (a whole number of q8_0 blocks). */
static size_t slot_elems(int od)
{
	return od == OUT_Q8_0 ? SLOT / Q8_BLOCK * LORA_GGML_QK8_0 : SLOT / lora_dtype_size((lora_dtype)od);
}

/* ---- tensors into the stream ----
 *
 * Conversions are split among the threads in pieces of SPLIT elements. */
#define SPLIT (1u << 16)

/* f[0, n) = the n elements at src, of dtype t, in f32. */
static void widen(float *f, const unsigned char *src, lora_dtype t, size_t n)
{
	size_t isz = lora_dtype_size(t);
#pragma omp parallel for schedule(static) if (n > SPLIT)
	for (size_t c = 0; c < n; c += SPLIT)
		lora_dtype_to_f32(f + c, src + c * isz, t, n - c < SPLIT ? n - c : SPLIT);
}

/* The first of n finite values f that dtype od (dst, converted) could not
 * hold, or n; values not finite before are left to the caller. */
static size_t overflow_at(const unsigned char *dst, const float *f, lora_dtype od, size_t n)
{
	size_t es = lora_dtype_size(od);
	if (od == LORA_F32)
		return n;
	for (size_t i = 0; i < n;) {
		size_t b = lora_dtype_find_overflow(dst + i * es, od, n - i);
		if (b == n - i)
			return n;
		if (isfinite(f[i + b]))
			return i + b;
		i += b + 1;
	}
	return n;
}

/* dst = f[0, n) in type od; returns the index of the first value that is
 * not finite (n if none, or if not check), and in *over that of the first
 * finite value od cannot hold (n if none; q8_0 is not checked: its f16
 * scale, the largest magnitude over 127, overflows only past 8.3e6). */
static size_t narrow(unsigned char *dst, const float *f, int od, size_t n, int check, size_t *over)
{
	size_t bad = n, ov = n;
#pragma omp parallel for schedule(static) if (n > SPLIT) reduction(min : bad, ov)
	for (size_t c = 0; c < n; c += SPLIT) {
		size_t k = n - c < SPLIT ? n - c : SPLIT, b = check ? lora_dtype_find_nonfinite(f + c, k) : k;
		if (b < k && c + b < bad)
			bad = c + b;
		if (od == OUT_Q8_0) {
			lora_gguf_q8_0_quantize(dst + out_bytes(od, c), f + c, k);
			continue;
		}
		lora_dtype_from_f32(dst + out_bytes(od, c), f + c, (lora_dtype)od, k);
		size_t o = overflow_at(dst + out_bytes(od, c), f + c, (lora_dtype)od, k);
		if (o < k && c + o < ov)
			ov = c + o;
	}
	*over = ov;
	return bad;
}

/* Elements [off, off + n) of tensor t, held in f32 at f, into the stream in
 * type od; merged values (check) must be finite. */
static int put_f32(stream *s, const lora_st_tensor *t, const float *f, size_t off, size_t n, int od, int check,
                   lora_err *e)
{
	size_t step = slot_elems(od);
	for (size_t i = 0; i < n; i += step) {
		size_t k = n - i < step ? n - i : step;
		unsigned char *slot = stream_slot(s);
		if (!slot)
			return stream_drain(s, s->w, e);
		size_t over, bad = narrow(slot, f + i, od, k, check, &over);
		if (bad < k)
			return lora_err_set(e, LORA_EINVAL, "tensor '%s': merged value at index %zu is not finite",
			                    t->name, off + i + bad);
		/* written as +-inf, it would poison every product with it */
		if (over < k)
			return lora_err_set(e, LORA_EINVAL, "tensor '%s': value %g at index %zu does not fit %s (largest %g)",
			                    t->name, (double)f[i + over], off + i + over, lora_dtype_name((lora_dtype)od),
			                    od == LORA_F16 ? 65504.0 : 3.3895313892515355e38);
		stream_put(s, out_bytes(od, k));
	}
	return 0;
}

/* One merge under way: what it does, its buffers, how far it is. */
typedef struct {
	const plan *p;
	const lora_merge_opts *o;
	stream s;
	float *f; /* the tensor being merged, in f32 */
	size_t done, total, merged;
	uint64_t bytes, total_bytes, written;
} job;

/* Drop the pages of bytes [off, off + n) of t, read and no longer needed,
 * so that resident memory does not grow by a whole input tensor. */
static void release_part(const lora_st_tensor *t, size_t off, size_t n)
{
	lora_st_tensor part = *t;
	part.data = (const unsigned char *)t->data + off;
	part.nbytes = n;
	lora_st_release(&part);
}

/* One tensor into the stream, in type od: merged through f32 when it has
 * ops or its rows are permuted (heads: for GGUF's rotary layout), converted
 * piece by piece when only the type changes, copied byte for byte
 * otherwise. The input is read, and let go, a slot's worth at a time. */
static int put_tensor(job *j, const lora_st_tensor *t, int od, size_t heads, lora_err *e)
{
	size_t first, nops = find_ops(j->p, t->name, &first), whole = nops || heads;
	size_t isz = lora_dtype_size(t->dtype), step = whole || od != (int)t->dtype ? SLOT / 4 : SLOT / isz;
	stream *s = &j->s;
	int rc = 0;
	for (size_t i = 0; i < t->nelem && !rc; i += step) {
		size_t k = t->nelem - i < step ? t->nelem - i : step;
		const unsigned char *src = (const unsigned char *)t->data + i * isz;
		unsigned char *slot;
		if (whole) {
			widen(j->f + i, src, t->dtype, k);
		} else if (od != (int)t->dtype) {
			widen(j->f, src, t->dtype, k);
			rc = put_f32(s, t, j->f, i, k, od, 0, e);
		} else if ((slot = stream_slot(s)) != NULL) {
			memcpy(slot, src, k * isz);
			stream_put(s, k * isz);
		} else {
			rc = stream_drain(s, s->w, e);
		}
		release_part(t, i * isz, k * isz);
	}
	lora_st_release(t); /* the pages across piece boundaries */
	if (rc || !whole)
		return rc;
	for (size_t i = 0; i < nops; i++)
		apply_op(j->f, &j->p->ops[first + i]);
	j->merged += nops > 0;
	/* (the rows split into the heads: gguf_plan checked) */
	if (heads && lora_gguflora_permute(j->f, t->shape[0], t->ndim > 1 ? t->nelem / t->shape[0] : 1, heads))
		return lora_err_nomem(e);
	return put_f32(s, t, j->f, 0, t->nelem, od, nops > 0, e);
}

/* One tensor written: the progress counted. */
static void wrote(job *j, const lora_st_tensor *t)
{
	j->bytes += t->nbytes;
	if (j->o->progress)
		j->o->progress(j->o->ctx, ++j->done, j->total, j->bytes, j->total_bytes);
}

/* rc, or the writer thread's error once it has stopped: it is done with
 * the output before the output is committed or removed. */
static int drained(job *j, int rc, lora_err *e)
{
	lora_err we;
	int wrc = stream_drain(&j->s, NULL, &we);
	if (!rc && wrc)
		rc = wrc, *e = we;
	return rc;
}

/* Write one shard to path. */
static int merge_shard(job *j, const lora_st *st, const char *path, lora_err *e)
{
	lora_st_spec *specs = calloc(st->ntensors ? st->ntensors : 1, sizeof *specs);
	lora_st_writer *w = NULL;
	lora_err we;
	int rc;
	if (!specs)
		return lora_err_nomem(e);
	for (size_t i = 0; i < st->ntensors; i++) {
		const lora_st_tensor *t = &st->tensors[i];
		specs[i].name = t->name;
		specs[i].dtype = out_dtype(t, j->o);
		specs[i].ndim = t->ndim;
		memcpy(specs[i].shape, t->shape, sizeof t->shape);
		j->written += t->nelem * lora_dtype_size(specs[i].dtype);
	}
	if ((rc = lora_st_writer_open(&w, path, specs, st->ntensors, st->meta, st->nmeta, j->o->force, e)))
		goto out;
	j->s.write = st_write;
	stream_drain(&j->s, w, &we);
	for (size_t i = 0; i < st->ntensors && !rc; i++) {
		if ((rc = put_tensor(j, &st->tensors[i], (int)specs[i].dtype, 0, e)))
			break;
		wrote(j, &st->tensors[i]);
	}
	if ((rc = drained(j, rc, e)))
		lora_st_writer_abort(w);
	else
		rc = lora_st_writer_commit(w, e);
out:
	free(specs);
	return rc;
}

/* GGUF: each tensor's name, type and shape, and its rows' heads. */
static int gguf_plan(const lora_ckpt *m, const lora_merge_gguf *g, lora_gguf_spec *specs,
                     char (*names)[LORA_GGUF_MAX_NAME + 1], size_t *heads, const lora_st_tensor **ts, size_t *n,
                     lora_err *e)
{
	*n = 0;
	if (g->extra) {
		specs[0] = (lora_gguf_spec){g->extra, LORA_GGML_F32, 1, {g->extra_n}};
		ts[0] = NULL;
		*n = 1;
	}
	for (size_t s = 0; s < m->nshards; s++)
		for (size_t i = 0; i < m->shards[s]->ntensors; i++) {
			const lora_st_tensor *t = &m->shards[s]->tensors[i];
			lora_gguf_spec *sp = &specs[*n];
			int rope, r = lora_gguflora_model_name(t->name, g->arch, names[*n], &rope);
			if (r == 1)
				continue;
			if (r < 0)
				return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': llama.cpp's %s architecture has no place for it",
				                    m->path, t->name, g->arch);
			if (!lora_dtype_is_float(t->dtype) || t->ndim < 1 || t->ndim > 2)
				return lora_err_set(e, LORA_EINVAL,
				                    "%s: tensor '%s': a GGUF model takes float vectors and matrices, not %s %s",
				                    m->path, t->name, lora_dtype_st_name(t->dtype), t->ndim ? "of more dimensions" : "scalars");
			sp->name = names[*n];
			sp->ndim = t->ndim;
			for (size_t d = 0; d < t->ndim; d++)
				sp->ne[d] = t->shape[t->ndim - 1 - d];
			/* convert_hf_to_gguf keeps vectors and norms in f32, and a
			 * matrix q8_0 cannot block in f16. */
			int type = g->type >= 0 ? g->type : lora_gguf_ggml_of(t->dtype);
			if (t->ndim == 1 || lora_path_has_suffix(names[*n], "_norm.weight"))
				type = LORA_GGML_F32;
			else if (type == LORA_GGML_Q8_0 && sp->ne[0] % LORA_GGML_QK8_0)
				type = LORA_GGML_F16;
			sp->type = (uint32_t)type;
			heads[*n] = rope == 1 ? g->n_heads : rope == 2 ? g->n_kv_heads : 0;
			if (heads[*n] && t->shape[0] % (2 * heads[*n]))
				return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': %zu rows do not split into %zu heads of even size",
				                    m->path, t->name, t->shape[0], heads[*n]);
			ts[*n] = t;
			(*n)++;
		}
	return 0;
}

/* Write the whole model as one GGUF file at path. */
static int merge_gguf(job *j, const lora_ckpt *m, const char *path, lora_err *e)
{
	const lora_merge_gguf *g = j->o->gguf;
	size_t nt = 0, cap = m->ntensors + 1;
	lora_gguf_spec *specs = calloc(cap, sizeof *specs);
	char (*names)[LORA_GGUF_MAX_NAME + 1] = calloc(cap, sizeof *names);
	size_t *heads = calloc(cap, sizeof *heads);
	const lora_st_tensor **ts = calloc(cap, sizeof *ts);
	lora_gguf_writer *w = NULL;
	lora_err we;
	int rc;
	if (!specs || !names || !heads || !ts) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if ((rc = gguf_plan(m, g, specs, names, heads, ts, &nt, e)) ||
	    (rc = lora_gguf_writer_open(&w, path, g->kv, g->nkv, specs, nt, j->o->force, e)))
		goto out;
	if (g->extra && (rc = lora_gguf_writer_write(w, g->extra_data, g->extra_n * sizeof *g->extra_data, e))) {
		lora_gguf_writer_abort(w);
		goto out;
	}
	j->s.write = gguf_write;
	stream_drain(&j->s, w, &we);
	for (size_t i = g->extra != NULL; i < nt; i++) {
		lora_dtype dt = LORA_F32;
		int od = specs[i].type == LORA_GGML_Q8_0 ? OUT_Q8_0 : (lora_gguf_dtype_of(specs[i].type, &dt), (int)dt);
		if ((rc = put_tensor(j, ts[i], od, heads[i], e)))
			break;
		wrote(j, ts[i]);
	}
	if ((rc = drained(j, rc, e)))
		lora_gguf_writer_abort(w);
	else
		rc = lora_gguf_writer_commit(w, e);
out:
	free(specs);
	free(names);
	free(heads);
	free(ts);
	return rc;
}

/* The copy keeps the source's permission bits: a file kept private in the
 * model directory stays private in the merged one. */
static int copy_file(const char *from, const char *to, mode_t mode, lora_err *e)
{
	int in = open(from, O_RDONLY | O_NONBLOCK), out = -1, rc = 0;
	char buf[1 << 16];
	if (in < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", from, strerror(errno));
	out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (out < 0 || fchmod(out, mode & 0777) != 0) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", to, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0 || write(out, buf, (size_t)n) != n) {
			rc = lora_err_set(e, LORA_EIO, "%s: copy failed: %s", n < 0 ? from : to, strerror(errno));
			goto out;
		}
	}
	if (fsync(out) != 0)
		rc = lora_err_set(e, LORA_EIO, "%s: %s", to, strerror(errno));
out:
	close(in);
	if (out >= 0 && close(out) != 0 && !rc)
		rc = lora_err_set(e, LORA_EIO, "%s: %s", to, strerror(errno));
	return rc;
}

/* The index with total_size updated; every other key kept. */
static int write_index(const lora_ckpt *m, const char *path, uint64_t total, lora_err *e)
{
	char *outtext = NULL;
	cJSON *j = NULL;
	lora_outfile of;
	int rc = lora_json_read_file(&j, m->index_path, 0, e);
	if (rc)
		return rc;
	cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
	if (!cJSON_IsObject(meta)) {
		meta = cJSON_CreateObject();
		cJSON_AddItemToObject(j, "metadata", meta);
	}
	cJSON_DeleteItemFromObjectCaseSensitive(meta, "total_size");
	cJSON_AddNumberToObject(meta, "total_size", (double)total);
	if (!(outtext = cJSON_Print(j)))
		rc = lora_err_nomem(e);
	else if (!(rc = lora_outfile_open(&of, path, 0, e))) {
		fputs(outtext, of.fp);
		fputc('\n', of.fp);
		rc = lora_outfile_commit(&of, e);
	}
	cJSON_free(outtext);
	cJSON_Delete(j);
	return rc;
}

static int same_file(const char *a, const char *b)
{
	struct stat x, y;
	return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* 1 if the real path p is root or lies below it. */
static int inside(const char *p, const char *root)
{
	size_t n = strlen(root);
	return strncmp(p, root, n) == 0 && (p[n] == '/' || p[n] == 0 || (n == 1 && root[0] == '/'));
}

static int depth(const char *rel)
{
	int n = 0;
	for (; *rel; rel++)
		n += *rel == '/';
	return n;
}

/* What a model directory holds besides the tensors (config, tokenizer,
 * generation config, subdirectories), copied into the output below rel
 * (NULL: the top). Links are followed only where they stay inside the
 * model directory (root, its real path), and never back up to a directory
 * they sit in; a link leading elsewhere, or anything but a regular file or
 * a directory, is an error naming it: nothing is left out silently. */
static int copy_tree(const lora_ckpt *m, const char *root, const char *rel, lora_outdir *d, lora_err *e)
{
	struct stat sb;
	int rc = 0;
	char *here = rel ? lora_path_join(m->dir, rel) : strdup(m->dir);
	DIR *dir = here ? opendir(here) : NULL;
	if (!dir) {
		rc = here ? lora_err_set(e, LORA_EIO, "%s: %s", here, strerror(errno)) : lora_err_nomem(e);
		free(here);
		return rc;
	}
	struct dirent *de;
	while (!rc && (de = readdir(dir))) {
		int skip = de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2]));
		for (size_t s = 0; s < m->nshards && !skip && !rel; s++)
			skip = strcmp(de->d_name, lora_path_base(m->shards[s]->path)) == 0;
		if (skip || (!rel && m->index_path && strcmp(de->d_name, lora_path_base(m->index_path)) == 0))
			continue;
		char *name = rel ? lora_path_join(rel, de->d_name) : strdup(de->d_name);
		char *src = name ? lora_path_join(m->dir, name) : NULL, *real = NULL;
		if (!src) {
			rc = lora_err_nomem(e);
		} else if (lstat(src, &sb) != 0) {
			rc = lora_err_set(e, LORA_EIO, "%s: %s", src, strerror(errno));
		} else if (S_ISLNK(sb.st_mode)) {
			char *at = realpath(here, NULL);
			real = realpath(src, NULL);
			if (!real || !inside(real, root))
				rc = lora_err_set(e, LORA_EINVAL, "%s: symbolic link leads outside the model directory; not copying it", src);
			else if (at && inside(at, real))
				rc = lora_err_set(e, LORA_EINVAL, "%s: symbolic link leads back to a directory it is in; not copying it", src);
			else if (stat(src, &sb) != 0)
				rc = lora_err_set(e, LORA_EIO, "%s: %s", src, strerror(errno));
			free(at);
		}
		if (rc) {
			/* reported above */
		} else if (S_ISREG(sb.st_mode)) {
			const char *dst = lora_outdir_file(d, name);
			rc = dst ? copy_file(src, dst, sb.st_mode, e) : lora_err_nomem(e);
		} else if (S_ISDIR(sb.st_mode) && depth(name) >= 64) {
			rc = lora_err_set(e, LORA_EINVAL, "%s: directories nested too deep (links in a loop?); not copying it", src);
		} else if (S_ISDIR(sb.st_mode)) {
			if (!(rc = lora_outdir_mkdir(d, name, e)) && !(rc = copy_tree(m, root, name, d, e))) {
				char *dst = lora_path_join(d->tmp, name);
				if (!dst || lora_outfile_sync_dir(dst) != 0 || chmod(dst, sb.st_mode & 0777) != 0)
					rc = dst ? lora_err_set(e, LORA_EIO, "%s/%s: %s", d->shown, name, strerror(errno))
					         : lora_err_nomem(e);
				free(dst);
			}
		} else {
			rc = lora_err_set(e, LORA_EINVAL, "%s: not a regular file or directory; not copying it", src);
		}
		free(real);
		free(src);
		free(name);
	}
	closedir(dir);
	free(here);
	return rc;
}

/* Every other file of the model directory, copied into the output. */
static int copy_others(const lora_ckpt *m, lora_outdir *d, lora_err *e)
{
	char *root = realpath(m->dir, NULL);
	if (!root)
		return lora_err_set(e, LORA_EIO, "%s: %s", m->dir, strerror(errno));
	int rc = copy_tree(m, root, NULL, d, e);
	free(root);
	return rc;
}

int lora_merge_checkpoint(const lora_ckpt *m, const lora_merge_input *in, size_t n, const char *out,
                          const lora_merge_opts *o, size_t *merged_out, lora_err *e)
{
	plan p = {0};
	job j = {.p = &p, .o = o};
	lora_outdir d;
	struct stat sb;
	/* f holds the largest merged tensor, or a slot's worth of a converted one */
	size_t fsize = SLOT / 2, first;
	int started = 0, threads = lora_blas_threads(), rc = build_plan(&p, m, in, n, o, e);
	if (rc)
		goto out;
	for (size_t s = 0; s < m->nshards; s++) {
		j.total += m->shards[s]->ntensors;
		for (size_t i = 0; i < m->shards[s]->ntensors; i++) {
			const lora_st_tensor *t = &m->shards[s]->tensors[i];
			j.total_bytes += t->nbytes;
			char gname[LORA_GGUF_MAX_NAME + 1];
			int rope = 0;
			if (o->gguf)
				lora_gguflora_model_name(t->name, o->gguf->arch, gname, &rope);
			if ((rope || find_ops(&p, t->name, &first)) && t->nelem > fsize)
				fsize = t->nelem;
		}
		if (same_file(m->shards[s]->path, out)) {
			rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite the input model", out);
			goto out;
		}
	}
	if (!(j.f = big_alloc(fsize * sizeof *j.f))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if ((rc = stream_start(&j.s, e)))
		goto out;
	started = 1;
	/* The writer thread takes one of the threads -j gives. On two cores a
	 * second compute thread made a 7B merge slower, not faster: OpenMP's
	 * threads spin between parallel regions, against the writer, and wait
	 * on each other when one is preempted. The products' results do not
	 * depend on the number of threads (tests/merge.bats checks it). */
	if (threads > 1)
		lora_blas_set_threads(threads - 1);
	int to_dir = !(stat(m->path, &sb) == 0 && S_ISREG(sb.st_mode) && !m->index_path);
	if (o->gguf) {
		rc = merge_gguf(&j, m, out, e);
		goto out;
	}
	if (!to_dir) {
		rc = merge_shard(&j, m->shards[0], out, e);
		goto out;
	}
	if (same_file(m->dir, out)) {
		rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite the input model", out);
		goto out;
	}
	if ((rc = lora_outdir_open(&d, out, o->force, NULL, e)))
		goto out;
	for (size_t s = 0; s < m->nshards && !rc; s++) {
		const char *path = lora_outdir_file(&d, lora_path_base(m->shards[s]->path));
		rc = path ? merge_shard(&j, m->shards[s], path, e) : lora_err_nomem(e);
	}
	if (!rc && m->index_path) {
		const char *path = lora_outdir_file(&d, lora_path_base(m->index_path));
		rc = path ? write_index(m, path, j.written, e) : lora_err_nomem(e);
	}
	if (!rc)
		rc = copy_others(m, &d, e);
	if (rc)
		lora_outdir_abort(&d, e);
	else
		rc = lora_outdir_commit(&d, e);
out:
	if (started)
		stream_stop(&j.s);
	if (threads > 1)
		lora_blas_set_threads(threads);
	free(j.f);
	plan_free(&p);
	if (merged_out)
		*merged_out = j.merged;
	return rc;
}

void lora_merge_inputs_free(lora_merge_input *in, size_t n)
{
	for (size_t i = 0; in && i < n; i++) {
		/* both were allocated by lora_merge_inputs_load */
		lora_adapter_free((lora_adapter *)in[i].a);
		free((char *)in[i].path);
	}
	free(in);
}

int lora_merge_inputs_load(lora_merge_input **out, char *const *specs, size_t n, lora_err *e)
{
	lora_merge_input *in = calloc(n ? n : 1, sizeof *in);
	int rc = 0;
	*out = in;
	if (!in)
		return lora_err_nomem(e);
	for (size_t i = 0; i < n && !rc; i++) {
		char *path;
		lora_adapter *a = NULL;
		if ((rc = lora_load_spec(specs[i], &path, &in[i].scale, e)))
			break;
		rc = lora_load_adapter(&a, path, e);
		in[i].a = a;
		if (strcmp(path, "-") == 0) { /* named so in messages */
			free(path);
			if (!(path = strdup("standard input")) && !rc)
				rc = lora_err_nomem(e);
		}
		in[i].path = path;
	}
	return rc;
}
