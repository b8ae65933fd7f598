/* Fuzz the JSONL example reader (lora_jsonl_parse): the input is one line.
 * An accepted line is an example of exactly one kind with every string it
 * promises, a chat's roles are known ones, an alpaca prompt holds its
 * instruction; a refused one names the line first. */
#include <string.h>

#include "core/utf8.h"
#include "text/jsonl.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lora_jsonl_example x;
	lora_err e = {0};
	int rc = lora_jsonl_parse(&x, "in.jsonl: line 1 (byte 0)", (const char *)data, size, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(strstr(e.msg, "in.jsonl: line 1 (byte 0): ") == e.msg);
		lora_jsonl_free(&x);
		return 0;
	}
	FUZZ_CHECK(lora_utf8_bad((const char *)data, size) == size);
	switch (x.kind) {
	case LORA_JSONL_TEXT: FUZZ_CHECK(x.text && !x.prompt && !x.msgs); break;
	case LORA_JSONL_PROMPT:
		FUZZ_CHECK(x.prompt && x.completion && !x.text && !x.msgs);
		if (x.rendered)
			FUZZ_CHECK(strstr(x.rendered, "### Instruction:\n") && strstr(x.rendered, "### Response:\n"));
		break;
	case LORA_JSONL_MESSAGES:
		FUZZ_CHECK(x.nmsgs >= 1 && x.msgs);
		for (size_t i = 0; i < x.nmsgs; i++) {
			const char *r = x.msgs[i].role;
			FUZZ_CHECK(!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant"));
			FUZZ_CHECK(x.msgs[i].content);
		}
		break;
	default: FUZZ_CHECK(0);
	}
	lora_jsonl_free(&x);
	return 0;
}
