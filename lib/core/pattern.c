#include "core/pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Patterns are quoted in messages up to this many bytes. */
#define SHOWN 80

struct lora_pattern {
	pcre2_code *code;
	pcre2_match_context *mctx;
	char *label; /* "<what> '<re>'" */
	size_t size;
};

/* ---- Python spelling to PCRE2 spelling ---- */

/* The translated text and, for each of its bytes, the source byte it came
 * from (so PCRE2's error offsets can be told in the caller's terms). */
typedef struct {
	char *d;
	size_t *from;
	size_t n;
} text;

static void emit(text *t, const char *s, size_t len, size_t from)
{
	for (size_t i = 0; i < len; i++) {
		t->d[t->n] = s[i];
		t->from[t->n++] = from;
	}
}

/* Copy s[*i] unchanged and step past it. */
static void copy1(text *t, const char *s, size_t *i)
{
	emit(t, s + *i, 1, *i);
	++*i;
}

static int is_hex(const char *s, size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
			return 0;
	return 1;
}

static int is_letter(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The escape at s[i] (a backslash): its PCRE2 spelling into t, and the
 * number of source bytes it takes, or 0 with msg filled. Python refuses an
 * ASCII letter it does not know; other characters stand for themselves. */
static size_t escape(text *t, const char *s, size_t i, int in_class, char *msg, size_t cap)
{
	char c = s[i + 1], buf[16];
	size_t k = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
	if (k) {
		if (!is_hex(s + i + 2, k)) {
			snprintf(msg, cap, "incomplete escape \\%c", c);
			return 0;
		}
		if (c == 'x')
			emit(t, s + i, 4, i);
		else
			emit(t, buf, (size_t)snprintf(buf, sizeof buf, "\\x{%.*s}", (int)k, s + i + 2), i);
		return 2 + k;
	}
	if (c == 'N') {
		snprintf(msg, cap, "\\N{...} (a character by name) is not supported");
		return 0;
	}
	if (is_letter(c) && !strchr(in_class ? "bdDsSwWafnrtv" : "AbBdDsSwWZzafnrtv", c)) {
		snprintf(msg, cap, "bad escape \\%c", c);
		return 0;
	}
	if (c == 'Z')
		emit(t, "\\z", 2, i);
	else if (c == 'v')
		emit(t, "\\x0b", 4, i);
	else
		emit(t, s + i, c ? 2 : 1, i); /* a trailing backslash: PCRE2 says so */
	return c ? 2 : 1;
}

/* Rewrite the Python regex s[0..n) for PCRE2 (the table in pattern.h).
 * Returns 0, or -1 with msg filled and *at the offending source offset. */
static int translate(text *t, const char *s, size_t n, char *msg, size_t cap, size_t *at)
{
	int in_class = 0;
	for (size_t i = 0; i < n;) {
		char c = s[i];
		if (c == '\\') {
			size_t used = escape(t, s, i, in_class, msg, cap);
			if (!used) {
				*at = i;
				return -1;
			}
			i += used;
		} else if (in_class) {
			if (c == '[')
				emit(t, "\\", 1, i);
			in_class = c != ']';
			copy1(t, s, &i);
		} else if (c == '[') {
			/* '[', '^', then a ']' that is a member, not the end */
			copy1(t, s, &i);
			if (s[i] == '^')
				copy1(t, s, &i);
			if (s[i] == ']')
				copy1(t, s, &i);
			else if (s[i] == ':' || s[i] == '.' || s[i] == '=')
				emit(t, "\\", 1, i);
			in_class = 1;
		} else if (c == '{' && s[i + 1] == ',') {
			size_t j = i + 2;
			while (s[j] >= '0' && s[j] <= '9')
				j++;
			if (s[j] == '}')
				emit(t, "{0", 2, i);
			else
				emit(t, "{", 1, i);
			i++;
		} else if (c == '(' && s[i + 1] == '*') {
			snprintf(msg, cap, "nothing to repeat");
			*at = i + 1;
			return -1;
		} else if (c == '(' && s[i + 1] == '?' && s[i + 2] == '#') {
			/* a comment runs to the first ')' whatever it holds */
			const char *end = memchr(s + i, ')', n - i);
			size_t len = end ? (size_t)(end - (s + i)) + 1 : n - i;
			for (size_t k = 0; k < len; k++, i++)
				emit(t, s + i, 1, i);
		} else {
			if (c == '(' && s[i + 1] == '?') {
				size_t j = i + 2;
				int verbose = 0;
				while (s[j] && strchr("aiLmsux", s[j]))
					verbose |= s[j++] == 'x';
				if (verbose && (s[j] == ')' || s[j] == ':' || s[j] == '-')) {
					snprintf(msg, cap, "verbose mode (?x) is not supported");
					*at = i;
					return -1;
				}
			}
			copy1(t, s, &i);
		}
	}
	return 0;
}

/* ---- compiling and matching ---- */

/* How much of s to quote: all of it up to SHOWN bytes, else a head cut
 * on a character boundary (and followed by "..."). */
static size_t shown(const char *s, size_t n)
{
	if (n <= SHOWN)
		return n;
	size_t k = SHOWN - 16;
	while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
		k--;
	return k;
}

/* "<what> '<re>'", re shortened when long. */
static char *make_label(const char *what, const char *re)
{
	size_t n = strlen(re), show = shown(re, n);
	size_t len = strlen(what) + show + 8;
	char *s = malloc(len);
	if (s)
		snprintf(s, len, "%s '%.*s%s'", what, (int)show, re, show < n ? "..." : "");
	return s;
}

/* Why PCRE2 refused to compile: a bound, or a plain error (*bound = 0). */
static void compile_error(int code, char *msg, size_t cap, int *bound)
{
	*bound = 1;
	switch (code) {
	case PCRE2_ERROR_PATTERN_TOO_LARGE:
		snprintf(msg, cap, "its compiled form is over %u bytes", LORA_PATTERN_MAX_CODE);
		break;
	case PCRE2_ERROR_PARENTHESES_NEST_TOO_DEEP:
		snprintf(msg, cap, "groups nest deeper than %d", LORA_PATTERN_MAX_NEST);
		break;
	case PCRE2_ERROR_QUANTIFIER_TOO_BIG:
		snprintf(msg, cap, "a {m,n} bound is over 65535");
		break;
	case PCRE2_ERROR_PATTERN_TOO_COMPLICATED:
	case PCRE2_ERROR_TOO_MANY_CAPTURES:
	case PCRE2_ERROR_HEAP_FAILED:
		pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, cap);
		break;
	default:
		*bound = 0;
		pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, cap);
	}
}

/* Compile the translated text t; on error fill e about source offset *at. */
static int compile(lora_pattern *p, const text *t, int anchor, uint32_t extra, size_t before, size_t nre, lora_err *e)
{
	uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C | extra;
	if (anchor != LORA_PATTERN_SEARCH)
		opts |= PCRE2_ANCHORED;
	if (anchor == LORA_PATTERN_FULL)
		opts |= PCRE2_ENDANCHORED;
	pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
	if (!cc)
		return lora_err_nomem(e);
	pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
	pcre2_set_parens_nest_limit(cc, LORA_PATTERN_MAX_NEST);
	pcre2_set_max_pattern_length(cc, 2 * (size_t)LORA_PATTERN_MAX_LEN);
	int code, bound;
	PCRE2_SIZE off;
	p->code = pcre2_compile((PCRE2_SPTR)t->d, t->n, opts, &code, &off, cc);
	pcre2_compile_context_free(cc);
	char msg[256];
	if (!p->code) {
		if (code == PCRE2_ERROR_NOMEMORY)
			return lora_err_nomem(e);
		compile_error(code, msg, sizeof msg, &bound);
		if (bound)
			return lora_err_set(e, LORA_EINVAL, "%s is past the regular expression bounds: %s", p->label, msg);
		size_t at = off < t->n ? t->from[off] : before + nre;
		at = at < before ? 0 : at - before > nre ? nre : at - before;
		return lora_err_set(e, LORA_EINVAL, "%s is not a valid regular expression: %s at offset %zu", p->label,
		                    msg, at);
	}
	size_t size;
	pcre2_pattern_info(p->code, PCRE2_INFO_SIZE, &size);
	if (size > LORA_PATTERN_MAX_CODE)
		return lora_err_set(e, LORA_EINVAL,
		                    "%s is past the regular expression bounds: its compiled form is over %u bytes", p->label,
		                    LORA_PATTERN_MAX_CODE);
	if (!(p->mctx = pcre2_match_context_create(NULL)))
		return lora_err_nomem(e);
	pcre2_set_match_limit(p->mctx, LORA_PATTERN_MATCH_LIMIT);
	pcre2_set_depth_limit(p->mctx, LORA_PATTERN_DEPTH_LIMIT);
	pcre2_set_heap_limit(p->mctx, LORA_PATTERN_HEAP_LIMIT);
	p->size = sizeof *p + size + strlen(p->label) + 1 + 256; /* 256: the match context */
	return 0;
}

int lora_pattern_compile(lora_pattern **out, const char *before, const char *re, const char *after, int anchor,
                         const char *what, lora_err *e)
{
	size_t nb = before ? strlen(before) : 0, nr = strlen(re), na = after ? strlen(after) : 0, n = nb + nr + na;
	lora_pattern *p = calloc(1, sizeof *p);
	char *src = NULL, msg[128];
	text t = {0};
	int rc;
	*out = NULL;
	if (!p || !(p->label = make_label(what, re)))
		goto nomem;
	if (n > LORA_PATTERN_MAX_LEN) {
		rc = lora_err_set(e, LORA_EINVAL, "%s is past the regular expression bounds: over %u bytes long", p->label,
		                  LORA_PATTERN_MAX_LEN);
		goto out;
	}
	/* A rewrite at most doubles a byte (\v is \x0b, [ in a class \[). */
	src = malloc(n + 1);
	t.d = malloc(2 * n + 1);
	t.from = malloc((2 * n + 1) * sizeof *t.from);
	if (!src || !t.d || !t.from)
		goto nomem;
	snprintf(src, n + 1, "%s%s%s", before ? before : "", re, after ? after : "");
	size_t at;
	if (translate(&t, src, n, msg, sizeof msg, &at)) {
		at = at < nb ? 0 : at - nb > nr ? nr : at - nb;
		rc = lora_err_set(e, LORA_EINVAL, "%s is not a valid regular expression: %s at offset %zu", p->label, msg,
		                  at);
		goto out;
	}
	if ((rc = compile(p, &t, anchor, 0, nb, nr, e)))
		goto out;
	*out = p;
	p = NULL;
	goto out;
nomem:
	rc = lora_err_nomem(e);
out:
	lora_pattern_free(p);
	free(src);
	free(t.d);
	free(t.from);
	return rc;
}

/* Why matching stopped, for a message. */
static void match_error(int rc, char *why, size_t cap)
{
	switch (rc) {
	case PCRE2_ERROR_MATCHLIMIT:
		snprintf(why, cap, "over %d backtracking steps", LORA_PATTERN_MATCH_LIMIT);
		break;
	case PCRE2_ERROR_DEPTHLIMIT:
		snprintf(why, cap, "backtracking nested over %d deep", LORA_PATTERN_DEPTH_LIMIT);
		break;
	case PCRE2_ERROR_HEAPLIMIT:
	case PCRE2_ERROR_JIT_STACKLIMIT:
		snprintf(why, cap, "backtracking needed over %u MiB", LORA_PATTERN_HEAP_LIMIT >> 10);
		break;
	default:
		if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)
			snprintf(why, cap, "not valid UTF-8");
		else
			pcre2_get_error_message(rc, (PCRE2_UCHAR *)why, cap);
	}
}

int lora_pattern_group(const lora_pattern *p, const char *subject, int g, size_t *start, size_t *len, lora_err *e)
{
	/* Match data per call keeps a pattern usable from several threads; it
	 * holds PCRE2's backtracking frames, so it is freed right away. */
	pcre2_match_data *md = pcre2_match_data_create((uint32_t)g + 1, NULL);
	if (!md)
		return lora_err_nomem(e);
	int rc = pcre2_match(p->code, (PCRE2_SPTR)subject, PCRE2_ZERO_TERMINATED, 0, 0, md, p->mctx);
	if (rc >= 0 && g > 0) {
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		int set = rc == 0 || g < rc; /* rc 0: the vector was too small, which it is not */
		*start = set && ov[2 * g] != PCRE2_UNSET ? ov[2 * g] : SIZE_MAX;
		*len = *start == SIZE_MAX ? 0 : ov[2 * g + 1] - ov[2 * g];
	}
	pcre2_match_data_free(md);
	if (rc >= 0)
		return 1;
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	char why[160];
	size_t n = strlen(subject);
	size_t show = shown(subject, n);
	if (rc == PCRE2_ERROR_NOMEMORY)
		return lora_err_nomem(e);
	match_error(rc, why, sizeof why);
	return lora_err_set(e, LORA_EINVAL, "%s gave up on '%.*s%s': %s", p->label, (int)show, subject,
	                    show < n ? "..." : "", why);
}

int lora_pattern_match(const lora_pattern *p, const char *subject, lora_err *e)
{
	return lora_pattern_group(p, subject, 0, NULL, NULL, e);
}

/* ---- Oniguruma spelling to PCRE2 spelling ---- */

/* White_Space (lora_unicode_is_space) as members of a class. */
#define WHITE_SPACE "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

/* \p{NAME} or \P{NAME} at s[i] with NAME a general category (an optional
 * '^', then one or two letters): its length, or 0. */
static size_t category(const char *s, size_t i)
{
	if (s[i + 2] != '{')
		return 0;
	size_t j = i + 3 + (s[i + 3] == '^');
	if (!s[j] || !strchr("CLMNPSZ", s[j]))
		return 0;
	j += 1 + (s[j + 1] >= 'a' && s[j + 1] <= 'z');
	return s[j] == '}' ? j + 1 - i : 0;
}

static size_t escape_onig(text *t, const char *s, size_t i, int in_class, char *msg, size_t cap)
{
	char c = s[i + 1];
	if (c == 's' || (c == 'S' && !in_class)) {
		const char *w = c == 's' ? (in_class ? WHITE_SPACE : "[" WHITE_SPACE "]") : "[^" WHITE_SPACE "]";
		emit(t, w, strlen(w), i);
		return 2;
	}
	if (c == 'u' && is_hex(s + i + 2, 4)) {
		char buf[16];
		emit(t, buf, (size_t)snprintf(buf, sizeof buf, "\\x{%.4s}", s + i + 2), i);
		return 6;
	}
	if (c == 'v') {
		emit(t, "\\x0b", 4, i);
		return 2;
	}
	if (c == 'p' || c == 'P') {
		size_t len = category(s, i);
		if (!len) {
			snprintf(msg, cap, "\\%c{...} names no general category", c);
			return 0;
		}
		emit(t, s + i, len, i);
		return len;
	}
	if ((c >= '0' && c <= '9') || (is_letter(c) && !strchr(in_class ? "dDtnrfaex" : "dDtnrfaexAzZ", c))) {
		snprintf(msg, cap, "the escape \\%c is not supported", c);
		return 0;
	}
	emit(t, s + i, c ? 2 : 1, i);
	return c ? 2 : 1;
}

/* Rewrite the Oniguruma regex s[0..n) for PCRE2 (the table in pattern.h).
 * Returns 0, or -1 with msg filled and *at the offending source offset. */
static int translate_onig(text *t, const char *s, size_t n, char *msg, size_t cap, size_t *at)
{
	int in_class = 0;
	for (size_t i = 0; i < n;) {
		char c = s[i];
		*at = i;
		if (c == '\\') {
			size_t used = escape_onig(t, s, i, in_class, msg, cap);
			if (!used)
				return -1;
			i += used;
		} else if (in_class) {
			if (c == '[' || (c == '&' && s[i + 1] == '&')) {
				snprintf(msg, cap, "%s inside a class is not supported", c == '[' ? "'['" : "'&&'");
				return -1;
			}
			in_class = c != ']';
			copy1(t, s, &i);
		} else if (c == '[') {
			copy1(t, s, &i);
			if (s[i] == '^')
				copy1(t, s, &i);
			if (s[i] == ']')
				copy1(t, s, &i);
			in_class = 1;
		} else {
			if (c == '(' && s[i + 1] == '?') {
				size_t j = i + 2;
				while (s[j] && strchr("imx-", s[j])) {
					if (s[j] == 'm' || s[j] == 'x') {
						snprintf(msg, cap, "the inline flag %c is not supported", s[j]);
						return -1;
					}
					j++;
				}
			}
			copy1(t, s, &i);
		}
	}
	return 0;
}

int lora_pattern_compile_onig(lora_pattern **out, const char *re, const char *what, lora_err *e)
{
	size_t n = strlen(re), cap = n * (sizeof WHITE_SPACE + 3) + 1;
	lora_pattern *p = calloc(1, sizeof *p);
	text t = {0};
	char msg[128];
	size_t at;
	int rc;
	*out = NULL;
	if (!p || !(p->label = make_label(what, re)))
		goto nomem;
	if (n > LORA_PATTERN_MAX_LEN) {
		rc = lora_err_set(e, LORA_EINVAL, "%s is past the regular expression bounds: over %u bytes long", p->label,
		                  LORA_PATTERN_MAX_LEN);
		goto out;
	}
	t.d = malloc(cap);
	t.from = malloc(cap * sizeof *t.from);
	if (!t.d || !t.from)
		goto nomem;
	if (translate_onig(&t, re, n, msg, sizeof msg, &at)) {
		rc = lora_err_set(e, LORA_EINVAL, "%s is not a valid regular expression: %s at offset %zu", p->label, msg,
		                  at);
		goto out;
	}
	if ((rc = compile(p, &t, LORA_PATTERN_SEARCH, PCRE2_MULTILINE, 0, n, e)))
		goto out;
	/* JIT makes scanning gigabytes of text affordable; without it (a
	 * platform PCRE2 cannot JIT for) matching is only slower. */
	pcre2_jit_compile(p->code, PCRE2_JIT_COMPLETE);
	*out = p;
	p = NULL;
	goto out;
nomem:
	rc = lora_err_nomem(e);
out:
	lora_pattern_free(p);
	free(t.d);
	free(t.from);
	return rc;
}

struct lora_pattern_scan {
	const lora_pattern *p;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack *stack;
};

int lora_pattern_scan_new(lora_pattern_scan **out, const lora_pattern *p, lora_err *e)
{
	lora_pattern_scan *sc = calloc(1, sizeof *sc);
	*out = NULL;
	if (!sc || !(sc->md = pcre2_match_data_create_from_pattern(p->code, NULL)) ||
	    !(sc->mctx = pcre2_match_context_copy(p->mctx)) ||
	    !(sc->stack = pcre2_jit_stack_create(32u << 10, LORA_PATTERN_HEAP_LIMIT << 10, NULL))) {
		lora_pattern_scan_free(sc);
		return lora_err_nomem(e);
	}
	pcre2_jit_stack_assign(sc->mctx, NULL, sc->stack);
	sc->p = p;
	*out = sc;
	return 0;
}

int lora_pattern_scan_find(lora_pattern_scan *sc, const char *s, size_t n, size_t from, size_t *ms, size_t *me,
                           lora_err *e)
{
	int rc = pcre2_match(sc->p->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, sc->md, sc->mctx);
	if (rc >= 0) {
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
		*ms = ov[0];
		*me = ov[1];
		return 1;
	}
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc == PCRE2_ERROR_NOMEMORY)
		return lora_err_nomem(e);
	char why[160];
	size_t show = shown(s + from, n - from);
	match_error(rc, why, sizeof why);
	return lora_err_set(e, LORA_EINVAL, "%s gave up on '%.*s%s': %s", sc->p->label, (int)show, s + from,
	                    show < n - from ? "..." : "", why);
}

void lora_pattern_scan_free(lora_pattern_scan *sc)
{
	if (!sc)
		return;
	pcre2_match_data_free(sc->md);
	pcre2_match_context_free(sc->mctx);
	pcre2_jit_stack_free(sc->stack);
	free(sc);
}

size_t lora_pattern_size(const lora_pattern *p)
{
	return p ? p->size : 0;
}

void lora_pattern_free(lora_pattern *p)
{
	if (!p)
		return;
	pcre2_code_free(p->code);
	pcre2_match_context_free(p->mctx);
	free(p->label);
	free(p);
}
