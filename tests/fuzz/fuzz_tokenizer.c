/* Fuzz the tokenizer.json reader (lora_tokenizer_parse) and, when a file
 * is accepted, encoding and decoding. The input is the JSON text, then an
 * optional line "@@TEXT" and the text to encode. Every id encoded is in the
 * id space and decodes; refusals are one error line naming the file. */
#include "fuzz.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *sep = NULL;
	for (size_t i = 0; i + 8 <= size && !sep; i++)
		if (!memcmp(s + i, "\n@@TEXT\n", 8))
			sep = s + i;
	size_t jn = sep ? (size_t)(sep - s) : size;
	const char *text = sep ? sep + 8 : "";
	size_t tn = sep ? size - jn - 8 : 0;
	lora_tokenizer *t;
	lora_err e = {0};
	int rc = lora_tokenizer_parse(&t, "tokenizer.json", s, jn, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(strncmp(e.msg, "tokenizer.json: ", 16) == 0);
		return 0;
	}
	for (int special = 0; special < 2; special++) {
		lora_tokenizer_ids ids = {0};
		rc = lora_tokenizer_encode(t, text, tn, special, &ids, &e);
		if (rc) {
			fuzz_check_error(rc, &e);
		} else {
			for (size_t i = 0; i < ids.n; i++)
				FUZZ_CHECK(ids.id[i] < lora_tokenizer_vocab_size(t));
			char *out;
			size_t len;
			rc = lora_tokenizer_decode(t, ids.id, ids.n, special, &out, &len, &e);
			FUZZ_CHECK(rc == 0 || rc == LORA_ENOMEM);
			if (!rc)
				free(out);
		}
		lora_tokenizer_ids_free(&ids);
	}
	lora_tokenizer_free(t);
	return 0;
}
