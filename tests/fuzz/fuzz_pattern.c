/* Fuzz the regular expression module (lora_pattern_compile and
 * lora_pattern_match): its rewriting of Python's spelling runs on every
 * byte a config or a command line holds. Input: one byte of options (the
 * anchor in its low bits, 4 for PEFT's (.*\.)?( ... )$ wrapping), the
 * pattern up to the first newline, then subjects, one a line. Every answer
 * is 1, 0 or one error line naming the pattern; a pattern of word
 * characters only must fullmatch itself and nothing longer. */
#include "core/pattern.h"
#include "fuzz.h"

static int word_only(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int anchor = data[0] & 3, wrap = data[0] & 4;
	if (anchor > LORA_PATTERN_FULL)
		anchor = LORA_PATTERN_FULL;
	/* NUL-terminated copy; a NUL in the input ends that string early */
	char *s = malloc(size);
	FUZZ_CHECK(s != NULL);
	memcpy(s, data + 1, size - 1);
	s[size - 1] = 0;
	char *subjects = strchr(s, '\n');
	if (subjects)
		*subjects++ = 0;
	lora_pattern *p = NULL;
	lora_err e = {0};
	int rc = lora_pattern_compile(&p, wrap ? "(.*\\.)?(" : NULL, s, wrap ? ")$" : NULL, anchor, "fuzz", &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(p == NULL && strncmp(e.msg, "fuzz '", 6) == 0);
		free(s);
		return 0;
	}
	FUZZ_CHECK(lora_pattern_size(p) > 0);
	while (subjects) {
		char *next = strchr(subjects, '\n');
		if (next)
			*next++ = 0;
		rc = lora_pattern_match(p, subjects, &e);
		if (rc < 0) {
			fuzz_check_error(rc, &e);
			FUZZ_CHECK(strncmp(e.msg, "fuzz '", 6) == 0);
		} else {
			FUZZ_CHECK(rc == 0 || rc == 1);
		}
		subjects = next;
	}
	if (!wrap && anchor == LORA_PATTERN_FULL && word_only(s)) {
		size_t n = strlen(s);
		char *longer = malloc(n + 2);
		FUZZ_CHECK(longer != NULL);
		memcpy(longer, s, n);
		memcpy(longer + n, "x", 2);
		FUZZ_CHECK(lora_pattern_match(p, s, &e) == 1);
		FUZZ_CHECK(lora_pattern_match(p, longer, &e) == 0);
		free(longer);
	}
	lora_pattern_free(p);
	free(s);
	return 0;
}
