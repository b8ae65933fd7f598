/* pattern: Python's re semantics through PCRE2, the rewrites and refusals
 * of core/pattern.h, error lines, and the compile and match bounds. The
 * expected answers are those of Python 3.11's re.search / re.match /
 * re.fullmatch on the same pattern and subject. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/pattern.h"

/* Compile re alone (before/after NULL) with the given anchor and match s:
 * 1, 0, or a negative code (e filled). */
static int run(int anchor, const char *re, const char *s, lora_err *e)
{
	lora_pattern *p;
	int rc = lora_pattern_compile(&p, NULL, re, NULL, anchor, "pattern", e);
	if (rc)
		return rc;
	rc = lora_pattern_match(p, s, e);
	lora_pattern_free(p);
	return rc;
}

/* The one error line compiling re gives (static buffer). */
static const char *compile_error(const char *before, const char *re, const char *after)
{
	static lora_err e;
	lora_pattern *p = NULL;
	e.msg[0] = 0;
	if (lora_pattern_compile(&p, before, re, after, LORA_PATTERN_FULL, "f.json: key", &e) != LORA_EINVAL)
		snprintf(e.msg, sizeof e.msg, "(compiled)");
	lora_pattern_free(p);
	return e.msg;
}

static char *repeat(const char *s, size_t n, const char *tail)
{
	size_t k = strlen(s), t = strlen(tail);
	char *r = malloc(k * n + t + 1);
	for (size_t i = 0; i < n; i++)
		memcpy(r + i * k, s, k);
	memcpy(r + k * n, tail, t + 1);
	return r;
}

enum { S = LORA_PATTERN_SEARCH, M = LORA_PATTERN_MATCH, F = LORA_PATTERN_FULL };

int main(void)
{
	lora_err e;
	static const struct {
		int anchor;
		const char *re, *s;
		int want;
	} py[] = {
		/* the three anchorings; fullmatch backtracks into alternatives */
		{F, "q_proj", "q_proj", 1},
		{F, "q_proj", "model.q_proj", 0},
		{S, "q_proj", "model.q_proj", 1},
		{M, "q_proj", "model.q_proj", 0},
		{F, "a|ab", "ab", 1},
		{M, "a|ab", "ab", 1},
		/* $ also before a final newline, \Z only at the end, '.' not \n */
		{F, "q_proj$", "q_proj\n", 0},
		{S, "q_proj$", "q_proj\n", 1},
		{S, "q_proj\\Z", "q_proj\n", 0},
		{S, "q_proj\\Z", "q_proj", 1},
		{F, "a\\Z", "a", 1},
		{F, ".*", "a\nb", 0},
		{S, "^b", "a\nb", 0},
		{S, "(?m)^b", "a\nb", 1},
		/* Unicode classes of str patterns */
		{F, "\\d+", "\xd9\xa3\xd9\xa4", 1},   /* ARABIC-INDIC digits 3, 4 */
		{F, "\\w+", "caf\xc3\xa9", 1},
		{F, "\\s", "\xe2\x80\x83", 1},        /* EM SPACE */
		{F, "\\bq", "q", 1},
		{S, "\\bproj", "q_proj", 0},
		/* \v is the vertical tab, in and out of classes */
		{F, "\\v", "\x0b", 1},
		{F, "\\v", "\n", 0},
		{F, "[\\v]", "\x0b", 1},
		/* code point escapes */
		{F, "\\u00e9\\U0001F600\\x41", "\xc3\xa9\xf0\x9f\x98\x80" "A", 1},
		/* {,n} and {,} are quantifiers; in a class, braces are members */
		{F, "a{,2}", "aa", 1},
		{F, "a{,2}", "aaa", 0},
		{F, "a{,}", "aaaa", 1},
		{F, "a{,2}", "a{,2}", 0},
		{F, "[{,2}]", ",", 1},
		/* no POSIX classes: [[:digit:]] is '[' or ':' ... followed by ']' */
		{F, "[[:digit:]]", "5", 0},
		{F, "[[:digit:]]", ":]", 1},
		{F, "[:a]", ":", 1},
		{F, "[.x]", ".", 1},
		{F, "[a[]", "[", 1},
		{F, "[]a]", "]", 1},
		{F, "[^]a]", "b", 1},
		/* groups, references, flags, comments */
		{F, "(?P<n>a)(?P=n)", "aa", 1},
		{F, "(a)\\1", "aa", 1},
		{F, "(?i)Q_PROJ", "q_proj", 1},
		{F, "(?#[)a", "a", 1},
		/* target_modules as people write it: the whole name must match */
		{F, "layers\\.\\d+\\.mlp\\..*", "model.layers.12.mlp.up_proj", 0},
		{F, ".*layers\\.\\d+\\.mlp\\..*", "model.layers.12.mlp.up_proj", 1},
	};
	for (size_t i = 0; i < sizeof py / sizeof *py; i++) {
		int got = run(py[i].anchor, py[i].re, py[i].s, &e);
		CHECK(got == py[i].want, "case %zu: '%s' on '%s': got %d, want %d (%s)", i, py[i].re, py[i].s, got,
		      py[i].want, got < 0 ? e.msg : "");
	}

	/* Text wrapped around the pattern is spliced in as text, as PEFT
	 * splices a key into (.*\.)?(KEY)$: a key's \1 is the outer group. */
	lora_pattern *p;
	CHECK(lora_pattern_compile(&p, "(.*\\.)?(", "q_proj", ")$", M, "key", &e) == 0, "%s", e.msg);
	CHECK(lora_pattern_match(p, "model.layers.0.q_proj", &e) == 1, "suffix after a dot");
	CHECK(lora_pattern_match(p, "model.layers.0.xq_proj", &e) == 0, "suffix not after a dot");
	CHECK(lora_pattern_match(p, "q_proj.lora", &e) == 0, "prefix");
	lora_pattern_free(p);
	CHECK(lora_pattern_compile(&p, "(.*\\.)?(", "a)|(b", ")$", M, "key", &e) == 0, "%s", e.msg);
	CHECK(lora_pattern_match(p, "xa", &e) == 0 && lora_pattern_match(p, "x.a", &e) == 1 &&
	      lora_pattern_match(p, "x.ab", &e) == 1 && lora_pattern_match(p, "bbb", &e) == 0 &&
	      lora_pattern_match(p, "b", &e) == 1,
	      "unbalanced key spliced as text");
	CHECK(lora_pattern_size(p) > 0 && lora_pattern_size(p) < 4096, "size %zu", lora_pattern_size(p));
	lora_pattern_free(p);

	/* refusals: one line, the pattern named, offsets counted in it */
	static const struct {
		const char *before, *re, *after, *want;
	} bad[] = {
		{NULL, "w(", NULL, "f.json: key 'w(' is not a valid regular expression: missing closing parenthesis at offset 2"},
		{"(.*\\.)?(", "w(", ")$",
		 "f.json: key 'w(' is not a valid regular expression: missing closing parenthesis at offset 2"},
		{"(.*\\.)?(", "a)b", ")$",
		 "f.json: key 'a)b' is not a valid regular expression: unmatched closing parenthesis at offset 3"},
		{NULL, "ab[c", NULL, "f.json: key 'ab[c' is not a valid regular expression: missing terminating ] for character "
		                     "class at offset 4"},
		{NULL, "q**", NULL, "f.json: key 'q**' is not a valid regular expression: quantifier does not follow a "
		                    "repeatable item at offset 2"},
		{NULL, "a\\p{L}", NULL, "f.json: key 'a\\p{L}' is not a valid regular expression: bad escape \\p at offset 1"},
		{NULL, "[\\Z]", NULL, "f.json: key '[\\Z]' is not a valid regular expression: bad escape \\Z at offset 1"},
		{NULL, "\\x4g", NULL, "f.json: key '\\x4g' is not a valid regular expression: incomplete escape \\x at offset 0"},
		{NULL, "\\N{DIGIT ONE}", NULL, "f.json: key '\\N{DIGIT ONE}' is not a valid regular expression: \\N{...} (a "
		                               "character by name) is not supported at offset 0"},
		{NULL, "(*LIMIT_MATCH=9)a", NULL,
		 "f.json: key '(*LIMIT_MATCH=9)a' is not a valid regular expression: nothing to repeat at offset 1"},
		{NULL, "a(?x: b)", NULL,
		 "f.json: key 'a(?x: b)' is not a valid regular expression: verbose mode (?x) is not supported at offset 1"},
		{NULL, "a{1,70000}", NULL,
		 "f.json: key 'a{1,70000}' is past the regular expression bounds: a {m,n} bound is over 65535"},
		{NULL, "((q{1,100}){1,100}){1,100}", NULL, "f.json: key '((q{1,100}){1,100}){1,100}' is past the regular "
		                                          "expression bounds: its compiled form is over 65536 bytes"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *got = compile_error(bad[i].before, bad[i].re, bad[i].after);
		CHECK(strcmp(got, bad[i].want) == 0, "refusal %zu:\n  got  %s\n  want %s", i, got, bad[i].want);
	}
	char *deep = repeat("(", 251, "a");
	CHECK(strcmp(compile_error(NULL, deep, NULL), "f.json: key '((((((((((((((((((((((((((((((((((((((((((((((((("
	                                              "(((((((((((((((...' is past the regular expression bounds: "
	                                              "groups nest deeper than 250") == 0,
	      "deep: %s", compile_error(NULL, deep, NULL));
	free(deep);
	/* a comment compiles to nothing: only the source length counts */
	char *longre = repeat("a", LORA_PATTERN_MAX_LEN - 4, "");
	CHECK(strcmp(compile_error("(?#", longre, ")"), "(compiled)") == 0, "at the length bound");
	CHECK(strcmp(compile_error("(?#a", longre, ")"), "f.json: key 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	                                                "aaaaaaaaaaaaaa...' is past the regular expression bounds: over "
	                                                "65536 bytes long") == 0,
	      "over the length bound: %s", compile_error("(?#a", longre, ")"));
	free(longre);

	/* Catastrophic backtracking stops at the match limit, and deep or
	 * memory-hungry backtracking at the depth and heap limits. */
	char *as = repeat("a", 40, "!"), *ab = repeat("ab", 60000, ""), *groups = repeat("()", 300, "(a|b)*c");
	CHECK(run(S, "(a+)+$", as, &e) == LORA_EINVAL &&
	      strcmp(e.msg, "pattern '(a+)+$' gave up on 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!': over 1000000 "
	                    "backtracking steps") == 0,
	      "match limit: %s", e.msg);
	CHECK(run(F, "(a|b)*c", ab, &e) == LORA_EINVAL &&
	      strcmp(e.msg, "pattern '(a|b)*c' gave up on 'abababababababababababababababababababababababababababababab"
	                    "abab...': backtracking nested over 100000 deep") == 0,
	      "depth limit: %s", e.msg);
	ab[20000] = 0;
	CHECK(run(F, groups, ab, &e) == LORA_EINVAL && strstr(e.msg, "': backtracking needed over 32 MiB"),
	      "heap limit: %s", e.msg);
	CHECK(run(F, "(a|b)*", ab, &e) == 1, "20000 characters of a group repeat are within the limits: %s", e.msg);
	free(as);
	free(ab);
	free(groups);

	/* a subject that is not UTF-8 is an error, not a silent miss */
	CHECK(run(S, "a", "\xff", &e) == LORA_EINVAL &&
	      strcmp(e.msg, "pattern 'a' gave up on '\xff': not valid UTF-8") == 0, "utf-8: %s", e.msg);

	/* a group's span, as PEFT's layer index: the lazy .*? takes the first
	 * number, and a group that took no part is Python's None */
	size_t at = 0, len = 0;
	CHECK(lora_pattern_compile(&p, NULL, ".*?\\.[^.]*\\.(\\d+)\\.", NULL, LORA_PATTERN_MATCH, "t", &e) == 0, "%s",
	      e.msg);
	CHECK(lora_pattern_group(p, "model.layers.12.experts.3.up", 1, &at, &len, &e) == 1 && at == 13 && len == 2,
	      "first number: %zu %zu", at, len);
	CHECK(lora_pattern_group(p, "layers.0.up", 1, &at, &len, &e) == 0, "no name part before the number");
	lora_pattern_free(p);
	CHECK(lora_pattern_compile(&p, NULL, "(x)?y|(z)", NULL, LORA_PATTERN_FULL, "t", &e) == 0, "%s", e.msg);
	CHECK(lora_pattern_group(p, "y", 1, &at, &len, &e) == 1 && at == SIZE_MAX && len == 0, "unset group");
	CHECK(lora_pattern_group(p, "z", 2, &at, &len, &e) == 1 && at == 0 && len == 1, "second group");
	CHECK(lora_pattern_group(p, "z", 1, &at, &len, &e) == 1 && at == SIZE_MAX, "first group unset");
	lora_pattern_free(p);
	DONE();
}
