#include "text/tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "core/path.h"
#include "core/pattern.h"
#include "core/shape.h"
#include "core/unicode.h"
#include "core/utf8.h"

/* Nested Sequences flatten into at most this many steps each. */
#define MAX_STEPS 16
/* The word cache is emptied when it holds this many bytes. */
#define CACHE_BYTES (64u << 20)
/* Words longer than this are not cached (the library: 256). */
#define CACHE_WORD 256

enum { N_NFC, N_NFD, N_NFKC, N_NFKD, N_PREPEND, N_REPLACE };
enum { P_BYTELEVEL, P_SPLIT, P_METASPACE, P_DIGITS };
enum { D_BYTELEVEL, D_METASPACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { S_ALWAYS, S_FIRST, S_NEVER };

/* A text pattern of tokenizer.json: {"String": s} or {"Regex": re}. */
typedef struct {
	char *lit; /* the String, or NULL */
	size_t litn;
	lora_pattern *re; /* the Regex */
	char *src;        /* and its source */
} pat;

/* One normalizer, pre-tokenizer or decoder of a flattened Sequence. */
typedef struct {
	int type;
	pat p;        /* Replace, Split; ByteLevel's regex */
	char *str;    /* Prepend, Replace content, Metaspace replacement, Strip content */
	size_t strn;
	int behavior; /* Split */
	int flag;     /* ByteLevel add_prefix_space, Split invert, Metaspace split, Digits individual */
	int flag2;    /* ByteLevel use_regex */
	int scheme;   /* Metaspace prepend_scheme */
	size_t start, stop; /* Strip */
} step;

typedef struct {
	char *s; /* content, and the text matched (normalized if normalized) */
	size_t n;
	char *pat;
	size_t patn;
	uint32_t id;
	int special, lstrip, rstrip, single_word, normalized;
} added;

/* Added tokens of one kind (normalized or not), by first byte, longest
 * first within a byte, for leftmost-longest matching. */
typedef struct {
	uint32_t *idx;     /* into t->added */
	uint32_t at[257];  /* idx[at[b]..at[b+1]) start with byte b */
} addset;

/* Open addressing over strings: slots hold entry index + 1. */
typedef struct {
	uint32_t *slot;
	size_t mask;
} strmap;

typedef struct {
	uint64_t key; /* a << 32 | b, or ~0 for empty */
	uint32_t rank, id;
} merge;

/* Scratch of one pre-tokenizer level: the transformed piece. */
typedef struct {
	char *a, *b;
	size_t acap, bcap;
	lora_pattern_scan *scan;
} level;

typedef struct {
	uint32_t c;
	int32_t prev, next;
	int gone;
} sym;

typedef struct {
	uint32_t rank, pos, id;
} qitem;

struct lora_tokenizer {
	char *path;
	/* model */
	char **tok;     /* by id: the model's token, NULL where none */
	uint32_t *tokn;
	size_t nid;     /* one past the largest id, added tokens included */
	char *arena;    /* the vocabulary's strings */
	uint32_t *ent;  /* vocabulary ids, in the order of the map's entries */
	size_t nent;
	strmap vocab;
	int32_t *char_id; /* id of the one-code-point token cp < 0x10000, or -1 */
	merge *merges;
	size_t mmask;
	int64_t unk;    /* id, or -1 */
	int fuse_unk, byte_fallback, ignore_merges;
	int meta_split; /* words may be cut before each run of U+2581 (model()) */
	int32_t byte_id[256]; /* <0xXX> tokens for byte_fallback, or -1 */
	unsigned bchar[256];  /* ByteLevel: byte -> code point */
	int16_t cbyte[324];   /* and back, or -1 */
	/* added tokens */
	added *added;
	size_t nadded;
	addset raw, norm;
	uint8_t *special; /* by id: the token's text is a special token's */
	/* literal ranges: byte ranges (begin, end pairs, in order) of the text
	 * being encoded where special added tokens are not matched */
	const size_t *lit;
	size_t nlit;
	const char *text;  /* the text being encoded: offsets of the first stage */
	size_t gap_b, gap_e; /* the text's range the second stage works on */
	int32_t *added_of; /* by id: the added token (decoding looks there first), or -1 */
	/* pipeline */
	step norms[MAX_STEPS], pres[MAX_STEPS], decs[MAX_STEPS];
	int nnorm, npre, ndec, has_decoder;
	uint32_t *prefix, *suffix;
	size_t nprefix, nsuffix;
	/* encoding state */
	level lv[MAX_STEPS + 1];
	lora_pattern_scan *norm_scan[MAX_STEPS];
	char *nbuf[2];
	size_t ncap[2];
	sym *sy;
	qitem *q;
	size_t symcap;
	lora_tokenizer_ids *out;
	/* word cache: open addressing, entries in an arena */
	uint32_t *cslot;
	size_t cmask, ccount;
	char *carena;
	size_t cused, ccap;
};

/* ---- small helpers ---- */

static uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0x9e3779b97f4a7c15u ^ n;
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, s, 8);
		h = (h ^ v) * 0xff51afd7ed558ccdu;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	uint64_t v = 0;
	memcpy(&v, s, n);
	h ^= v; /* murmur3's finalizer: every bit of the key reaches the low bits */
	h = (h ^ h >> 33) * 0xff51afd7ed558ccdu;
	h = (h ^ h >> 33) * 0xc4ceb9fe1a85ec53u;
	return h ^ h >> 33;
}

static size_t pow2_above(size_t n)
{
	size_t c = 16;
	while (c < 2 * n)
		c <<= 1;
	return c;
}

int lora_tokenizer_ids_push(lora_tokenizer_ids *ids, uint32_t id)
{
	if (lora_shape_grow(&ids->id, &ids->cap, ids->n + 1, sizeof *ids->id))
		return LORA_ENOMEM;
	ids->id[ids->n++] = id;
	return 0;
}

void lora_tokenizer_ids_free(lora_tokenizer_ids *ids)
{
	free(ids->id);
	memset(ids, 0, sizeof *ids);
}

/* The vocabulary id of s[0..n), or -1. */
static int64_t vocab_get(const lora_tokenizer *t, const char *s, size_t n)
{
	if (!t->vocab.slot)
		return -1;
	for (size_t i = hash_bytes(s, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
		uint32_t k = t->vocab.slot[i];
		if (!k)
			return -1;
		uint32_t id = t->ent[k - 1];
		if (t->tokn[id] == n && !memcmp(t->tok[id], s, n))
			return id;
	}
}

static const merge *merge_get(const lora_tokenizer *t, uint32_t a, uint32_t b)
{
	uint64_t key = (uint64_t)a << 32 | b;
	for (size_t i = (size_t)((key * 0x9e3779b97f4a7c15u) >> 20) & t->mmask;; i = (i + 1) & t->mmask) {
		if (t->merges[i].key == key)
			return &t->merges[i];
		if (t->merges[i].key == UINT64_MAX)
			return NULL;
	}
}

/* GPT-2's map of bytes to printable code points (ByteLevel), and back. */
static void byte_map(lora_tokenizer *t)
{
	unsigned n = 0;
	memset(t->cbyte, 0xff, sizeof t->cbyte);
	for (unsigned i = 0; i < 256; i++) {
		t->bchar[i] = (i >= '!' && i <= '~') || (i >= 0xa1 && i <= 0xac) || i >= 0xae ? i : 256 + n++;
		t->cbyte[t->bchar[i]] = (int16_t)i;
	}
}

/* ---- reading tokenizer.json ---- */

static int fail(const lora_tokenizer *t, lora_err *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(const lora_tokenizer *t, lora_err *e, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return lora_err_set(e, LORA_EFORMAT, "%s: %s", t->path, msg);
}

static const cJSON *get(const cJSON *j, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(j, key);
}

/* A boolean member (absent or null: def), or -1 if it is something else. */
static int get_bool(const cJSON *j, const char *key, int def)
{
	const cJSON *v = get(j, key);
	if (!v || cJSON_IsNull(v))
		return def;
	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

static int bad_member(const lora_tokenizer *t, lora_err *e, const char *what, const char *key, const char *want)
{
	return fail(t, e, "%s: '%s' is not %s", what, key, want);
}

/* The string member key of j (required) copied into *out. */
static int get_str(const lora_tokenizer *t, const cJSON *j, const char *what, const char *key, char **out,
                   size_t *n, lora_err *e)
{
	const cJSON *v = get(j, key);
	if (!cJSON_IsString(v))
		return bad_member(t, e, what, key, "a string");
	*n = strlen(v->valuestring);
	if (!(*out = strdup(v->valuestring)))
		return lora_err_nomem(e);
	return 0;
}

/* A member that must be one Unicode character (Metaspace, Strip). */
static int get_char(const lora_tokenizer *t, const cJSON *j, const char *what, const char *key, char **out,
                    size_t *n, lora_err *e)
{
	int rc = get_str(t, j, what, key, out, n, e);
	unsigned cp;
	if (!rc && (!*n || (size_t)lora_utf8_decode(*out, &cp) != *n))
		return bad_member(t, e, what, key, "one character");
	return rc;
}

static int get_size(const lora_tokenizer *t, const cJSON *j, const char *what, const char *key, size_t *v,
                    lora_err *e)
{
	if (lora_json_size(get(j, key), v))
		return bad_member(t, e, what, key, "a non-negative integer");
	return 0;
}

/* {"String": s} or {"Regex": re} into p. */
static int get_pat(lora_tokenizer *t, const cJSON *j, const char *what, pat *p, lora_err *e)
{
	const cJSON *pj = get(j, "pattern");
	const cJSON *s = get(pj, "String"), *r = get(pj, "Regex");
	if (cJSON_IsString(s) && !r) {
		p->litn = strlen(s->valuestring);
		if (!p->litn)
			return fail(t, e, "%s: an empty String pattern is not supported", what);
		if (!(p->lit = strdup(s->valuestring)))
			return lora_err_nomem(e);
		return 0;
	}
	if (!cJSON_IsString(r) || s)
		return bad_member(t, e, what, "pattern", "{\"String\": ...} or {\"Regex\": ...}");
	char label[256];
	snprintf(label, sizeof label, "%s: %s pattern", t->path, what);
	if (!(p->src = strdup(r->valuestring)))
		return lora_err_nomem(e);
	int rc = lora_pattern_compile_onig(&p->re, r->valuestring, label, e);
	return rc == LORA_EINVAL ? (e ? e->code = LORA_EFORMAT : LORA_EFORMAT) : rc;
}

static const char *type_of(const cJSON *j)
{
	const cJSON *ty = get(j, "type");
	return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

static int unsupported(const lora_tokenizer *t, lora_err *e, const char *part, const char *type)
{
	if (!type)
		return fail(t, e, "%s has no type", part);
	return fail(t, e, "%s type '%s' is not supported", part, type);
}

/* A step appended to steps[*n] (nested Sequences are flattened). */
static step *new_step(const lora_tokenizer *t, step *steps, int *n, const char *part, lora_err *e)
{
	if (*n == MAX_STEPS) {
		fail(t, e, "%s: more than %d steps", part, MAX_STEPS);
		return NULL;
	}
	return &steps[(*n)++];
}

/* A Sequence step: member (an array) of j, each item parsed by parse. */
static int sequence(lora_tokenizer *t, const cJSON *j, const char *what, const char *member,
                    int (*parse)(lora_tokenizer *, const cJSON *, lora_err *), lora_err *e)
{
	const cJSON *seq = get(j, member), *it;
	char part[64];
	snprintf(part, sizeof part, "%s Sequence", what);
	if (!cJSON_IsArray(seq))
		return bad_member(t, e, part, member, "an array");
	cJSON_ArrayForEach(it, seq) {
		int rc = parse(t, it, e);
		if (rc)
			return rc;
	}
	return 0;
}

static int parse_norm(lora_tokenizer *t, const cJSON *j, lora_err *e)
{
	static const char *const names[] = {"NFC", "NFD", "NFKC", "NFKD", "Prepend", "Replace"};
	const char *ty = type_of(j);
	if (ty && !strcmp(ty, "Sequence"))
		return sequence(t, j, "normalizer", "normalizers", parse_norm, e);
	int k = 0;
	while (k < 6 && !(ty && !strcmp(ty, names[k])))
		k++;
	if (k == 6)
		return unsupported(t, e, "normalizer", ty);
	step *s = new_step(t, t->norms, &t->nnorm, "normalizer", e);
	if (!s)
		return LORA_EFORMAT;
	s->type = k;
	if (k == N_PREPEND)
		return get_str(t, j, "normalizer Prepend", "prepend", &s->str, &s->strn, e);
	if (k == N_REPLACE) {
		int rc = get_pat(t, j, "normalizer Replace", &s->p, e);
		return rc ? rc : get_str(t, j, "normalizer Replace", "content", &s->str, &s->strn, e);
	}
	return 0;
}

static int parse_scheme(const lora_tokenizer *t, const cJSON *j, const char *what, step *s, lora_err *e)
{
	const cJSON *ps = get(j, "prepend_scheme");
	s->scheme = S_ALWAYS;
	if (ps) {
		const char *v = cJSON_IsString(ps) ? ps->valuestring : "";
		s->scheme = !strcmp(v, "always") ? S_ALWAYS : !strcmp(v, "first") ? S_FIRST : !strcmp(v, "never") ? S_NEVER : -1;
		if (s->scheme < 0)
			return bad_member(t, e, what, "prepend_scheme", "\"always\", \"first\" or \"never\"");
	}
	int aps = get_bool(j, "add_prefix_space", 1);
	if (aps < 0)
		return bad_member(t, e, what, "add_prefix_space", "a boolean");
	if (!aps) {
		if (s->scheme != S_NEVER && ps)
			return fail(t, e, "%s: add_prefix_space does not match declared prepend_scheme", what);
		s->scheme = S_NEVER;
	}
	return 0;
}

static int parse_split(lora_tokenizer *t, const cJSON *j, step *s, lora_err *e)
{
	static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
	                                    "Contiguous"};
	const cJSON *b = get(j, "behavior");
	int k = 0;
	while (k < 5 && !(cJSON_IsString(b) && !strcmp(b->valuestring, names[k])))
		k++;
	if (k == 5)
		return bad_member(t, e, "pre_tokenizer Split", "behavior", "a split behavior");
	s->behavior = k;
	if ((s->flag = get_bool(j, "invert", 0)) < 0)
		return bad_member(t, e, "pre_tokenizer Split", "invert", "a boolean");
	return get_pat(t, j, "pre_tokenizer Split", &s->p, e);
}

/* GPT-2's pattern, which ByteLevel splits with when use_regex is set. */
static const char gpt2_re[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pre(lora_tokenizer *t, const cJSON *j, lora_err *e)
{
	const char *ty = type_of(j);
	if (ty && !strcmp(ty, "Sequence"))
		return sequence(t, j, "pre_tokenizer", "pretokenizers", parse_pre, e);
	int k = !ty ? -1 : !strcmp(ty, "ByteLevel") ? P_BYTELEVEL : !strcmp(ty, "Split") ? P_SPLIT
	        : !strcmp(ty, "Metaspace") ? P_METASPACE : !strcmp(ty, "Digits") ? P_DIGITS : -1;
	if (k < 0)
		return unsupported(t, e, "pre_tokenizer", ty);
	step *s = new_step(t, t->pres, &t->npre, "pre_tokenizer", e);
	if (!s)
		return LORA_EFORMAT;
	s->type = k;
	switch (k) {
	case P_BYTELEVEL:
		if ((s->flag = get_bool(j, "add_prefix_space", 1)) < 0 || (s->flag2 = get_bool(j, "use_regex", 1)) < 0)
			return fail(t, e, "pre_tokenizer ByteLevel: add_prefix_space and use_regex are booleans");
		if (s->flag2) {
			char label[256];
			snprintf(label, sizeof label, "%s: pre_tokenizer ByteLevel", t->path);
			return lora_pattern_compile_onig(&s->p.re, gpt2_re, label, e);
		}
		return 0;
	case P_SPLIT:
		return parse_split(t, j, s, e);
	case P_METASPACE:
		if ((s->flag = get_bool(j, "split", 1)) < 0)
			return bad_member(t, e, "pre_tokenizer Metaspace", "split", "a boolean");
		int rc = get_char(t, j, "pre_tokenizer Metaspace", "replacement", &s->str, &s->strn, e);
		return rc ? rc : parse_scheme(t, j, "pre_tokenizer Metaspace", s, e);
	default:
		if ((s->flag = get_bool(j, "individual_digits", 0)) < 0)
			return bad_member(t, e, "pre_tokenizer Digits", "individual_digits", "a boolean");
		return 0;
	}
}

static int parse_dec(lora_tokenizer *t, const cJSON *j, lora_err *e)
{
	static const char *const names[] = {"ByteLevel", "Metaspace", "ByteFallback", "Fuse", "Strip", "Replace"};
	const char *ty = type_of(j);
	if (ty && !strcmp(ty, "Sequence"))
		return sequence(t, j, "decoder", "decoders", parse_dec, e);
	int k = 0;
	while (k < 6 && !(ty && !strcmp(ty, names[k])))
		k++;
	if (k == 6)
		return unsupported(t, e, "decoder", ty);
	step *s = new_step(t, t->decs, &t->ndec, "decoder", e);
	if (!s)
		return LORA_EFORMAT;
	s->type = k;
	if (k == D_METASPACE) {
		int rc = get_char(t, j, "decoder Metaspace", "replacement", &s->str, &s->strn, e);
		return rc ? rc : parse_scheme(t, j, "decoder Metaspace", s, e);
	}
	if (k == D_STRIP) {
		int rc = get_char(t, j, "decoder Strip", "content", &s->str, &s->strn, e);
		if (!rc)
			rc = get_size(t, j, "decoder Strip", "start", &s->start, e);
		return rc ? rc : get_size(t, j, "decoder Strip", "stop", &s->stop, e);
	}
	if (k == D_REPLACE) {
		int rc = get_pat(t, j, "decoder Replace", &s->p, e);
		return rc ? rc : get_str(t, j, "decoder Replace", "content", &s->str, &s->strn, e);
	}
	return 0;
}

/* The ids of special token name in TemplateProcessing's special_tokens
 * appended to *ids. */
static int template_ids(lora_tokenizer *t, const cJSON *specials, const cJSON *piece, uint32_t **ids, size_t *n,
                        lora_err *e)
{
	const cJSON *name = get(piece, "id");
	const cJSON *sp = cJSON_IsString(name) ? get(specials, name->valuestring) : NULL;
	const cJSON *list = get(sp, "ids"), *it;
	if (!cJSON_IsArray(list))
		return fail(t, e, "post_processor TemplateProcessing: special token %s%s%s has no ids",
		            cJSON_IsString(name) ? "'" : "", cJSON_IsString(name) ? name->valuestring : "(unnamed)",
		            cJSON_IsString(name) ? "'" : "");
	cJSON_ArrayForEach(it, list) {
		size_t v;
		if (lora_json_size(it, &v) || v > LORA_TOKENIZER_MAX_ID)
			return fail(t, e, "post_processor TemplateProcessing: special token '%s': an id is not in [0, %u]",
			            name->valuestring, LORA_TOKENIZER_MAX_ID);
		uint32_t *p = realloc(*ids, (*n + 1) * sizeof *p);
		if (!p)
			return lora_err_nomem(e);
		*ids = p;
		p[(*n)++] = (uint32_t)v;
	}
	return 0;
}

static int parse_template(lora_tokenizer *t, const cJSON *j, lora_err *e)
{
	const cJSON *single = get(j, "single"), *specials = get(j, "special_tokens"), *it;
	int seen = 0;
	if (!cJSON_IsArray(single))
		return bad_member(t, e, "post_processor TemplateProcessing", "single", "an array");
	if (t->nprefix || t->nsuffix || t->prefix || t->suffix)
		return fail(t, e, "post_processor: more than one TemplateProcessing");
	cJSON_ArrayForEach(it, single) {
		const cJSON *sp = get(it, "SpecialToken"), *seq = get(it, "Sequence");
		if (cJSON_IsObject(sp) && !seq) {
			int rc = seen ? template_ids(t, specials, sp, &t->suffix, &t->nsuffix, e)
			              : template_ids(t, specials, sp, &t->prefix, &t->nprefix, e);
			if (rc)
				return rc;
		} else if (cJSON_IsObject(seq) && !sp && !seen && cJSON_IsString(get(seq, "id")) &&
		           !strcmp(get(seq, "id")->valuestring, "A")) {
			seen = 1;
		} else {
			return fail(t, e, "post_processor TemplateProcessing: 'single' must hold special tokens and the "
			                  "sequence A once");
		}
	}
	if (!seen)
		return fail(t, e, "post_processor TemplateProcessing: 'single' must hold special tokens and the sequence A once");
	return 0;
}

static int parse_post(lora_tokenizer *t, const cJSON *j, lora_err *e)
{
	const char *ty = type_of(j);
	if (ty && !strcmp(ty, "Sequence"))
		return sequence(t, j, "post_processor", "processors", parse_post, e);
	if (ty && !strcmp(ty, "TemplateProcessing"))
		return parse_template(t, j, e);
	/* ByteLevel only trims offsets, which this module does not report. */
	if (ty && !strcmp(ty, "ByteLevel"))
		return 0;
	return unsupported(t, e, "post_processor", ty);
}

/* ---- the BPE model ---- */

static int map_insert(lora_tokenizer *t, size_t k)
{
	uint32_t id = t->ent[k];
	for (size_t i = hash_bytes(t->tok[id], t->tokn[id]) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
		if (!t->vocab.slot[i]) {
			t->vocab.slot[i] = (uint32_t)k + 1;
			return 0;
		}
	}
}

/* Vocabulary strings into one arena, tok[] by id, the map over them. nid
 * is already the size of the id space (set by scan_ids). */
static int parse_vocab(lora_tokenizer *t, const cJSON *vocab, lora_err *e)
{
	const cJSON *it;
	size_t bytes = 0, n = 0;
	cJSON_ArrayForEach(it, vocab) {
		bytes += strlen(it->string) + 1;
		n++;
	}
	t->arena = malloc(bytes + 1);
	t->ent = malloc((n + 1) * sizeof *t->ent);
	t->vocab.mask = pow2_above(n) - 1;
	t->vocab.slot = calloc(t->vocab.mask + 1, sizeof *t->vocab.slot);
	if (!t->arena || !t->ent || !t->vocab.slot)
		return lora_err_nomem(e);
	char *p = t->arena;
	cJSON_ArrayForEach(it, vocab) {
		size_t id, len = strlen(it->string);
		lora_json_size(it, &id); /* checked by scan_ids */
		if (t->tok[id])
			return fail(t, e, "model vocab: id %zu is given to '%s' and '%s'", id, t->tok[id], it->string);
		memcpy(p, it->string, len + 1);
		t->tok[id] = p;
		t->tokn[id] = (uint32_t)len;
		t->ent[t->nent] = (uint32_t)id;
		map_insert(t, t->nent++);
		p += len + 1;
	}
	return 0;
}

static int add_merge(lora_tokenizer *t, const char *a, size_t an, const char *b, size_t bn, uint32_t rank,
                     char **buf, size_t *cap, lora_err *e)
{
	int64_t ia = vocab_get(t, a, an), ib = vocab_get(t, b, bn);
	if (ia < 0 || ib < 0)
		return fail(t, e, "model merges: merge %u: token '%.*s' is not in the vocabulary", rank + 1,
		            (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
	if (lora_shape_grow(buf, cap, an + bn, 1))
		return lora_err_nomem(e);
	memcpy(*buf, a, an);
	memcpy(*buf + an, b, bn);
	int64_t ic = vocab_get(t, *buf, an + bn);
	if (ic < 0)
		return fail(t, e, "model merges: merge %u: token '%.*s' is not in the vocabulary", rank + 1,
		            (int)(an + bn), *buf);
	uint64_t key = (uint64_t)ia << 32 | (uint64_t)ib;
	size_t i = (size_t)((key * 0x9e3779b97f4a7c15u) >> 20) & t->mmask;
	while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key)
		i = (i + 1) & t->mmask;
	/* A pair listed twice keeps its last rank, as the library's map does. */
	t->merges[i] = (merge){key, rank, (uint32_t)ic};
	return 0;
}

static int parse_merges(lora_tokenizer *t, const cJSON *merges, lora_err *e)
{
	const cJSON *it;
	size_t n = 0, cap = 0;
	char *buf = NULL;
	int rc = 0, strings = -1;
	uint32_t rank = 0;
	if (!cJSON_IsArray(merges))
		return fail(t, e, "model: 'merges' is not an array");
	n = (size_t)cJSON_GetArraySize(merges);
	t->mmask = pow2_above(n) - 1;
	if (!(t->merges = malloc((t->mmask + 1) * sizeof *t->merges)))
		return lora_err_nomem(e);
	memset(t->merges, 0xff, (t->mmask + 1) * sizeof *t->merges);
	cJSON_ArrayForEach(it, merges) {
		int is_str = cJSON_IsString(it);
		const cJSON *a = cJSON_GetArrayItem(it, 0), *b = cJSON_GetArrayItem(it, 1);
		if (strings >= 0 && strings != is_str)
			rc = fail(t, e, "model merges: merge %u: strings and pairs are mixed", rank + 1);
		else if (is_str) {
			const char *s = it->valuestring, *sp = strchr(s, ' ');
			if (!strncmp(s, "#version", 8))
				continue;
			if (!sp || strchr(sp + 1, ' '))
				rc = fail(t, e, "model merges: merge %u: '%s' is not two tokens separated by a space", rank + 1,
				          s);
			else
				rc = add_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank, &buf, &cap, e);
		} else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(a) && cJSON_IsString(b))
			rc = add_merge(t, a->valuestring, strlen(a->valuestring), b->valuestring, strlen(b->valuestring), rank,
			               &buf, &cap, e);
		else
			rc = fail(t, e, "model merges: merge %u is not \"a b\" nor [\"a\", \"b\"]", rank + 1);
		if (rc)
			break;
		strings = is_str;
		rank++;
	}
	free(buf);
	return rc;
}

/* The model's options; tokens it names must be in the vocabulary. */
static int parse_bpe_options(lora_tokenizer *t, const cJSON *m, lora_err *e)
{
	const cJSON *v = get(m, "dropout");
	if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
		return fail(t, e, "model: BPE dropout is not supported");
	static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
	for (int i = 0; i < 2; i++) {
		v = get(m, affixes[i]);
		if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !*v->valuestring))
			return fail(t, e, "model: BPE %s is not supported", affixes[i]);
	}
	if ((t->fuse_unk = get_bool(m, "fuse_unk", 0)) < 0 || (t->byte_fallback = get_bool(m, "byte_fallback", 0)) < 0 ||
	    (t->ignore_merges = get_bool(m, "ignore_merges", 0)) < 0)
		return fail(t, e, "model: fuse_unk, byte_fallback and ignore_merges are booleans");
	v = get(m, "unk_token");
	t->unk = -1;
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsString(v))
			return bad_member(t, e, "model", "unk_token", "a string");
		if ((t->unk = vocab_get(t, v->valuestring, strlen(v->valuestring))) < 0)
			return fail(t, e, "model: unk_token '%s' is not in the vocabulary", v->valuestring);
	}
	for (unsigned b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", b);
		t->byte_id[b] = (int32_t)vocab_get(t, name, 6);
	}
	t->meta_split = !t->ignore_merges;
	for (size_t k = 0; k < t->nent && t->meta_split; k++) {
		uint32_t id = t->ent[k];
		const char *p = t->tok[id] + 1, *end = t->tok[id] + t->tokn[id];
		while (p < end && (p = memmem(p, (size_t)(end - p), "\xe2\x96\x81", 3))) {
			if (memcmp(p - 3 >= t->tok[id] ? p - 3 : t->tok[id], "\xe2\x96\x81", 3))
				t->meta_split = 0;
			p += 3;
		}
	}
	if (!(t->char_id = malloc(0x10000 * sizeof *t->char_id)))
		return lora_err_nomem(e);
	memset(t->char_id, 0xff, 0x10000 * sizeof *t->char_id);
	for (size_t k = 0; k < t->nent; k++) {
		uint32_t id = t->ent[k], cp;
		if (t->tokn[id] && (size_t)lora_utf8_decode(t->tok[id], &cp) == t->tokn[id] && cp < 0x10000)
			t->char_id[cp] = (int32_t)id;
	}
	if (t->char_id[0x2581] < 0)
		t->meta_split = 0;
	return 0;
}

/* ---- added tokens ---- */

static int normalize(lora_tokenizer *t, const char *s, size_t n, const char **out, size_t *outn, lora_err *e);

static int parse_added_one(lora_tokenizer *t, const cJSON *it, size_t *next_id, lora_err *e)
{
	const cJSON *c = get(it, "content");
	size_t fid;
	if (!cJSON_IsString(c) || lora_json_size(get(it, "id"), &fid) || fid > LORA_TOKENIZER_MAX_ID)
		return fail(t, e, "added_tokens: an entry lacks its content or an id in [0, %u]", LORA_TOKENIZER_MAX_ID);
	int special = get_bool(it, "special", 0);
	added a = {.special = special, .single_word = get_bool(it, "single_word", 0),
	           .lstrip = get_bool(it, "lstrip", 0), .rstrip = get_bool(it, "rstrip", 0),
	           .normalized = get_bool(it, "normalized", !special)};
	if (a.special < 0 || a.single_word < 0 || a.lstrip < 0 || a.rstrip < 0 || a.normalized < 0)
		return fail(t, e, "added_tokens: '%s': special, single_word, lstrip, rstrip and normalized are booleans",
		            c->valuestring);
	if (!*c->valuestring)
		return 0; /* the library ignores an empty token */
	a.n = strlen(c->valuestring);
	/* The id the library gives it: an earlier added token's, the
	 * vocabulary's, else the next one past the vocabulary's size. */
	size_t k = 0;
	while (k < t->nadded && !(t->added[k].n == a.n && !memcmp(t->added[k].s, c->valuestring, a.n)))
		k++;
	int64_t vid = vocab_get(t, c->valuestring, a.n);
	a.id = k < t->nadded ? t->added[k].id : vid >= 0 ? (uint32_t)vid : (uint32_t)(*next_id)++;
	if (a.id > LORA_TOKENIZER_MAX_ID)
		return fail(t, e, "added_tokens: '%s' would get id %u, over %u", c->valuestring, a.id, LORA_TOKENIZER_MAX_ID);
	if (!(a.s = strdup(c->valuestring)))
		return lora_err_nomem(e);
	if (k < t->nadded) {
		free(t->added[k].s);
		t->added[k] = a;
	} else {
		t->added[t->nadded++] = a;
	}
	return 0;
}

/* The matching sets: tokens by first byte, longest first. */
static int build_set(lora_tokenizer *t, addset *set, int normalized, lora_err *e)
{
	size_t n = 0;
	memset(set->at, 0, sizeof set->at);
	if (!(set->idx = malloc((t->nadded + 1) * sizeof *set->idx)))
		return lora_err_nomem(e);
	for (unsigned b = 0; b < 256; b++) {
		set->at[b] = (uint32_t)n;
		for (size_t k = 0; k < t->nadded; k++) {
			added *a = &t->added[k];
			if (a->normalized != normalized || !a->patn || (unsigned char)a->pat[0] != b)
				continue;
			size_t j = n++;
			while (j > set->at[b] && t->added[set->idx[j - 1]].patn < a->patn) {
				set->idx[j] = set->idx[j - 1];
				j--;
			}
			set->idx[j] = (uint32_t)k;
		}
	}
	set->at[256] = (uint32_t)n;
	return 0;
}

static int parse_added(lora_tokenizer *t, const cJSON *list, lora_err *e)
{
	const cJSON *it;
	size_t next_id = t->nent;
	if (!list || cJSON_IsNull(list))
		return 0;
	if (!cJSON_IsArray(list))
		return fail(t, e, "'added_tokens' is not an array");
	if (!(t->added = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof *t->added)))
		return lora_err_nomem(e);
	cJSON_ArrayForEach(it, list) {
		int rc = parse_added_one(t, it, &next_id, e);
		if (rc)
			return rc;
	}
	return 0;
}

/* Patterns (normalized content where asked), sets, special flags. Needs
 * the normalizer and the id space. */
static int finish_added(lora_tokenizer *t, lora_err *e)
{
	for (size_t k = 0; k < t->nadded; k++) {
		added *a = &t->added[k];
		const char *s = a->s;
		size_t n = a->n;
		int rc;
		if (a->normalized && (rc = normalize(t, a->s, a->n, &s, &n, e)))
			return rc;
		if (!(a->pat = malloc(n + 1)))
			return lora_err_nomem(e);
		memcpy(a->pat, s, n);
		a->pat[n] = 0;
		a->patn = n;
		t->added_of[a->id] = (int32_t)k;
	}
	/* Decoding reads a normalized token in its normalized form, and skips
	 * a token whose text is a special token's (the library's
	 * is_special_token looks at the text). */
	for (size_t k = 0; k < t->nadded; k++) {
		const added *a = &t->added[k];
		const char *ds = a->normalized ? a->pat : a->s;
		size_t dn = a->normalized ? a->patn : a->n;
		for (size_t j = 0; j < t->nadded; j++) {
			const added *b = &t->added[j];
			if (b->special && b->n == dn && !memcmp(b->s, ds, dn))
				t->special[a->id] = 1;
		}
		int64_t vid = a->special ? vocab_get(t, a->s, a->n) : -1;
		if (vid >= 0 && t->added_of[vid] < 0)
			t->special[vid] = 1;
	}
	int rc = build_set(t, &t->raw, 0, e);
	return rc ? rc : build_set(t, &t->norm, 1, e);
}

/* ---- the whole file ---- */

/* The model's vocabulary checked and sized: every value an id in range. */
static int scan_vocab(lora_tokenizer *t, const cJSON *m, const cJSON **vocab, lora_err *e)
{
	const char *ty = type_of(m);
	if (!cJSON_IsObject(m))
		return fail(t, e, "'model' is not an object");
	if (!ty || strcmp(ty, "BPE"))
		return unsupported(t, e, "model", ty);
	*vocab = get(m, "vocab");
	if (!cJSON_IsObject(*vocab))
		return fail(t, e, "model: 'vocab' is not an object");
	const cJSON *it;
	cJSON_ArrayForEach(it, *vocab) {
		size_t id;
		if (lora_json_size(it, &id) || id > LORA_TOKENIZER_MAX_ID)
			return fail(t, e, "model vocab: '%s' has no id in [0, %u]", it->string, LORA_TOKENIZER_MAX_ID);
		if (id + 1 > t->nid)
			t->nid = id + 1;
	}
	t->tok = calloc(t->nid + 1, sizeof *t->tok);
	t->tokn = calloc(t->nid + 1, sizeof *t->tokn);
	return t->tok && t->tokn ? 0 : lora_err_nomem(e);
}

/* The id space grown to cover the added tokens. */
static int size_ids(lora_tokenizer *t, lora_err *e)
{
	size_t nid = t->nid;
	for (size_t k = 0; k < t->nadded; k++)
		if (t->added[k].id + (size_t)1 > nid)
			nid = t->added[k].id + (size_t)1;
	char **tok = realloc(t->tok, (nid + 1) * sizeof *tok);
	if (tok)
		t->tok = tok;
	uint32_t *tokn = realloc(t->tokn, (nid + 1) * sizeof *tokn);
	if (tokn)
		t->tokn = tokn;
	if (!tok || !tokn || !(t->special = calloc(nid + 1, 1)) || !(t->added_of = malloc((nid + 1) * sizeof *t->added_of)))
		return lora_err_nomem(e);
	memset(t->added_of, 0xff, (nid + 1) * sizeof *t->added_of);
	for (size_t i = t->nid; i <= nid; i++) {
		t->tok[i] = NULL;
		t->tokn[i] = 0;
	}
	t->nid = nid;
	return 0;
}

/* Scratch for encoding: one pattern scan per regex of a step. */
static int make_scans(lora_tokenizer *t, lora_err *e)
{
	int rc = 0;
	for (int i = 0; i < t->npre && !rc; i++)
		if (t->pres[i].p.re)
			rc = lora_pattern_scan_new(&t->lv[i].scan, t->pres[i].p.re, e);
	for (int i = 0; i < t->nnorm && !rc; i++)
		if (t->norms[i].p.re)
			rc = lora_pattern_scan_new(&t->norm_scan[i], t->norms[i].p.re, e);
	return rc;
}

static int parse_root(lora_tokenizer *t, const cJSON *root, lora_err *e)
{
	const cJSON *v = get(root, "version"), *vocab = NULL, *m = get(root, "model");
	if (v && !(cJSON_IsString(v) && !strcmp(v->valuestring, "1.0")))
		return fail(t, e, "unknown tokenizer version");
	static const char *const unsup[] = {"truncation", "padding"};
	for (int i = 0; i < 2; i++)
		if ((v = get(root, unsup[i])) && !cJSON_IsNull(v))
			return fail(t, e, "%s is not supported (it must be null)", unsup[i]);
	int rc = scan_vocab(t, m, &vocab, e);
	if (!rc)
		rc = parse_vocab(t, vocab, e);
	if (!rc)
		rc = parse_merges(t, get(m, "merges"), e);
	if (!rc)
		rc = parse_bpe_options(t, m, e);
	if (!rc)
		rc = parse_added(t, get(root, "added_tokens"), e);
	if (!rc)
		rc = size_ids(t, e);
	static const char *const parts[] = {"normalizer", "pre_tokenizer", "decoder", "post_processor"};
	static int (*const parse[])(lora_tokenizer *, const cJSON *, lora_err *) = {parse_norm, parse_pre, parse_dec,
	                                                                            parse_post};
	for (int i = 0; i < 4 && !rc; i++) {
		v = get(root, parts[i]);
		if (i == 2)
			t->has_decoder = v && !cJSON_IsNull(v);
		if (v && !cJSON_IsNull(v))
			rc = cJSON_IsObject(v) ? parse[i](t, v, e) : fail(t, e, "'%s' is not an object", parts[i]);
	}
	if (!rc)
		rc = make_scans(t, e);
	if (!rc)
		rc = finish_added(t, e);
	for (size_t i = 0; i < t->nprefix + t->nsuffix && !rc; i++) {
		uint32_t id = i < t->nprefix ? t->prefix[i] : t->suffix[i - t->nprefix];
		if (id >= t->nid || (!t->tok[id] && t->added_of[id] < 0))
			rc = fail(t, e, "post_processor: id %u is not in the vocabulary", id);
	}
	return rc;
}

int lora_tokenizer_parse(lora_tokenizer **out, const char *path, const char *json, size_t n, lora_err *e)
{
	lora_tokenizer *t = calloc(1, sizeof *t);
	cJSON *root = NULL;
	int rc;
	*out = NULL;
	if (!t || !(t->path = strdup(path))) {
		free(t);
		return lora_err_nomem(e);
	}
	byte_map(t);
	if ((rc = lora_json_parse(&root, path, "file", json, n, e)))
		goto out;
	rc = parse_root(t, root, e);
out:
	cJSON_Delete(root);
	if (rc)
		lora_tokenizer_free(t);
	else
		*out = t;
	return rc;
}

int lora_tokenizer_open(lora_tokenizer **out, const char *path, lora_err *e)
{
	char *buf;
	size_t n;
	*out = NULL;
	int rc = lora_json_slurp(&buf, &n, path, 0, e);
	if (rc)
		return rc;
	rc = lora_tokenizer_parse(out, path, buf, n, e);
	free(buf);
	return rc;
}

static void free_steps(step *s, int n)
{
	for (int i = 0; i < n; i++) {
		free(s[i].p.lit);
		free(s[i].p.src);
		lora_pattern_free(s[i].p.re);
		free(s[i].str);
	}
}

void lora_tokenizer_free(lora_tokenizer *t)
{
	if (!t)
		return;
	for (size_t k = 0; k < t->nadded; k++) {
		free(t->added[k].s);
		free(t->added[k].pat);
	}
	free(t->added);
	free(t->raw.idx);
	free(t->norm.idx);
	free(t->special);
	free(t->added_of);
	free_steps(t->norms, t->nnorm);
	free_steps(t->pres, t->npre);
	free_steps(t->decs, t->ndec);
	for (int i = 0; i <= MAX_STEPS; i++) {
		free(t->lv[i].a);
		free(t->lv[i].b);
		lora_pattern_scan_free(t->lv[i].scan);
	}
	for (int i = 0; i < MAX_STEPS; i++)
		lora_pattern_scan_free(t->norm_scan[i]);
	free(t->nbuf[0]);
	free(t->nbuf[1]);
	free(t->sy);
	free(t->q);
	free(t->cslot);
	free(t->carena);
	free(t->prefix);
	free(t->suffix);
	free(t->tok);
	free(t->tokn);
	free(t->arena);
	free(t->ent);
	free(t->vocab.slot);
	free(t->char_id);
	free(t->merges);
	free(t->path);
	free(t);
}

size_t lora_tokenizer_vocab_size(const lora_tokenizer *t)
{
	return t->nid;
}

int64_t lora_tokenizer_token_id(const lora_tokenizer *t, const char *s)
{
	size_t n = strlen(s);
	for (size_t k = 0; k < t->nadded; k++)
		if (t->added[k].n == n && !memcmp(t->added[k].s, s, n))
			return t->added[k].id;
	return vocab_get(t, s, n);
}

const char *lora_tokenizer_token(const lora_tokenizer *t, uint32_t id, size_t *len, unsigned *flags)
{
	*flags = 0;
	*len = 0;
	if (id >= t->nid)
		return NULL;
	int32_t k = t->added_of[id];
	if (k >= 0) {
		const added *a = &t->added[k];
		*flags = LORA_TOKENIZER_ADDED | (a->special ? LORA_TOKENIZER_SPECIAL : 0) |
		         (a->normalized ? LORA_TOKENIZER_NORMALIZED : 0);
		if (!t->tok[id]) {
			*len = a->n;
			return a->s;
		}
	}
	if (t->tok[id])
		*flags |= LORA_TOKENIZER_IN_MODEL;
	*len = t->tok[id] ? t->tokn[id] : 0;
	return t->tok[id];
}

int lora_tokenizer_byte_level(const lora_tokenizer *t)
{
	for (int i = 0; i < t->ndec; i++)
		if (t->decs[i].type == D_BYTELEVEL)
			return 1;
	return 0;
}

static int cmp_rank(const void *x, const void *y)
{
	const merge *a = x, *b = y;
	return (a->rank > b->rank) - (a->rank < b->rank);
}

int lora_tokenizer_merges(const lora_tokenizer *t, uint32_t **pairs, size_t *n, lora_err *e)
{
	size_t k = 0;
	merge *m = malloc((t->mmask + 1) * sizeof *m);
	*pairs = NULL;
	*n = 0;
	if (!m)
		return lora_err_nomem(e);
	for (size_t i = 0; t->merges && i <= t->mmask; i++)
		if (t->merges[i].key != UINT64_MAX)
			m[k++] = t->merges[i];
	qsort(m, k, sizeof *m, cmp_rank);
	if (!(*pairs = malloc((3 * k + 1) * sizeof **pairs))) {
		free(m);
		return lora_err_nomem(e);
	}
	for (size_t i = 0; i < k; i++) {
		(*pairs)[3 * i] = (uint32_t)(m[i].key >> 32);
		(*pairs)[3 * i + 1] = (uint32_t)m[i].key;
		(*pairs)[3 * i + 2] = m[i].id;
	}
	*n = k;
	free(m);
	return 0;
}

size_t lora_tokenizer_pre_count(const lora_tokenizer *t)
{
	return (size_t)t->npre;
}

const char *lora_tokenizer_pre_step(const lora_tokenizer *t, size_t i, const char **regex)
{
	static const char *const names[] = {"ByteLevel", "Split", "Metaspace", "Digits"};
	*regex = t->pres[i].type == P_SPLIT ? t->pres[i].p.src : NULL;
	return names[t->pres[i].type];
}

/* ---- encoding: segments of a text ---- */

/* A callback over the segments [a, b) of a text, matched or not. */
typedef int (*seg_fn)(void *ctx, size_t a, size_t b, int match, lora_err *e);

static int char_len(const char *s)
{
	unsigned c = (unsigned char)*s;
	return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* The library's find_matches for a pattern: every match (an empty one
 * too, as Oniguruma's iterator yields them) and the gaps between. */
static int find_matches(const pat *p, lora_pattern_scan *sc, const char *s, size_t n, seg_fn fn, void *ctx,
                        lora_err *e)
{
	size_t prev = 0, pos = 0, last = SIZE_MAX, ms, me;
	int rc;
	if (!n)
		return fn(ctx, 0, 0, 0, e);
	while (pos <= n) {
		if (p->lit) {
			const char *f = memmem(s + pos, n - pos, p->lit, p->litn);
			if (!f)
				break;
			ms = (size_t)(f - s);
			me = ms + p->litn;
		} else if ((rc = lora_pattern_scan_find(sc, s, n, pos, &ms, &me, e)) <= 0) {
			if (rc < 0)
				return rc;
			break;
		}
		/* no empty match right after the previous match */
		if (ms == me && me == last) {
			if (pos >= n)
				break;
			pos += (size_t)char_len(s + pos);
			continue;
		}
		if (prev != ms && (rc = fn(ctx, prev, ms, 0, e)))
			return rc;
		if ((rc = fn(ctx, ms, me, 1, e)))
			return rc;
		prev = pos = last = me;
	}
	return prev != n ? fn(ctx, prev, n, 0, e) : 0;
}

/* The same for a character predicate: each matching character alone, the
 * runs between them whole. cp_want: that code point, or 0 for numerics. */
static int find_chars(const char *s, size_t n, unsigned cp_want, seg_fn fn, void *ctx, lora_err *e)
{
	size_t last = 0;
	int rc;
	if (!n)
		return fn(ctx, 0, 0, 0, e);
	for (size_t i = 0; i < n;) {
		unsigned cp;
		int len = lora_utf8_decode(s + i, &cp);
		if (cp_want ? cp == cp_want : lora_unicode_is_numeric(cp)) {
			if (last < i && (rc = fn(ctx, last, i, 0, e)))
				return rc;
			if ((rc = fn(ctx, i, i + (size_t)len, 1, e)))
				return rc;
			last = i + (size_t)len;
		}
		i += (size_t)len;
	}
	return last < n ? fn(ctx, last, n, 0, e) : 0;
}

/* ---- encoding: pre-tokenizers ---- */

static int pretok(lora_tokenizer *t, int L, const char *s, size_t n, int first, lora_err *e);

/* A split in progress: the behavior applied to segments as they come. */
typedef struct {
	lora_tokenizer *t;
	int L, first, behavior, invert, map;
	const char *s;
	int pending, prev_match;
	size_t pa, pb;
} splitter;

/* A piece of the split goes on to the next pre-tokenizer (empty ones are
 * dropped, as the library drops them); ByteLevel maps its bytes first. */
static int piece(splitter *sp, size_t a, size_t b, lora_err *e)
{
	lora_tokenizer *t = sp->t;
	if (a == b)
		return 0;
	if (!sp->map)
		return pretok(t, sp->L + 1, sp->s + a, b - a, sp->first && a == 0, e);
	level *lv = &t->lv[sp->L];
	if (lora_shape_grow(&lv->b, &lv->bcap, 2 * (b - a), 1))
		return lora_err_nomem(e);
	size_t m = 0;
	for (size_t i = a; i < b; i++)
		m += (size_t)lora_utf8_encode(lv->b + m, t->bchar[(unsigned char)sp->s[i]]);
	return pretok(t, sp->L + 1, lv->b, m, sp->first && a == 0, e);
}

static int split_seg(void *ctx, size_t a, size_t b, int match, lora_err *e)
{
	splitter *sp = ctx;
	int rc = 0;
	match ^= sp->invert;
	switch (sp->behavior) {
	case B_ISOLATED:
		return piece(sp, a, b, e);
	case B_REMOVED:
		return match ? 0 : piece(sp, a, b, e);
	case B_CONTIGUOUS:
	case B_MERGED_PREV:
		if (sp->pending && (sp->behavior == B_CONTIGUOUS ? match == sp->prev_match : match && !sp->prev_match)) {
			sp->pb = b;
		} else {
			if (sp->pending)
				rc = piece(sp, sp->pa, sp->pb, e);
			sp->pending = 1;
			sp->pa = a;
			sp->pb = b;
		}
		sp->prev_match = match;
		return rc;
	default: /* B_MERGED_NEXT: a match takes the gap after it */
		if (sp->pending && !match) {
			sp->pending = 0;
			return piece(sp, sp->pa, b, e);
		}
		if (sp->pending)
			rc = piece(sp, sp->pa, sp->pb, e);
		sp->pending = match;
		sp->pa = a;
		sp->pb = b;
		return rc || match ? rc : piece(sp, a, b, e);
	}
}

static int split_end(splitter *sp, int rc, lora_err *e)
{
	if (!rc && sp->pending)
		rc = piece(sp, sp->pa, sp->pb, e);
	return rc;
}

static int pre_bytelevel(lora_tokenizer *t, int L, const char *s, size_t n, int first, lora_err *e)
{
	const step *st = &t->pres[L];
	level *lv = &t->lv[L];
	splitter sp = {t, L, first, B_ISOLATED, 0, 1, s, 0, 0, 0, 0};
	if (st->flag && s[0] != ' ') {
		if (lora_shape_grow(&lv->a, &lv->acap, n + 1, 1))
			return lora_err_nomem(e);
		lv->a[0] = ' ';
		memcpy(lv->a + 1, s, n);
		sp.s = lv->a;
		n++;
	}
	if (!st->flag2)
		return piece(&sp, 0, n, e);
	return find_matches(&st->p, lv->scan, sp.s, n, split_seg, &sp, e);
}

static int pre_metaspace(lora_tokenizer *t, int L, const char *s, size_t n, int first, lora_err *e)
{
	const step *st = &t->pres[L];
	level *lv = &t->lv[L];
	size_t r = st->strn, m = 0, spaces = 0;
	for (size_t i = 0; i < n; i++)
		spaces += s[i] == ' ';
	if (lora_shape_grow(&lv->a, &lv->acap, n + (spaces + 1) * r, 1))
		return lora_err_nomem(e);
	int starts = n >= r && !memcmp(s, st->str, r);
	if (!(s[0] == ' ' || starts) && (st->scheme == S_ALWAYS || (st->scheme == S_FIRST && first))) {
		memcpy(lv->a, st->str, r);
		m = r;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ') {
			memcpy(lv->a + m, st->str, r);
			m += r;
		} else {
			lv->a[m++] = s[i];
		}
	}
	splitter sp = {t, L, first, B_MERGED_NEXT, 0, 0, lv->a, 0, 0, 0, 0};
	if (!st->flag)
		return piece(&sp, 0, m, e);
	unsigned cp;
	lora_utf8_decode(st->str, &cp);
	return split_end(&sp, find_chars(lv->a, m, cp, split_seg, &sp, e), e);
}

static int model(lora_tokenizer *t, const char *s, size_t n, lora_err *e);

/* Piece s[0..n) (not empty) through pre-tokenizers L.., then the model.
 * first: the piece starts the original text (Metaspace's "first"). */
static int pretok(lora_tokenizer *t, int L, const char *s, size_t n, int first, lora_err *e)
{
	if (L == t->npre)
		return model(t, s, n, e);
	const step *st = &t->pres[L];
	splitter sp = {t, L, first, st->behavior, st->flag, 0, s, 0, 0, 0, 0};
	switch (st->type) {
	case P_BYTELEVEL:
		return pre_bytelevel(t, L, s, n, first, e);
	case P_METASPACE:
		return pre_metaspace(t, L, s, n, first, e);
	case P_SPLIT:
		return split_end(&sp, find_matches(&st->p, t->lv[L].scan, s, n, split_seg, &sp, e), e);
	default: /* P_DIGITS */
		sp.behavior = st->flag ? B_ISOLATED : B_CONTIGUOUS;
		sp.invert = 0;
		return split_end(&sp, find_chars(s, n, 0, split_seg, &sp, e), e);
	}
}

/* ---- encoding: the BPE model ---- */

static int push(lora_tokenizer *t, uint32_t id, lora_err *e)
{
	return lora_tokenizer_ids_push(t->out, id) ? lora_err_nomem(e) : 0;
}

static int add_sym(lora_tokenizer *t, size_t *ns, uint32_t c, lora_err *e)
{
	if (lora_shape_grow(&t->sy, &t->symcap, *ns + 1, sizeof *t->sy))
		return lora_err_nomem(e);
	t->sy[*ns] = (sym){c, (int32_t)*ns - 1, (int32_t)*ns + 1, 0};
	++*ns;
	return 0;
}

/* The word's characters as symbols, as the library's merge_word: a
 * character without a token becomes its <0xXX> byte tokens (byte_fallback)
 * or the unknown token (consecutive ones fused with fuse_unk), else it is
 * dropped. */
static int word_symbols(lora_tokenizer *t, const char *s, size_t n, size_t *ns, lora_err *e)
{
	int unk = 0, rc = 0;
	*ns = 0;
	for (size_t i = 0; i < n && !rc;) {
		unsigned cp;
		size_t len = (size_t)lora_utf8_decode(s + i, &cp);
		int64_t id = cp < 0x10000 ? t->char_id[cp] : vocab_get(t, s + i, len);
		if (id >= 0) {
			if (unk)
				rc = add_sym(t, ns, (uint32_t)t->unk, e);
			unk = 0;
			if (!rc)
				rc = add_sym(t, ns, (uint32_t)id, e);
		} else {
			int bytes = t->byte_fallback;
			for (size_t k = 0; k < len && bytes; k++)
				bytes = t->byte_id[(unsigned char)s[i + k]] >= 0;
			if (bytes) {
				/* the library adds these before a pending unknown token */
				for (size_t k = 0; k < len && !rc; k++)
					rc = add_sym(t, ns, (uint32_t)t->byte_id[(unsigned char)s[i + k]], e);
			} else if (t->unk >= 0) {
				if (unk && !t->fuse_unk)
					rc = add_sym(t, ns, (uint32_t)t->unk, e);
				unk = 1;
			}
		}
		i += len;
	}
	if (!rc && unk)
		rc = add_sym(t, ns, (uint32_t)t->unk, e);
	if (*ns)
		t->sy[*ns - 1].next = -1;
	return rc;
}

static int qless(const qitem *a, const qitem *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void qpush(qitem *q, size_t *nq, qitem x)
{
	size_t i = (*nq)++;
	while (i && qless(&x, &q[(i - 1) / 2])) {
		q[i] = q[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	q[i] = x;
}

static qitem qpop(qitem *q, size_t *nq)
{
	qitem top = q[0], x = q[--*nq];
	size_t i = 0, n = *nq;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && qless(&q[c + 1], &q[c]))
			c++;
		if (!qless(&q[c], &x))
			break;
		q[i] = q[c];
		i = c;
	}
	if (n)
		q[i] = x;
	return top;
}

static void qpair(lora_tokenizer *t, size_t *nq, int32_t pos)
{
	int32_t next = t->sy[pos].next;
	const merge *m = next >= 0 ? merge_get(t, t->sy[pos].c, t->sy[next].c) : NULL;
	if (m)
		qpush(t->q, nq, (qitem){m->rank, (uint32_t)pos, m->id});
}

/* Merge the lowest-ranked pair, leftmost first, until none is left: the
 * library's priority queue, stale entries skipped the way it skips them. */
static int merge_all(lora_tokenizer *t, size_t ns, lora_err *e)
{
	size_t nq = 0;
	if (ns < 2)
		return 0;
	qitem *q = realloc(t->q, 3 * ns * sizeof *q);
	if (!q)
		return lora_err_nomem(e);
	t->q = q;
	for (size_t i = 0; i + 1 < ns; i++)
		qpair(t, &nq, (int32_t)i);
	while (nq) {
		qitem top = qpop(t->q, &nq);
		sym *a = &t->sy[top.pos];
		if (a->gone || a->next < 0)
			continue;
		sym *b = &t->sy[a->next];
		const merge *m = merge_get(t, a->c, b->c);
		if (!m || m->id != top.id)
			continue;
		a->c = top.id;
		b->gone = 1;
		a->next = b->next;
		if (b->next >= 0)
			t->sy[b->next].prev = (int32_t)top.pos;
		if (a->prev >= 0)
			qpair(t, &nq, a->prev);
		qpair(t, &nq, (int32_t)top.pos);
	}
	return 0;
}

/* Cache entries: word length, id count, the word (padded to 4), ids. */
static const uint32_t *cache_get(const lora_tokenizer *t, const char *s, size_t n, uint64_t h, uint32_t *nid)
{
	if (!t->cslot)
		return NULL;
	for (size_t i = h & t->cmask;; i = (i + 1) & t->cmask) {
		uint32_t k = t->cslot[i];
		if (!k)
			return NULL;
		const uint32_t *ent = (const uint32_t *)(t->carena + k - 1);
		if (ent[0] == n && !memcmp(ent + 2, s, n)) {
			*nid = ent[1];
			return ent + 2 + (n + 3) / 4;
		}
	}
}

static void cache_put(lora_tokenizer *t, const char *s, size_t n, uint64_t h, const uint32_t *ids, size_t nid)
{
	size_t need = 4 * (2 + (n + 3) / 4 + nid);
	if (!t->cslot) {
		t->cmask = (1u << 18) - 1;
		if (!(t->cslot = calloc(t->cmask + 1, sizeof *t->cslot)))
			return;
	}
	if (t->ccount >= (t->cmask + 1) / 2 || t->cused + need > CACHE_BYTES) {
		memset(t->cslot, 0, (t->cmask + 1) * sizeof *t->cslot);
		t->ccount = t->cused = 0;
	}
	if (lora_shape_grow(&t->carena, &t->ccap, t->cused + need, 1))
		return; /* a cache that cannot grow only costs time */
	uint32_t *ent = (uint32_t *)(t->carena + t->cused);
	ent[0] = (uint32_t)n;
	ent[1] = (uint32_t)nid;
	if (n % 4)
		ent[2 + n / 4] = 0;
	memcpy(ent + 2, s, n);
	memcpy(ent + 2 + (n + 3) / 4, ids, nid * sizeof *ids);
	size_t i = h & t->cmask;
	while (t->cslot[i])
		i = (i + 1) & t->cmask;
	t->cslot[i] = (uint32_t)t->cused + 1;
	t->cused += need;
	t->ccount++;
}

static int word(lora_tokenizer *t, const char *s, size_t n, lora_err *e)
{
	int64_t whole = t->ignore_merges ? vocab_get(t, s, n) : -1;
	if (whole >= 0)
		return push(t, (uint32_t)whole, e);
	uint64_t h = hash_bytes(s, n);
	uint32_t nc;
	const uint32_t *hit = cache_get(t, s, n, h, &nc);
	if (hit) {
		if (lora_shape_grow(&t->out->id, &t->out->cap, t->out->n + nc, sizeof *t->out->id))
			return lora_err_nomem(e);
		memcpy(t->out->id + t->out->n, hit, nc * sizeof *hit);
		t->out->n += nc;
		return 0;
	}
	size_t ns, first = t->out->n;
	int rc = word_symbols(t, s, n, &ns, e);
	if (!rc)
		rc = merge_all(t, ns, e);
	for (size_t i = 0; i < ns && !rc; i++)
		if (!t->sy[i].gone)
			rc = push(t, t->sy[i].c, e);
	/* a word that gave no ids is not cached: the id array may not exist yet */
	if (!rc && n < CACHE_WORD && t->out->n > first)
		cache_put(t, s, n, h, t->out->id + first, t->out->n - first);
	return rc;
}

/* ---- encoding: normalizers and added tokens ---- */

/* Text being rebuilt by a Replace (normalizer or decoder). */
typedef struct {
	const char *s, *with;
	size_t withn;
	char *out;
	size_t n, cap;
} replacing;

static int replace_seg(void *ctx, size_t a, size_t b, int match, lora_err *e)
{
	replacing *r = ctx;
	const char *src = match ? r->with : r->s + a;
	size_t len = match ? r->withn : b - a;
	if (lora_shape_grow(&r->out, &r->cap, r->n + len + 1, 1))
		return lora_err_nomem(e);
	if (len)
		memcpy(r->out + r->n, src, len);
	r->n += len;
	r->out[r->n] = 0;
	return 0;
}

static int is_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] & 0x80)
			return 0;
	return 1;
}

/* s[0..n) through the normalizers; *out is s or a scratch buffer of t. */
static int normalize(lora_tokenizer *t, const char *s, size_t n, const char **out, size_t *outn, lora_err *e)
{
	int cur = 0, rc = 0;
	for (int i = 0; i < t->nnorm && !rc; i++) {
		const step *st = &t->norms[i];
		replacing r = {s, st->str, st->strn, t->nbuf[cur], 0, t->ncap[cur]};
		if (st->type <= N_NFKD) {
			static const int form[] = {LORA_UNICODE_NFC, LORA_UNICODE_NFD, LORA_UNICODE_NFKC, LORA_UNICODE_NFKD};
			char *d;
			size_t dn;
			if (is_ascii(s, n)) /* every normal form of ASCII is itself */
				continue;
			if ((rc = lora_unicode_normalize(s, n, form[st->type], &d, &dn, e)))
				break;
			rc = replace_seg(&r, 0, 0, 1, e);
			r.s = d;
			rc = rc ? rc : replace_seg(&r, 0, dn, 0, e);
			free(d);
		} else if (st->type == N_PREPEND) {
			if (!n)
				continue;
			rc = replace_seg(&r, 0, 0, 1, e);
			rc = rc ? rc : replace_seg(&r, 0, n, 0, e);
		} else {
			rc = find_matches(&st->p, t->norm_scan[i], s, n, replace_seg, &r, e);
		}
		t->nbuf[cur] = r.out;
		t->ncap[cur] = r.cap;
		s = r.out;
		n = r.n;
		cur ^= 1;
	}
	*out = s;
	*outn = n;
	return rc;
}

/* Where the character before s[i] starts (i > 0). */
static size_t prev_char(const char *s, size_t i)
{
	do
		i--;
	while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80);
	return i;
}

/* Rust's regex \w at the end of s[0..n) / at the start of s[0..n). */
static int ends_with_word(const char *s, size_t n)
{
	unsigned cp;
	return n && (lora_utf8_decode(s + prev_char(s, n), &cp), lora_unicode_is_word(cp));
}

static int starts_with_word(const char *s, size_t n)
{
	unsigned cp;
	return n && (lora_utf8_decode(s, &cp), lora_unicode_is_word(cp));
}

/* Whether the text's bytes [b, e) meet a literal range. */
static int literal(const lora_tokenizer *t, size_t b, size_t e)
{
	for (size_t k = 0; k < t->nlit; k++)
		if (b < t->lit[2 * k + 1] && e > t->lit[2 * k])
			return 1;
	return 0;
}

/* The leftmost, then longest, added token of set in s[from..n), or -1; a
 * special one is passed over where it meets a literal range: in the first
 * stage by its own bytes, in the second (the normalized text of a gap,
 * whose bytes no longer map back) by the whole gap's. */
static int64_t find_added(const lora_tokenizer *t, const addset *set, const char *s, size_t n, size_t from,
                          size_t *at)
{
	if (!set->at[256])
		return -1;
	int raw = set == &t->raw;
	for (size_t i = from; i < n; i++) {
		unsigned b = (unsigned char)s[i];
		for (uint32_t k = set->at[b]; k < set->at[b + 1]; k++) {
			const added *a = &t->added[set->idx[k]];
			if (a->special && t->nlit &&
			    (raw ? literal(t, (size_t)(s - t->text) + i, (size_t)(s - t->text) + i + a->patn)
			         : literal(t, t->gap_b, t->gap_e)))
				continue;
			if (a->patn <= n - i && !memcmp(s + i, a->pat, a->patn)) {
				*at = i;
				return set->idx[k];
			}
		}
	}
	return -1;
}

static int gap(lora_tokenizer *t, int stage, const char *s, size_t n, int first, lora_err *e);

/* The library's AddedVocabulary::find_matches over s[0..n): each added
 * token a piece of its own (grown by lstrip and rstrip over white space,
 * skipped by single_word inside a word), the gaps go on to stage 1 (the
 * normalizer) or 2 (the pre-tokenizers). */
static int split_added(lora_tokenizer *t, int stage, const char *s, size_t n, int first, lora_err *e)
{
	const addset *set = stage == 1 ? &t->raw : &t->norm;
	size_t start_off = 0, pos = 0, start;
	int64_t k;
	int rc;
	while ((k = find_added(t, set, s, n, pos, &start)) >= 0) {
		const added *a = &t->added[k];
		size_t stop = start + a->patn;
		unsigned cp;
		pos = stop;
		if (a->single_word && ((start && ends_with_word(s, start)) || (stop < n && starts_with_word(s + stop, n - stop))))
			continue;
		if (a->lstrip) {
			size_t i = start;
			while (i > 0 && (lora_utf8_decode(s + prev_char(s, i), &cp), lora_unicode_is_space(cp)))
				i = prev_char(s, i);
			start = i > start_off ? i : start_off;
		}
		while (a->rstrip && stop < n) {
			int len = lora_utf8_decode(s + stop, &cp);
			if (!lora_unicode_is_space(cp))
				break;
			stop += (size_t)len;
		}
		if (start_off < start && (rc = gap(t, stage, s + start_off, start - start_off, first && !start_off, e)))
			return rc;
		if ((rc = push(t, a->id, e)))
			return rc;
		start_off = stop;
	}
	return start_off < n ? gap(t, stage, s + start_off, n - start_off, first && !start_off, e) : 0;
}

static int gap(lora_tokenizer *t, int stage, const char *s, size_t n, int first, lora_err *e)
{
	if (stage == 2)
		return pretok(t, 0, s, n, first, e);
	const char *ns;
	size_t nn;
	t->gap_b = (size_t)(s - t->text), t->gap_e = t->gap_b + n;
	int rc = normalize(t, s, n, &ns, &nn, e);
	if (rc || !nn)
		return rc;
	/* stage 2 runs before the next normalize call reuses the buffer */
	return split_added(t, 2, ns, nn, first, e);
}

void lora_tokenizer_literal(lora_tokenizer *t, const size_t *ranges, size_t n) { t->lit = ranges, t->nlit = n; }

int lora_tokenizer_encode(lora_tokenizer *t, const char *text, size_t n, int add_special, lora_tokenizer_ids *ids,
                          lora_err *e)
{
	size_t bad = lora_utf8_bad(text, n);
	if (bad < n)
		return lora_err_set(e, LORA_EINVAL, "text is not valid UTF-8 at byte %zu", bad);
	int rc = 0;
	t->out = ids;
	t->text = text;
	for (size_t i = 0; add_special && i < t->nprefix && !rc; i++)
		rc = push(t, t->prefix[i], e);
	if (!rc)
		rc = split_added(t, 1, text, n, 1, e);
	for (size_t i = 0; add_special && i < t->nsuffix && !rc; i++)
		rc = push(t, t->suffix[i], e);
	t->out = NULL;
	return rc;
}

/* ---- decoding ---- */

typedef struct {
	char *s;
	size_t n;
} str;

typedef struct {
	str *v;
	size_t n, cap;
} strs;

static void strs_free(strs *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].s);
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* The next string of a list being built: out->v[out->n - 1], empty. */
static str *strs_new(strs *l)
{
	if (lora_shape_grow(&l->v, &l->cap, l->n + 1, sizeof *l->v))
		return NULL;
	str *s = &l->v[l->n];
	if (!(s->s = malloc(16)))
		return NULL;
	s->s[0] = 0;
	s->n = 0;
	l->n++;
	return s;
}

/* Append to a string of a list; its capacity is kept a power of two. */
static int str_add(str *s, const char *p, size_t n)
{
	size_t cap = 16;
	while (cap <= s->n)
		cap *= 2;
	if (s->n + n + 1 > cap) {
		while (cap < s->n + n + 1)
			cap *= 2;
		char *q = realloc(s->s, cap);
		if (!q)
			return -1;
		s->s = q;
	}
	memcpy(s->s + s->n, p, n);
	s->n += n;
	s->s[s->n] = 0;
	return 0;
}

/* b[0..n) appended with each ill-formed part replaced by U+FFFD, as Rust's
 * String::from_utf8_lossy does (one per maximal subpart). */
static int add_lossy(str *out, const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = b[i], lo = 0x80, hi = 0xbf;
		size_t need = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
		if (c < 0x80) {
			if (str_add(out, (const char *)b + i++, 1))
				return -1;
			continue;
		}
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		else if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		size_t j = i + 1;
		if (need && j < n && b[j] >= lo && b[j] <= hi) {
			j++;
			while (j < n && j - i <= need && b[j] >= 0x80 && b[j] <= 0xbf)
				j++;
		}
		if (need && j - i == need + 1 ? str_add(out, (const char *)b + i, need + 1) : str_add(out, "\xef\xbf\xbd", 3))
			return -1;
		i = j;
	}
	return 0;
}

static int dec_bytelevel(const lora_tokenizer *t, strs *in, strs *out)
{
	str *o = strs_new(out);
	unsigned char *buf = NULL;
	size_t n = 0, cap = 0;
	int rc = o ? 0 : -1;
	for (size_t k = 0; k < in->n && !rc; k++) {
		const str *s = &in->v[k];
		size_t m = n;
		if (lora_shape_grow(&buf, &cap, n + s->n + 1, 1)) {
			rc = -1;
			break;
		}
		for (size_t i = 0; i < s->n;) {
			unsigned cp;
			i += (size_t)lora_utf8_decode(s->s + i, &cp);
			if (cp >= 324 || t->cbyte[cp] < 0) { /* not all mapped: the token's own bytes */
				memcpy(buf + n, s->s, s->n);
				m = n + s->n;
				break;
			}
			buf[m++] = (unsigned char)t->cbyte[cp];
		}
		n = m;
	}
	if (!rc)
		rc = add_lossy(o, buf, n);
	free(buf);
	return rc;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A run of byte tokens as one string if it is UTF-8, else one U+FFFD a byte. */
static int flush_bytes(strs *out, const unsigned char *bytes, size_t nb)
{
	str *o;
	if (lora_utf8_bad(bytes, nb) == nb)
		return !(o = strs_new(out)) || str_add(o, (const char *)bytes, nb) ? -1 : 0;
	for (size_t i = 0; i < nb; i++)
		if (!(o = strs_new(out)) || str_add(o, "\xef\xbf\xbd", 3))
			return -1;
	return 0;
}

static int dec_bytefallback(strs *in, strs *out)
{
	unsigned char *bytes = NULL;
	size_t nb = 0, cap = 0;
	int rc = 0;
	for (size_t k = 0; k < in->n && !rc; k++) {
		const str *s = &in->v[k];
		/* the library's u8::from_str_radix also takes a '+' sign */
		int byte = -1;
		if (s->n == 6 && !memcmp(s->s, "<0x", 3) && s->s[5] == '>') {
			int h = s->s[3] == '+' ? 0 : hexval(s->s[3]), l = hexval(s->s[4]);
			byte = h >= 0 && l >= 0 ? h * 16 + l : -1;
		}
		if (byte >= 0) {
			if (lora_shape_grow(&bytes, &cap, nb + 1, 1))
				rc = -1;
			else
				bytes[nb++] = (unsigned char)byte;
			continue;
		}
		if (nb)
			rc = flush_bytes(out, bytes, nb);
		nb = 0;
		str *o;
		if (!rc && (!(o = strs_new(out)) || str_add(o, s->s, s->n)))
			rc = -1;
	}
	if (!rc && nb)
		rc = flush_bytes(out, bytes, nb);
	free(bytes);
	return rc;
}

/* Strip: up to start copies of the character at the front, stop at the
 * back, of each token. */
static int dec_strip(const step *st, const str *s, str *o)
{
	size_t a = 0, b = s->n, c = st->strn;
	for (size_t i = 0; i < st->start && a + c <= b && !memcmp(s->s + a, st->str, c); i++)
		a += c;
	for (size_t i = 0; i < st->stop && b >= a + c && !memcmp(s->s + b - c, st->str, c); i++)
		b -= c;
	return str_add(o, s->s + a, b - a);
}

/* Metaspace: the replacement back to a space, dropped in the first token
 * unless the scheme is "never" (all of them there, as the library does). */
static int dec_metaspace(const step *st, const str *s, size_t k, str *o)
{
	for (size_t i = 0; i < s->n;) {
		if (s->n - i >= st->strn && !memcmp(s->s + i, st->str, st->strn)) {
			if (!(k == 0 && st->scheme != S_NEVER) && str_add(o, " ", 1))
				return -1;
			i += st->strn;
		} else {
			if (str_add(o, s->s + i, 1))
				return -1;
			i++;
		}
	}
	return 0;
}

static int dec_step(const lora_tokenizer *t, const step *st, strs *in, strs *out, lora_err *e)
{
	if (st->type == D_BYTELEVEL)
		return dec_bytelevel(t, in, out) ? lora_err_nomem(e) : 0;
	if (st->type == D_BYTEFALLBACK)
		return dec_bytefallback(in, out) ? lora_err_nomem(e) : 0;
	lora_pattern_scan *sc = NULL;
	str *fused = NULL;
	int rc = st->p.re ? lora_pattern_scan_new(&sc, st->p.re, e) : 0;
	for (size_t k = 0; k < in->n && !rc; k++) {
		const str *s = &in->v[k];
		str *o = st->type == D_FUSE && fused ? fused : strs_new(out);
		if (!o) {
			rc = lora_err_nomem(e);
			break;
		}
		if (st->type == D_FUSE) {
			fused = o;
			rc = str_add(o, s->s, s->n) ? lora_err_nomem(e) : 0;
		} else if (st->type == D_STRIP) {
			rc = dec_strip(st, s, o) ? lora_err_nomem(e) : 0;
		} else if (st->type == D_METASPACE) {
			rc = dec_metaspace(st, s, k, o) ? lora_err_nomem(e) : 0;
		} else { /* D_REPLACE */
			replacing r = {s->s, st->str, st->strn, NULL, 0, 0};
			rc = find_matches(&st->p, sc, s->s, s->n, replace_seg, &r, e);
			if (!rc && r.n && str_add(o, r.out, r.n))
				rc = lora_err_nomem(e);
			free(r.out);
		}
	}
	if (!rc && st->type == D_FUSE && !fused && !strs_new(out))
		rc = lora_err_nomem(e);
	lora_pattern_scan_free(sc);
	return rc;
}

int lora_tokenizer_decode(const lora_tokenizer *t, const uint32_t *ids, size_t n, int skip_special, char **out,
                          size_t *len, lora_err *e)
{
	strs a = {0}, b = {0};
	str joined = {0};
	int rc = 0;
	*out = NULL;
	*len = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		uint32_t id = ids[i];
		int32_t k = id < t->nid ? t->added_of[id] : -1;
		const added *ad = k >= 0 ? &t->added[k] : NULL;
		const char *s = ad ? (ad->normalized ? ad->pat : ad->s) : id < t->nid ? t->tok[id] : NULL;
		size_t sn = ad ? (ad->normalized ? ad->patn : ad->n) : s ? t->tokn[id] : 0;
		str *o;
		if (!s)
			rc = lora_err_set(e, LORA_EINVAL, "%s: token id %u is not in the vocabulary", t->path, id);
		else if (skip_special && t->special[id])
			continue;
		else if (!(o = strs_new(&a)) || str_add(o, s, sn))
			rc = lora_err_nomem(e);
	}
	for (int i = 0; i < t->ndec && !rc; i++) {
		rc = dec_step(t, &t->decs[i], &a, &b, e);
		strs_free(&a);
		a = b;
		memset(&b, 0, sizeof b);
	}
	if (!rc && !(joined.s = calloc(1, 16)))
		rc = lora_err_nomem(e);
	/* without a decoder the library joins tokens with spaces */
	for (size_t i = 0; i < a.n && !rc; i++)
		if ((i && !t->has_decoder && str_add(&joined, " ", 1)) || str_add(&joined, a.v[i].s, a.v[i].n))
			rc = lora_err_nomem(e);
	strs_free(&a);
	strs_free(&b);
	if (rc) {
		free(joined.s);
		return rc;
	}
	*out = joined.s;
	*len = joined.n;
	return 0;
}

/* Without a pre-tokenizer (Llama 2, Mistral) the model gets the whole
 * text as one word. When no token has U+2581 after another character and
 * U+2581 is a token, no merge can join the characters on both sides of the
 * start of a run of U+2581, and no unknown token can fuse across it: the
 * BPE of the whole is the BPE of the parts cut there, which the cache
 * serves. (ignore_merges would look at the whole word: not cut then.) */
static int model(lora_tokenizer *t, const char *s, size_t n, lora_err *e)
{
	static const char meta[] = "\xe2\x96\x81";
	size_t a = 0, pos = 1;
	const char *p;
	int rc;
	if (!t->meta_split)
		return word(t, s, n, e);
	while (pos < n && (p = memmem(s + pos, n - pos, meta, 3))) {
		size_t i = (size_t)(p - s);
		pos = i + 3;
		if (i >= 3 && !memcmp(s + i - 3, meta, 3))
			continue;
		if ((rc = word(t, s + a, i - a, e)))
			return rc;
		a = i;
	}
	return word(t, s + a, n - a, e);
}

int lora_tokenizer_find(char **path, const char *model, const char *file, lora_err *e)
{
	struct stat sb;
	*path = NULL;
	if (file)
		return (*path = strdup(file)) ? 0 : lora_err_nomem(e);
	if (stat(model, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", model, strerror(errno));
	char *dir = S_ISDIR(sb.st_mode) ? strdup(model) : lora_path_dir(model);
	*path = dir ? lora_path_join(dir, "tokenizer.json") : NULL;
	free(dir);
	if (!*path)
		return lora_err_nomem(e);
	if (!lora_path_exists(*path)) {
		free(*path);
		*path = NULL;
		return lora_err_set(e, LORA_EIO, "%s: no tokenizer.json in the model directory (--tokenizer FILE names one)",
		                    model);
	}
	return 0;
}

/* How many ids before the printed text's end the decoding starts. */
#define STREAM_CONTEXT 5

int lora_tokenizer_stream_init(lora_tokenizer_stream *s, const lora_tokenizer *t, const uint32_t *ids, size_t n,
                               lora_err *e)
{
	*s = (lora_tokenizer_stream){.t = t};
	for (size_t i = 0; i < n; i++)
		if (lora_tokenizer_ids_push(&s->ids, ids[i]))
			return lora_err_nomem(e);
	s->read = n;
	s->prefix = n > STREAM_CONTEXT ? n - STREAM_CONTEXT : 0;
	return 0;
}

/* 1 if id is a <0xXX> token a ByteFallback decoder reads: a run of them
 * decodes as a whole (one string, or a U+FFFD per byte), so its text is
 * not known before the run ends. */
static int byte_token(const lora_tokenizer *t, uint32_t id)
{
	int fallback = 0;
	for (int i = 0; i < t->ndec; i++)
		fallback |= t->decs[i].type == D_BYTEFALLBACK;
	const char *s = id < t->nid && (t->added_of[id] < 0) ? t->tok[id] : NULL;
	return fallback && s && strlen(s) == 6 && !memcmp(s, "<0x", 3) && s[5] == '>';
}

/* The text of ids[prefix..read) and of ids[prefix..]; *piece the part of
 * the second past the first when final or when it is complete. */
static int stream_step(lora_tokenizer_stream *s, int final, const char **piece, size_t *n, lora_err *e)
{
	*piece = "", *n = 0;
	if (!final && s->ids.n && byte_token(s->t, s->ids.id[s->ids.n - 1]))
		return 0;
	char *old = NULL, *now = NULL;
	size_t nold = 0, nnow = 0;
	int rc = lora_tokenizer_decode(s->t, s->ids.id + s->prefix, s->read - s->prefix, 0, &old, &nold, e);
	if (!rc)
		rc = lora_tokenizer_decode(s->t, s->ids.id + s->prefix, s->ids.n - s->prefix, 0, &now, &nnow, e);
	if (!rc && nnow > nold && (final || nnow < 3 || memcmp(now + nnow - 3, "\xef\xbf\xbd", 3))) {
		/* the old text was given already: the new starts past its length
		 * (at a character's start, should a decoder have changed the old) */
		size_t k = nold;
		while (k < nnow && ((unsigned char)now[k] & 0xc0) == 0x80)
			k++;
		free(s->piece);
		s->piece = now;
		now = NULL;
		*piece = s->piece + k, *n = nnow - k;
		s->prefix = s->read;
		s->read = s->ids.n;
	}
	free(old);
	free(now);
	return rc;
}

int lora_tokenizer_stream_push(lora_tokenizer_stream *s, uint32_t id, const char **piece, size_t *n, lora_err *e)
{
	*piece = "", *n = 0;
	if (lora_tokenizer_ids_push(&s->ids, id))
		return lora_err_nomem(e);
	return stream_step(s, 0, piece, n, e);
}

int lora_tokenizer_stream_finish(lora_tokenizer_stream *s, const char **piece, size_t *n, lora_err *e)
{
	return stream_step(s, 1, piece, n, e);
}

void lora_tokenizer_stream_free(lora_tokenizer_stream *s)
{
	lora_tokenizer_ids_free(&s->ids);
	free(s->piece);
	s->piece = NULL;
}
