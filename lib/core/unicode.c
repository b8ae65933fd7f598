#include "core/unicode.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int lora_unicode_normalize(const char *s, size_t n, int form, char **out, size_t *outn, lora_err *e)
{
	static const int opts[] = {
		[LORA_UNICODE_NFC] = UTF8PROC_STABLE | UTF8PROC_COMPOSE,
		[LORA_UNICODE_NFD] = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE,
		[LORA_UNICODE_NFKC] = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
		[LORA_UNICODE_NFKD] = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT,
	};
	*out = NULL;
	*outn = 0;
	if (n == 0) {
		if (!(*out = calloc(1, 1)))
			return lora_err_nomem(e);
		return 0;
	}
	if (n > (size_t)(PTRDIFF_MAX / 32))
		return lora_err_set(e, LORA_EINVAL, "text of %zu bytes is too long to normalize", n);
	utf8proc_uint8_t *d = NULL;
	utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d,
	                                  (utf8proc_option_t)opts[form]);
	if (r < 0) {
		if (r == UTF8PROC_ERROR_NOMEM)
			return lora_err_nomem(e);
		return lora_err_set(e, LORA_EINVAL, "cannot normalize text: %s", utf8proc_errmsg(r));
	}
	*out = (char *)d;
	*outn = (size_t)r;
	return 0;
}

int lora_unicode_is_space(unsigned cp)
{
	if (cp < 0x80)
		return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20;
	return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

int lora_unicode_is_numeric(unsigned cp)
{
	if (cp < 0x80)
		return cp >= '0' && cp <= '9';
	utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
	return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int lora_unicode_is_word(unsigned cp)
{
	if (cp < 0x80)
		return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
	if (cp == 0x200c || cp == 0x200d || (cp >= 0x24b6 && cp <= 0x24e9) || (cp >= 0x1f130 && cp <= 0x1f149) ||
	    (cp >= 0x1f150 && cp <= 0x1f169) || (cp >= 0x1f170 && cp <= 0x1f189))
		return 1;
	switch (utf8proc_category((utf8proc_int32_t)cp)) {
	case UTF8PROC_CATEGORY_LU:
	case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT:
	case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO:
	case UTF8PROC_CATEGORY_MN:
	case UTF8PROC_CATEGORY_MC:
	case UTF8PROC_CATEGORY_ME:
	case UTF8PROC_CATEGORY_ND:
	case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_PC:
		return 1;
	default:
		return 0;
	}
}
