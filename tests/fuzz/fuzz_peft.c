/* Fuzz the PEFT adapter reader (lora_peft_read): adapter_config.json and
 * adapter_model.safetensors, given as a multi-file input (fuzz.h). An
 * adapter it accepts must survive a round trip: written as a PEFT
 * directory (lora_peft_write) and read back, the same layers, values,
 * scales and extras. */
#include <sys/stat.h>

#include "fuzz.h"
#include "io/peft.h"
#include "same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char in[4200], out[4200];
	const char *root = fuzz_dir();
	snprintf(in, sizeof in, "%s/in", root);
	snprintf(out, sizeof out, "%s/out", root);
	FUZZ_CHECK(mkdir(in, 0700) == 0);
	fuzz_unpack(in, data, size);
	lora_adapter *a = NULL, *b = NULL;
	lora_err e = {0};
	int rc = lora_peft_read(&a, in, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(a == NULL);
		return 0;
	}
	char *text = NULL;
	rc = lora_peft_config(a, &text, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
	} else {
		free(text);
		rc = lora_peft_write(a, out, 0, &e);
		if (rc) {
			fuzz_check_error(rc, &e);
		} else {
			rc = lora_peft_read(&b, out, &e);
			if (rc)
				fprintf(stderr, "round trip: %s\n", e.msg);
			FUZZ_CHECK(rc == 0);
			fuzz_check_same(a, b, 0);
			for (size_t i = 0; i < a->nlayers; i++)
				FUZZ_CHECK(lora_adapter_layer_scale(a, &a->layers[i]) == lora_adapter_layer_scale(b, &b->layers[i]));
		}
	}
	lora_adapter_free(a);
	lora_adapter_free(b);
	return 0;
}
