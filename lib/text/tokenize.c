#include "text/tokenize.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "core/outfile.h"
#include "core/path.h"
#include "core/utf8.h"
#include "text/tokenizer.h"

/* A batch of documents is encoded (in parallel) and written once it holds
 * this much text or this many documents: memory stays bounded whatever the
 * input, and each thread gets many documents per batch. */
#define BATCH_BYTES ((size_t)4 << 20)
#define BATCH_DOCS ((size_t)1 << 16)
#define READ_CHUNK ((size_t)1 << 20)

typedef struct {
	size_t off, len;  /* in the batch's text */
	const char *name; /* its input, for messages */
} doc;

typedef struct {
	lora_tokenize_job *j;
	char *path;          /* tokenizer.json */
	char *json;          /* its text, for a copy per thread */
	size_t njson;
	lora_tokenizer **tok; /* one per thread */
	int ntok;
	lora_data_format fmt;
	lora_outfile of;
	const char *outname;
	char *buf;           /* the batch's text */
	size_t len, cap;
	doc *docs;
	lora_tokenizer_ids *ids; /* by document */
	size_t nd, dcap;
} enc;

static const char *display(const char *path) { return strcmp(path, "-") ? path : "standard input"; }

/* The tokenizer.json j names, into x->path. */
static int find_tokenizer(enc *x, lora_err *e)
{
	const lora_tokenize_job *j = x->j;
	struct stat sb;
	if (j->tokenizer)
		return (x->path = strdup(j->tokenizer)) ? 0 : lora_err_nomem(e);
	if (stat(j->model, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", j->model, strerror(errno));
	char *dir = S_ISDIR(sb.st_mode) ? strdup(j->model) : lora_path_dir(j->model);
	x->path = dir ? lora_path_join(dir, "tokenizer.json") : NULL;
	free(dir);
	if (!x->path)
		return lora_err_nomem(e);
	if (!lora_path_exists(x->path))
		return lora_err_set(e, LORA_EIO, "%s: no tokenizer.json in the model directory (--tokenizer FILE names one)",
		                    j->model);
	return 0;
}

static int open_tokenizer(enc *x, lora_err *e)
{
	int rc;
	if ((rc = find_tokenizer(x, e)) || (rc = lora_json_slurp(&x->json, &x->njson, x->path, 0, e)))
		return rc;
	if (!(x->tok = calloc(1, sizeof *x->tok)))
		return lora_err_nomem(e);
	if ((rc = lora_tokenizer_parse(&x->tok[0], x->path, x->json, x->njson, e)))
		return rc;
	x->ntok = 1;
	return 0;
}

/* Up to want tokenizers, one per thread (each keeps its own word cache and
 * buffers), parsed side by side. A copy that cannot be made only means
 * fewer threads. */
static void more_tokenizers(enc *x, int want)
{
	lora_tokenizer **t = realloc(x->tok, (size_t)want * sizeof *t);
	if (!t)
		return;
	x->tok = t;
	int have = x->ntok, n = have;
#pragma omp parallel for num_threads(want - have)
	for (int k = have; k < want; k++) {
		lora_err le;
		if (lora_tokenizer_parse(&t[k], x->path, x->json, x->njson, &le))
			t[k] = NULL;
	}
	for (int k = have; k < want; k++)
		if (t[k])
			t[n++] = t[k];
	x->ntok = n;
}

/* Read up to want more bytes of f onto *buf (grown as needed, one spare
 * byte); *got is 0 at the end. */
static int read_more(FILE *f, const char *name, char **buf, size_t *len, size_t *cap, size_t want, size_t *got,
                     lora_err *e)
{
	if (*cap - *len < want + 1) {
		size_t c = *cap ? *cap : want + 1;
		while (c - *len < want + 1)
			c *= 2;
		char *b = realloc(*buf, c);
		if (!b)
			return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", display(name));
		*buf = b, *cap = c;
	}
	*got = fread(*buf + *len, 1, want, f);
	if (*got < want && ferror(f))
		return lora_err_set(e, LORA_EIO, "%s: %s", display(name), strerror(errno));
	*len += *got;
	return 0;
}

static FILE *open_input(const char *name, lora_err *e)
{
	FILE *f = strcmp(name, "-") ? fopen(name, "rb") : stdin;
	if (!f)
		lora_err_set(e, LORA_EIO, "%s: %s", name, strerror(errno));
	return f;
}

static void close_input(FILE *f)
{
	if (f && f != stdin)
		fclose(f);
}

/* The n bytes at s, which start at byte at of the input, line line. */
static int check_utf8(const char *name, const char *s, size_t n, size_t at, size_t line, lora_err *e)
{
	size_t bad = lora_utf8_bad(s, n);
	if (bad == n)
		return 0;
	for (size_t i = 0; i < bad; i++)
		line += s[i] == '\n';
	return lora_err_set(e, LORA_EFORMAT, "%s: invalid UTF-8 at byte %zu (line %zu)", display(name), at + bad, line);
}

static int add_doc(enc *x, const char *name, size_t off, size_t len, lora_err *e)
{
	if (!len)
		return 0;
	if (x->nd == x->dcap) {
		size_t c = x->dcap ? 2 * x->dcap : 256;
		doc *d = realloc(x->docs, c * sizeof *d);
		if (d)
			x->docs = d;
		lora_tokenizer_ids *ids = d ? realloc(x->ids, c * sizeof *ids) : NULL;
		if (!ids)
			return lora_err_nomem(e);
		memset(ids + x->dcap, 0, (c - x->dcap) * sizeof *ids);
		x->ids = ids, x->dcap = c;
	}
	x->docs[x->nd++] = (doc){off, len, name};
	return 0;
}

static int batch_full(const enc *x, size_t used) { return used >= BATCH_BYTES || x->nd >= BATCH_DOCS; }

/* Encode the batch's documents, on several threads, and write their ids in
 * order. */
static int encode_batch(enc *x, lora_err *e)
{
	size_t nd = x->nd, next = 0, bad = SIZE_MAX;
	int stop = 0, special = !x->j->no_special;
	if (!nd)
		return 0;
	int want = x->j->threads > 1 ? x->j->threads : 1;
	if ((size_t)want > nd)
		want = (int)nd;
	if (x->ntok < want)
		more_tokenizers(x, want);
	int nw = x->ntok < want ? x->ntok : want;
#pragma omp parallel for schedule(static, 1) num_threads(nw)
	for (int k = 0; k < nw; k++) {
		lora_err we;
		for (;;) {
			size_t i;
			int s;
#pragma omp atomic capture
			i = next++;
#pragma omp atomic read
			s = stop;
			if (i >= nd || s)
				break;
			const doc *d = &x->docs[i];
			x->ids[i].n = 0;
			if (lora_tokenizer_encode(x->tok[k], x->buf + d->off, d->len, special, &x->ids[i], &we)) {
#pragma omp critical(tokenize_error)
				if (i < bad) {
					bad = i;
					*e = we;
				}
#pragma omp atomic write
				stop = 1;
				break;
			}
		}
	}
	if (bad != SIZE_MAX)
		return lora_err_prefix(e, "%s", display(x->docs[bad].name));
	for (size_t i = 0; i < nd; i++) {
		if (lora_data_write(x->of.fp, (const int32_t *)x->ids[i].id, x->ids[i].n, x->fmt))
			return lora_err_set(e, LORA_EIO, "%s: %s", x->outname, strerror(errno));
		x->j->nids += x->ids[i].n;
	}
	x->j->ndocs += nd;
	x->nd = 0;
	if (x->j->progress)
		x->j->progress(x->j->ctx, x->j->ndocs, x->j->nbytes, x->j->nids);
	return 0;
}

/* One input, one document: read whole into the batch. */
static int encode_file(enc *x, const char *name, FILE *f, lora_err *e)
{
	size_t start = x->len, got;
	int rc;
	do
		if ((rc = read_more(f, name, &x->buf, &x->len, &x->cap, READ_CHUNK, &got, e)))
			return rc;
	while (got);
	x->j->nbytes += x->len - start;
	if ((rc = check_utf8(name, x->buf + start, x->len - start, 0, 1, e)) ||
	    (rc = add_doc(x, name, start, x->len - start, e)))
		return rc;
	if (batch_full(x, x->len)) {
		if ((rc = encode_batch(x, e)))
			return rc;
		x->len = 0;
	}
	return 0;
}

/* Each line a document: the text read in chunks, lines cut as they are
 * complete, the batch encoded when full and the unfinished line kept. */
static int encode_lines(enc *x, const char *name, FILE *f, lora_err *e)
{
	size_t ls = x->len, scan = x->len, fstart = x->len, foff = 0, line = 1, got;
	int rc;
	for (;;) {
		if ((rc = read_more(f, name, &x->buf, &x->len, &x->cap, READ_CHUNK, &got, e)))
			return rc;
		x->j->nbytes += got;
		for (;;) {
			/* at the end, what is left is the last line */
			char *nl = memchr(x->buf + scan, '\n', x->len - scan);
			if (!nl && (got || ls == x->len))
				break;
			size_t end = nl ? (size_t)(nl - x->buf) : x->len, n = end - ls;
			if (n && x->buf[end - 1] == '\r')
				n--;
			if ((rc = check_utf8(name, x->buf + ls, n, foff + ls - fstart, line, e)) ||
			    (rc = add_doc(x, name, ls, n, e)))
				return rc;
			ls = scan = nl ? end + 1 : end;
			line++;
		}
		if (!got)
			return 0;
		scan = x->len;
		if (batch_full(x, ls)) {
			if ((rc = encode_batch(x, e)))
				return rc;
			memmove(x->buf, x->buf + ls, x->len - ls);
			foff += ls - fstart;
			x->len -= ls, scan -= ls;
			ls = fstart = 0;
		}
	}
}

static int encode(lora_tokenize_job *j, lora_err *e)
{
	enc x = {.j = j, .outname = j->out && strcmp(j->out, "-") ? j->out : "standard output"};
	int rc = open_tokenizer(&x, e);
	if (rc)
		goto out;
	size_t V = lora_tokenizer_vocab_size(x.tok[0]);
	x.fmt = j->format;
	if (x.fmt == LORA_DATA_AUTO)
		x.fmt = j->out && lora_path_has_suffix(j->out, ".u32") ? LORA_DATA_U32 : LORA_DATA_U16;
	if (x.fmt == LORA_DATA_U16 && V > 65536) {
		rc = lora_err_set(e, LORA_EUSAGE, "%s: %zu token ids do not fit --output-format u16; use u32", x.path, V);
		goto out;
	}
	if ((rc = lora_outfile_open(&x.of, j->out, (j->force ? LORA_OUT_FORCE : 0) | LORA_OUT_BINARY, e)))
		goto out;
	for (size_t i = 0; i < j->ninputs && !rc; i++) {
		const char *name = j->inputs[i];
		FILE *f = open_input(name, e);
		rc = !f ? LORA_EIO : j->lines ? encode_lines(&x, name, f, e) : encode_file(&x, name, f, e);
		close_input(f);
	}
	if (!rc)
		rc = encode_batch(&x, e);
	if (!rc)
		rc = lora_outfile_commit(&x.of, e);
	else
		lora_outfile_abort(&x.of);
out:
	for (int k = 0; k < x.ntok; k++)
		lora_tokenizer_free(x.tok[k]);
	for (size_t i = 0; i < x.dcap; i++)
		lora_tokenizer_ids_free(&x.ids[i]);
	free(x.tok);
	free(x.ids);
	free(x.docs);
	free(x.buf);
	free(x.json);
	free(x.path);
	return rc;
}

/* Decode one token file (or standard input) whole and write its text. */
static int decode_one(lora_tokenize_job *j, const lora_tokenizer *t, const char *name, FILE *out, lora_err *e)
{
	lora_data *d = NULL;
	uint32_t *ids = NULL;
	char *text = NULL;
	size_t V = lora_tokenizer_vocab_size(t), len;
	int rc;
	if (!strcmp(name, "-")) {
		char *buf = NULL;
		size_t n = 0, cap = 0, got;
		do
			rc = read_more(stdin, name, &buf, &n, &cap, READ_CHUNK, &got, e);
		while (!rc && got);
		if (rc)
			free(buf);
		else
			rc = lora_data_from_memory(&d, display(name), buf, n, j->format, V, e);
	} else {
		rc = lora_data_open(&d, name, j->format, V, e);
	}
	if (rc)
		goto out;
	if (!(ids = malloc((d->ntokens + 1) * sizeof *ids))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t i = 0; i < d->ntokens; i++)
		ids[i] = lora_data_token(d, i);
	if ((rc = lora_tokenizer_decode(t, ids, d->ntokens, j->no_special, &text, &len, e))) {
		lora_err_prefix(e, "%s", display(name));
		goto out;
	}
	if (fwrite(text, 1, len, out) != len) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", j->out && strcmp(j->out, "-") ? j->out : "standard output",
		                  strerror(errno));
		goto out;
	}
	j->ndocs++, j->nids += d->ntokens, j->nbytes += len;
out:
	free(text);
	free(ids);
	lora_data_close(d);
	return rc;
}

static int decode(lora_tokenize_job *j, lora_err *e)
{
	enc x = {.j = j};
	lora_outfile of = {0};
	int rc = open_tokenizer(&x, e);
	if (!rc && !(rc = lora_outfile_open(&of, j->out, j->force ? LORA_OUT_FORCE : 0, e))) {
		for (size_t i = 0; i < j->ninputs && !rc; i++)
			rc = decode_one(j, x.tok[0], j->inputs[i], of.fp, e);
		if (!rc)
			rc = lora_outfile_commit(&of, e);
		else
			lora_outfile_abort(&of);
	}
	if (x.tok)
		lora_tokenizer_free(x.tok[0]);
	free(x.tok);
	free(x.json);
	free(x.path);
	return rc;
}

int lora_tokenize_job_run(lora_tokenize_job *j, lora_err *e)
{
	static char *const stdin_only[] = {"-"};
	if (!j->ninputs)
		j->inputs = stdin_only, j->ninputs = 1;
	return j->decode ? decode(j, e) : encode(j, e);
}
