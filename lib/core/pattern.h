/* pattern: Python regular expressions (the syntax and matching of Python's
 * `re` module on str patterns), compiled and matched by PCRE2 within fixed
 * bounds, so that a pattern read from a file or a command line costs
 * bounded time and memory. The only module that uses PCRE2.
 *
 * Every pattern is compiled with PCRE2_UTF and PCRE2_UCP (Python's str
 * patterns are Unicode: \d is any Nd digit, \w and \b follow Unicode
 * letters and digits, \s Unicode spaces), newline LF (so '.' is anything
 * but "\n" and '$' also matches before a final "\n", as in Python), and
 * PCRE2_NEVER_BACKSLASH_C. Bounds (LORA_PATTERN_MAX_*): source length,
 * compiled size, group nesting (PCRE2's parenthesis limit), and at match
 * time the match limit (backtracking steps), the depth limit and the heap
 * limit. A pattern past a bound is refused with one error line naming it;
 * it never runs on.
 *
 * Where the two dialects part, the pattern is rewritten or refused so that
 * what is accepted means what it means to Python:
 *   \Z             end of the subject only: rewritten to PCRE2's \z
 *                  (PCRE2's \Z would also match before a final newline)
 *   \v             the vertical tab: rewritten to \x0b (PCRE2: a class)
 *   \uXXXX, \UXXXXXXXX   code points: rewritten to \x{...} (PCRE2
 *                  refuses them); \xXX needs exactly two hex digits
 *   {,n} and {,}   quantifiers {0,n} and {0,} (PCRE2 10.42 reads them as
 *                  literal text): rewritten
 *   '[' in a class a literal '[' (PCRE2 would read [:alpha:], [.x.] and
 *                  [=x=] as POSIX classes): escaped, as is a ':', '.' or
 *                  '=' right after the opening '['
 *   \ + an ASCII letter Python does not know (\p, \h, \K, \R, \Q, \g,
 *                  \e, ...): refused, "bad escape", as Python does;
 *                  \N{name} is refused too
 *   (*             refused ("nothing to repeat", as in Python): PCRE2 would
 *                  read (*VERB) and start-of-pattern settings
 *   (?x) and (?x:...)  verbose mode: refused, since its comments would
 *                  hide brackets from the rewriting
 * Left as PCRE2 reads them, all rare in module names: the inline flags
 * (?a), (?u) and (?L) are refused by PCRE2; {m,n} bounds stop at 65535
 * (Python: 2^32 - 1); PCRE2 10.43 and later add the marks Mn and Pc to \w
 * (Python: letters, numbers and '_', as 10.42); case-insensitive matching
 * uses Unicode case folding; \B matches an empty subject and \z is the
 * end (both as in Python 3.14, not before). Constructs Python refuses but
 * PCRE2 knows ((?R), (?|...), variable-length lookbehind branches, (?U),
 * \x{...}, mid-pattern global flags) are accepted with PCRE2's meaning. */
#ifndef LORA_PATTERN_H
#define LORA_PATTERN_H

#include <stddef.h>

#include "core/err.h"

#define LORA_PATTERN_MAX_LEN (64u << 10)    /* bytes of source text, wrapping included */
#define LORA_PATTERN_MAX_CODE (64u << 10)   /* bytes of compiled pattern */
#define LORA_PATTERN_MAX_NEST 250           /* nested groups */
#define LORA_PATTERN_MATCH_LIMIT 1000000    /* backtracking steps per match */
#define LORA_PATTERN_DEPTH_LIMIT 100000     /* nested backtracking points per match */
#define LORA_PATTERN_HEAP_LIMIT (32u << 10) /* KiB of backtracking memory per match */

/* How a pattern must sit in a subject, as Python's three calls. */
enum {
	LORA_PATTERN_SEARCH, /* re.search: anywhere */
	LORA_PATTERN_MATCH,  /* re.match: starting at the subject's start */
	LORA_PATTERN_FULL,   /* re.fullmatch: covering the whole subject */
};

typedef struct lora_pattern lora_pattern;

/* Compile the Python regex before + re + after (before and after may be
 * NULL: text a caller wraps around re, as PEFT turns a key K into
 * (.*\.)?(K)$). what names where re came from, for messages, e.g.
 * "adapter_config.json: rank_pattern key"; every error reads
 * "<what> '<re>' ..." with re shortened when long and offsets counted in
 * re. Returns 0, LORA_EINVAL for a pattern that is invalid or past a bound,
 * or LORA_ENOMEM. Caller frees *out with lora_pattern_free. */
int lora_pattern_compile(lora_pattern **out, const char *before, const char *re, const char *after, int anchor,
                         const char *what, lora_err *e);

/* 1 if subject matches p, 0 if not; LORA_EINVAL (e filled, naming the
 * pattern and the subject) if matching hit a limit or subject is not UTF-8;
 * LORA_ENOMEM. Safe to call from several threads on one pattern. */
int lora_pattern_match(const lora_pattern *p, const char *subject, lora_err *e);

/* As lora_pattern_match, and on a match the span of capturing group g
 * (1 or more) in subject: *start and *len in bytes, *start SIZE_MAX when
 * the group took no part in the match (Python's None). */
int lora_pattern_group(const lora_pattern *p, const char *subject, int g, size_t *start, size_t *len, lora_err *e);

/* Bytes of memory p holds (its compiled code and text), for callers that
 * budget many patterns together. */
size_t lora_pattern_size(const lora_pattern *p);

/* ---- tokenizer.json's regular expressions ----
 *
 * Hugging Face tokenizers compiles the patterns of tokenizer.json with
 * Oniguruma (Ruby syntax, UTF-8). Both engines backtrack and take the
 * leftmost alternative that matches, so the pre-tokenizer patterns of the
 * models people fine-tune ((?i:'s|...), \p{L}, \p{N}{1,3}, \s+(?!\S))
 * mean the same in PCRE2 (UTF, UCP, JIT) once these are settled:
 *   \s, \S        White_Space, as Oniguruma and Rust read it: written out
 *                 as the list of lora_unicode_is_space (PCRE2's \s also
 *                 takes U+180E); \S inside a class is refused
 *   ^, $          line anchors, as in Ruby (PCRE2_MULTILINE, newline LF)
 *   \uHHHH, \v   the code point, the vertical tab
 *   \p{..}, \P{..} general categories only (L, Lu, N, Nd, ...)
 * Refused, with an error naming the construct, rather than matched with a
 * meaning Oniguruma does not give them: other escaped letters (\w, \b,
 * \h, \R, \G, \K, ...), backreferences, a '[' or "&&" inside a class
 * (Ruby's nested classes and intersections), and the inline flags m and x
 * (Ruby's m is PCRE2's s). */

/* Compile re as above; messages as lora_pattern_compile's. Returns 0,
 * LORA_EINVAL or LORA_ENOMEM; caller frees *out with lora_pattern_free. */
int lora_pattern_compile_onig(lora_pattern **out, const char *re, const char *what, lora_err *e);

/* Match state for one thread scanning texts with one pattern. */
typedef struct lora_pattern_scan lora_pattern_scan;
int lora_pattern_scan_new(lora_pattern_scan **out, const lora_pattern *p, lora_err *e);
/* The leftmost match in s[0..n) that starts at or after from: 1 with
 * [*ms, *me), 0 if none, or LORA_EINVAL past a match bound, LORA_ENOMEM.
 * s must be valid UTF-8 and from a character boundary: neither is checked
 * again (a scan calls this once per piece of a long text). */
int lora_pattern_scan_find(lora_pattern_scan *sc, const char *s, size_t n, size_t from, size_t *ms, size_t *me,
                           lora_err *e);
void lora_pattern_scan_free(lora_pattern_scan *sc);

void lora_pattern_free(lora_pattern *p);

#endif
