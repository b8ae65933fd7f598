/* Fuzz the tokenizer_config.json reader (lora_chat_parse) and, when a
 * template is accepted, rendering. The input is the JSON text, then an
 * optional line "@@CHAT", a line "FLAGS FORMAT" (FLAGS a digit, FORMAT
 * empty to recognise the template) and messages "ROLE\x1fCONTENT"
 * separated by "\x1e". A rendering's spans partition its text in order and
 * its content spans are bytes of some message's content; refusals are one
 * error line. */
#include "fuzz.h"
#include "text/chat.h"

#define MAXMSG 64

static const char *find(const char *s, size_t n, const char *w)
{
	size_t k = strlen(w);
	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(s + i, w, k))
			return s + i;
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *sep = find(s, size, "\n@@CHAT\n");
	size_t jn = sep ? (size_t)(sep - s) : size;
	char *rest = NULL, *format = NULL;
	lora_chat_message m[MAXMSG];
	size_t n = 0;
	unsigned flags = 0;
	if (sep) {
		size_t rn = size - jn - 8;
		if (!(rest = malloc(rn + 1)))
			return 0;
		memcpy(rest, sep + 8, rn);
		rest[rn] = '\0'; /* a NUL inside ends the last message early */
		char *line = strchr(rest, '\n');
		if (line)
			*line++ = '\0';
		flags = (unsigned)(rest[0] - '0') & 3u;
		format = rest[0] && rest[1] == ' ' && rest[2] ? rest + 2 : NULL;
		for (char *p = line; p && n < MAXMSG;) {
			char *next = strchr(p, '\x1e'), *us;
			if (next)
				*next++ = '\0';
			if ((us = strchr(p, '\x1f'))) {
				*us = '\0';
				m[n].role = p;
				m[n++].content = us + 1;
			}
			p = next;
		}
	}
	lora_chat *c;
	lora_err e = {0};
	int rc = lora_chat_parse(&c, "tokenizer_config.json", s, jn, format, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(rc == LORA_EUSAGE || strncmp(e.msg, "tokenizer_config.json: ", 23) == 0);
		free(rest);
		return 0;
	}
	char *text;
	lora_chat_span *sp;
	size_t nsp;
	rc = lora_chat_render(c, m, n, flags, &text, &sp, &nsp, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(rc == LORA_EINVAL || rc == LORA_ENOMEM);
	} else {
		size_t at = 0, len = strlen(text);
		for (size_t i = 0; i < nsp; i++) {
			FUZZ_CHECK(sp[i].begin == at && sp[i].end > at && sp[i].end <= len);
			if (sp[i].content) {
				int found = 0;
				for (size_t k = 0; k < n && !found; k++)
					found = memmem(m[k].content, strlen(m[k].content), text + at, sp[i].end - at) != NULL;
				FUZZ_CHECK(found);
			}
			at = sp[i].end;
		}
		FUZZ_CHECK(at == len);
		free(text);
		free(sp);
	}
	lora_chat_close(c);
	free(rest);
	return 0;
}
