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

#endif
