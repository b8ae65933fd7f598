/* utf8: strict UTF-8 validation, for every text that reaches a header or a
 * message (JSON files, tensor names, PEFT configs). */
#ifndef LORA_UTF8_H
#define LORA_UTF8_H

#include <stddef.h>

/* Offset of the first byte of s[0..n) that breaks strict UTF-8 (overlong
 * forms, surrogates and code points above U+10FFFF included), or n. */
size_t lora_utf8_bad(const void *s, size_t n);
/* 1 if the NUL-terminated s is valid UTF-8. */
int lora_utf8_valid(const char *s);
/* The code point starting at s (valid UTF-8, as lora_utf8_bad checked)
 * into *cp; returns its length in bytes (1 to 4). */
int lora_utf8_decode(const char *s, unsigned *cp);
/* cp (at most U+10FFFF) written as UTF-8 into out; returns the length. */
int lora_utf8_encode(char *out, unsigned cp);

#endif
