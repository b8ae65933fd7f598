#include "text/tokenize.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/outfile.h"
#include "core/path.h"
#include "core/shape.h"
#include "core/utf8.h"
#include "text/chat.h"
#include "text/jsonl.h"
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
	size_t line, byte; /* where it starts in its input */
	int jsonl;        /* a JSONL example, not text */
} doc;

/* Which ids of a document are targets (1) or not (0). */
typedef struct {
	unsigned char *b;
	size_t n, cap;
} flags;

typedef struct {
	lora_tokenize_job *j;
	char *path;          /* tokenizer.json */
	char *json;          /* its text, for a copy per thread */
	size_t njson;
	lora_tokenizer **tok; /* one per thread */
	int ntok;
	lora_data_format fmt;
	lora_data_writer w;
	int64_t bos, eos;    /* tokenizer_config.json's, or -1 */
	char *config;        /* its path */
	lora_chat *chat;     /* its chat template, or NULL and why in chat_err */
	lora_err chat_err;
	lora_outfile of;
	const char *outname;
	char *buf;           /* the batch's text */
	size_t len, cap;
	doc *docs;
	lora_tokenizer_ids *ids; /* by document */
	flags *tg;               /* by document: targets of a JSONL example */
	size_t nd, dcap;
} enc;

static const char *display(const char *path) { return strcmp(path, "-") ? path : "standard input"; }

static int open_tokenizer(enc *x, lora_err *e)
{
	int rc;
	if ((rc = lora_tokenizer_find(&x->path, x->j->model, x->j->tokenizer, e)) || (rc = lora_json_slurp(&x->json, &x->njson, x->path, 0, e)))
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
	if (lora_shape_grow(buf, cap, *len + want + 1, 1))
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", display(name));
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

static int add_doc(enc *x, doc d, lora_err *e)
{
	if (!d.len)
		return 0;
	if (x->nd == x->dcap) {
		size_t c = x->dcap ? 2 * x->dcap : 256;
		doc *dd = realloc(x->docs, c * sizeof *dd);
		if (dd)
			x->docs = dd;
		lora_tokenizer_ids *ids = dd ? realloc(x->ids, c * sizeof *ids) : NULL;
		if (ids)
			x->ids = ids;
		flags *tg = ids ? realloc(x->tg, c * sizeof *tg) : NULL;
		if (!tg)
			return lora_err_nomem(e);
		memset(ids + x->dcap, 0, (c - x->dcap) * sizeof *ids);
		memset(tg + x->dcap, 0, (c - x->dcap) * sizeof *tg);
		x->tg = tg, x->dcap = c;
	}
	x->docs[x->nd++] = d;
	return 0;
}

static int flags_set(flags *f, size_t from, size_t to, int v)
{
	if (lora_shape_grow(&f->b, &f->cap, to, 1))
		return LORA_ENOMEM;
	memset(f->b + from, v, to - from);
	f->n = to;
	return 0;
}

/* axolotl's tokenizing of an example's trained part (_tokenize with
 * add_eos_token): the EOS appended unless the ids end with it or are
 * empty; with strip_bos, a leading BOS dropped. */
static void eos_bos(const enc *x, lora_tokenizer_ids *ids, size_t from, int strip_bos)
{
	if (x->eos >= 0 && ids->n > from && ids->id[ids->n - 1] != (uint32_t)x->eos)
		lora_tokenizer_ids_push(ids, (uint32_t)x->eos);
	if (strip_bos && x->bos >= 0 && ids->n > from && ids->id[from] == (uint32_t)x->bos) {
		memmove(ids->id + from, ids->id + from + 1, (ids->n - from - 1) * sizeof *ids->id);
		ids->n--;
	}
}

/* The index of the first id where the encoding of text[0..b) parts from
 * all (the ids of the whole text): the token where byte b falls. */
static int boundary(lora_tokenizer *t, const char *text, size_t b, const lora_tokenizer_ids *all, size_t *k,
                    lora_err *e)
{
	lora_tokenizer_ids pre = {0};
	int rc = lora_tokenizer_encode(t, text, b, 0, &pre, e);
	size_t i = 0;
	while (!rc && i < pre.n && i < all->n && pre.id[i] == all->id[i])
		i++;
	*k = i;
	lora_tokenizer_ids_free(&pre);
	return rc;
}

/* A chat rendered with the model's template and encoded as
 * apply_chat_template encodes it: the whole text at once, special tokens
 * matched, no post-processor tokens. The marking of the ids follows the
 * spans: a run of ids changes it where the ids of the text cut at the
 * span's first byte part from the whole text's, so a token holding bytes
 * of both sides (template "\n" and an answer's leading "\n" as one "\n\n")
 * is marked as the later span, as transformers' assistant mask marks it
 * (the token holding the answer's first character); trained spans end with
 * the end-of-turn special token, which no token straddles. With literal
 * content, special tokens are not matched where they meet a message's
 * bytes (the tokenizer's literal ranges): the same encoding otherwise. */
static int encode_chat(const enc *x, lora_tokenizer *t, const lora_jsonl_example *ex, lora_tokenizer_ids *ids,
                       flags *tg, lora_err *e)
{
	char *text = NULL;
	lora_chat_span *sp = NULL;
	size_t nsp = 0, from = 0, k0 = 0, *lit = NULL, nlit = 0;
	int rc, all = x->j->train_on_inputs;
	if (!x->chat) {
		*e = x->chat_err;
		return e->code;
	}
	if ((rc = lora_chat_render(x->chat, (const lora_chat_message *)ex->msgs, ex->nmsgs, 0, &text, &sp, &nsp, e)))
		goto out;
	if (x->j->literal_content) {
		if (!(lit = malloc(2 * nsp * sizeof *lit))) {
			rc = LORA_ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < nsp; i++)
			if (sp[i].content)
				lit[2 * nlit] = sp[i].begin, lit[2 * nlit + 1] = sp[i].end, nlit++;
		lora_tokenizer_literal(t, lit, nlit);
	}
	if ((rc = lora_tokenizer_encode(t, text, strlen(text), 0, ids, e)))
		goto out;
	for (size_t i = 0; i < nsp; i = from) {
		/* a run of spans alike in what matters here */
		for (from = i + 1; from < nsp && sp[from].train == sp[i].train; from++)
			;
		size_t k1 = ids->n;
		if (from < nsp && (rc = boundary(t, text, sp[from].begin, ids, &k1, e)))
			goto out;
		if ((rc = flags_set(tg, k0, k1 > k0 ? k1 : k0, all || sp[i].train)))
			goto out;
		k0 = k1 > k0 ? k1 : k0;
	}
	rc = flags_set(tg, k0, ids->n, all);
out:
	lora_tokenizer_literal(t, NULL, 0);
	if (rc == LORA_ENOMEM)
		rc = lora_err_nomem(e);
	free(lit);
	free(text);
	free(sp);
	return rc;
}

/* One JSONL example into ids and their target flags (lora_tokenize.h);
 * errors name the line and where it starts. */
static int encode_example(const enc *x, lora_tokenizer *t, const doc *d, lora_tokenizer_ids *ids, flags *tg,
                          lora_err *e)
{
	lora_jsonl_example ex;
	char where[96];
	int special = !x->j->no_special, rc;
	snprintf(where, sizeof where, "line %zu (byte %zu)", d->line, d->byte);
	if ((rc = lora_jsonl_parse(&ex, where, x->buf + d->off, d->len, e)))
		goto out;
	switch (ex.kind) {
	case LORA_JSONL_TEXT:
		if ((rc = lora_tokenizer_encode(t, ex.text, strlen(ex.text), special, ids, e)))
			break;
		if (special)
			eos_bos(x, ids, 0, 0);
		rc = flags_set(tg, 0, ids->n, 1);
		break;
	case LORA_JSONL_PROMPT: {
		size_t np = 0;
		if ((rc = lora_tokenizer_encode(t, ex.prompt, strlen(ex.prompt), special, ids, e)) ||
		    (np = ids->n, rc = lora_tokenizer_encode(t, ex.completion, strlen(ex.completion), special, ids, e)))
			break;
		if (special)
			eos_bos(x, ids, np, 1);
		if (!(rc = flags_set(tg, 0, np, x->j->train_on_inputs)))
			rc = flags_set(tg, np, ids->n, 1);
		break;
	}
	case LORA_JSONL_MESSAGES:
		rc = encode_chat(x, t, &ex, ids, tg, e);
		break;
	}
	if (rc == LORA_ENOMEM)
		rc = lora_err_nomem(e);
	else if (rc)
		lora_err_prefix(e, "%s", where);
out:
	lora_jsonl_free(&ex);
	return rc;
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
			x->tg[i].n = 0;
			if (d->jsonl ? encode_example(x, x->tok[k], d, &x->ids[i], &x->tg[i], &we)
			             : lora_tokenizer_encode(x->tok[k], x->buf + d->off, d->len, special, &x->ids[i], &we)) {
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
	/* a line of --lines is named as a JSONL example names itself */
	if (bad != SIZE_MAX && x->j->lines && !x->docs[bad].jsonl)
		lora_err_prefix(e, "line %zu (byte %zu)", x->docs[bad].line, x->docs[bad].byte);
	if (bad != SIZE_MAX)
		return lora_err_prefix(e, "%s", display(x->docs[bad].name));
	for (size_t i = 0; i < nd; i++) {
		int rc = lora_data_writer_doc(&x->w, x->ids[i].id, x->docs[i].jsonl ? x->tg[i].b : NULL, x->ids[i].n);
		if (rc == LORA_ENOMEM)
			return lora_err_nomem(e);
		if (rc)
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
	    (rc = add_doc(x, (doc){start, x->len - start, name, 1, 0, 0}, e)))
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
static int encode_lines(enc *x, const char *name, FILE *f, int jsonl, lora_err *e)
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
			if (!nl && jsonl && x->len - ls > LORA_JSONL_MAX_LINE)
				return lora_err_set(e, LORA_EFORMAT, "%s: line %zu (byte %zu): longer than the limit (%zu bytes)",
				                    display(name), line, foff + ls - fstart, LORA_JSONL_MAX_LINE);
			if (!nl && (got || ls == x->len))
				break;
			size_t end = nl ? (size_t)(nl - x->buf) : x->len, n = end - ls;
			if (n && x->buf[end - 1] == '\r')
				n--;
			if ((rc = check_utf8(name, x->buf + ls, n, foff + ls - fstart, line, e)) ||
			    (rc = add_doc(x, (doc){ls, n, name, line, foff + ls - fstart, jsonl}, e)))
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

static int is_jsonl(const lora_tokenize_job *j, const char *name)
{
	return j->jsonl || lora_path_has_suffix(name, ".jsonl");
}

/* The id of tokenizer_config.json's key (a token's text, or an object
 * with its "content"), or -1 when it has none. */
static int special_id(const lora_tokenizer *t, const cJSON *cfg, const char *key, const char *path, int64_t *id,
                      lora_err *e)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
	if (cJSON_IsObject(v))
		v = cJSON_GetObjectItemCaseSensitive(v, "content");
	*id = -1;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' is not a token", path, key);
	if ((*id = lora_tokenizer_token_id(t, v->valuestring)) < 0)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s '%.60s' is not in the tokenizer", path, key, v->valuestring);
	return 0;
}

/* BOS and EOS as Hugging Face's tokenizer names them: from the
 * tokenizer_config.json beside tokenizer.json. JSONL examples end with
 * EOS, so with need a config without it is an error. */
static int special_ids(enc *x, int need, lora_err *e)
{
	char *dir = lora_path_dir(x->path), *path = dir ? lora_path_join(dir, "tokenizer_config.json") : NULL;
	cJSON *cfg = NULL;
	int rc = 0;
	x->bos = x->eos = -1;
	if (!path)
		rc = lora_err_nomem(e);
	else if (lora_path_exists(path) &&
	         !(rc = lora_json_read_file(&cfg, path, 0, e)) && !(rc = special_id(x->tok[0], cfg, "bos_token", path, &x->bos, e)))
		rc = special_id(x->tok[0], cfg, "eos_token", path, &x->eos, e);
	if (!rc && need && x->eos < 0)
		rc = lora_err_set(e, LORA_EUSAGE,
		                  "%s: no eos_token (JSONL examples end with it; --no-special adds no special tokens)", path);
	cJSON_Delete(cfg);
	free(dir);
	x->config = path;
	return rc;
}

static int encode(lora_tokenize_job *j, lora_err *e)
{
	enc x = {.j = j, .outname = j->out && strcmp(j->out, "-") ? j->out : "standard output"};
	int rc = open_tokenizer(&x, e);
	if (rc)
		goto out;
	size_t V = lora_tokenizer_vocab_size(x.tok[0]);
	int any_jsonl = 0;
	for (size_t i = 0; i < j->ninputs; i++)
		any_jsonl |= is_jsonl(j, j->inputs[i]);
	if ((rc = special_ids(&x, any_jsonl && !j->no_special, e)))
		goto out;
	/* chats need the template; other examples do not, so its absence is
	 * an error only when a chat comes (or a format was asked for) */
	if (any_jsonl && lora_chat_open(&x.chat, x.config, j->chat_format, &x.chat_err) && j->chat_format) {
		*e = x.chat_err;
		rc = x.chat_err.code;
		goto out;
	}
	x.fmt = j->format;
	if (x.fmt == LORA_DATA_AUTO) {
		const char *o = j->out && strcmp(j->out, "-") ? j->out : "";
		x.fmt = lora_path_has_suffix(o, ".tok")                                          ? LORA_DATA_TOK
		        : lora_path_has_suffix(o, ".u32")                                        ? LORA_DATA_U32
		        : lora_path_has_suffix(o, ".bin") || lora_path_has_suffix(o, ".u16") ? LORA_DATA_U16
		        : any_jsonl                                                              ? LORA_DATA_TOK
		                                                                                 : LORA_DATA_U16;
	}
	if (x.fmt == LORA_DATA_U16 && V > 65536) {
		rc = lora_err_set(e, LORA_EUSAGE, "%s: %zu token ids do not fit --output-format u16; use u32", x.path, V);
		goto out;
	}
	if ((rc = lora_outfile_open(&x.of, j->out, (j->force ? LORA_OUT_FORCE : 0) | LORA_OUT_BINARY, e)))
		goto out;
	if (lora_data_writer_open(&x.w, x.of.fp, x.fmt, V > 65536 ? 4 : 2, any_jsonl))
		rc = lora_err_set(e, LORA_EIO, "%s: %s", x.outname, strerror(errno));
	for (size_t i = 0; i < j->ninputs && !rc; i++) {
		const char *name = j->inputs[i];
		int jl = is_jsonl(j, name);
		FILE *f = open_input(name, e);
		rc = !f ? LORA_EIO : j->lines || jl ? encode_lines(&x, name, f, jl, e) : encode_file(&x, name, f, e);
		close_input(f);
	}
	if (!rc)
		rc = encode_batch(&x, e);
	if (!rc && (rc = lora_data_writer_close(&x.w)))
		rc = rc == LORA_ENOMEM ? lora_err_nomem(e) : lora_err_set(e, LORA_EIO, "%s: %s", x.outname, strerror(errno));
	if (!rc)
		rc = lora_outfile_commit(&x.of, e);
	else
		lora_outfile_abort(&x.of);
out:
	lora_chat_close(x.chat);
	free(x.config);
	lora_data_writer_free(&x.w);
	for (int k = 0; k < x.ntok; k++)
		lora_tokenizer_free(x.tok[k]);
	for (size_t i = 0; i < x.dcap; i++) {
		lora_tokenizer_ids_free(&x.ids[i]);
		free(x.tg[i].b);
	}
	free(x.tg);
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

int lora_tokenize_open_data(lora_data **out, const char *model, const char *tokenizer, const char *path,
                            lora_data_format fmt, size_t vocab, int threads, lora_err *e)
{
	const char *tmp = getenv("TMPDIR");
	char dir[4096], file[4200];
	char *const inputs[] = {(char *)path};
	int rc;
	*out = NULL;
	if (fmt != LORA_DATA_AUTO || !(lora_path_has_suffix(path, ".jsonl") || lora_path_has_suffix(path, ".txt")))
		return lora_data_open(out, path, fmt, vocab, e);
	int fd = lora_path_open_file(path, NULL, e);
	if (fd < 0)
		return fd;
	close(fd);
	snprintf(dir, sizeof dir, "%s/lora-data.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		return lora_err_set(e, LORA_EIO, "%s: cannot make a directory to tokenize %s in: %s", dir, path,
		                    strerror(errno));
	snprintf(file, sizeof file, "%s/data.tok", dir);
	lora_tokenize_job j = {.model = tokenizer ? NULL : model, .tokenizer = tokenizer, .inputs = inputs, .ninputs = 1, .threads = threads, .out = file,
	                       .format = lora_path_has_suffix(path, ".jsonl") ? LORA_DATA_TOK : LORA_DATA_U32};
	rc = lora_tokenize_job_run(&j, e);
	if (!rc && (rc = lora_data_open(out, file, j.format, vocab, e)) && !strncmp(e->msg, file, strlen(file))) {
		/* the data is the text's: name it */
		char msg[sizeof e->msg];
		snprintf(msg, sizeof msg, "%s%s", path, e->msg + strlen(file));
		lora_err_set(e, rc, "%s", msg);
	}
	if (!rc) {
		char *name = strdup(path);
		if (!name) {
			lora_data_close(*out);
			*out = NULL;
			rc = lora_err_nomem(e);
		} else {
			free((*out)->path);
			(*out)->path = name;
		}
	}
	unlink(file);
	rmdir(dir);
	return rc;
}

int lora_tokenize_job_run(lora_tokenize_job *j, lora_err *e)
{
	static char *const stdin_only[] = {"-"};
	if (!j->ninputs)
		j->inputs = stdin_only, j->ninputs = 1;
	return j->decode ? decode(j, e) : encode(j, e);
}
