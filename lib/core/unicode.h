/* unicode: the Unicode character data text processing needs (normal
 * forms, general categories, White_Space), as the Rust standard library
 * and the Hugging Face tokenizers library read them. The only module that
 * uses utf8proc. */
#ifndef LORA_UNICODE_H
#define LORA_UNICODE_H

#include <stddef.h>

#include "core/err.h"

enum { LORA_UNICODE_NFC, LORA_UNICODE_NFD, LORA_UNICODE_NFKC, LORA_UNICODE_NFKD };

/* s[0..n) (valid UTF-8, NULs allowed) in normal form `form` into a new
 * buffer *out (NUL-terminated, caller frees) of *outn bytes. Returns 0,
 * LORA_EINVAL for text utf8proc refuses, or LORA_ENOMEM. */
int lora_unicode_normalize(const char *s, size_t n, int form, char **out, size_t *outn, lora_err *e);

/* 1 if cp has the White_Space property (Rust's char::is_whitespace and the
 * regex \s of Rust's regex crate and of Oniguruma): U+0009-U+000D, U+0020,
 * U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
 * U+3000. Not U+180E (a format character since Unicode 6.3), U+200B or
 * U+FEFF. */
int lora_unicode_is_space(unsigned cp);
/* 1 if cp's general category is Nd, Nl or No (Rust's char::is_numeric). */
int lora_unicode_is_numeric(unsigned cp);
/* 1 if cp is a word character of Rust's regex \w: a letter, a mark, a
 * decimal digit, a connector punctuation, a join control (U+200C, U+200D),
 * a letter number (Nl) or one of the circled and squared Latin letters that
 * are Other_Alphabetic symbols. */
int lora_unicode_is_word(unsigned cp);

#endif
