/* Fuzz lora-train's YAML configuration reader (lora_trainconf_load). The
 * configuration it accepts must be within the key table's ranges and dump
 * as valid JSON; a refused file leaves the configuration untouched. */
#include <cJSON.h>

#include "fuzz.h"
#include "train/trainconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_file("run.yaml", data, size);
	lora_trainconf c;
	lora_err e = {0};
	FUZZ_CHECK(lora_trainconf_init(&c, &e) == 0);
	char *before = lora_trainconf_json(&c);
	FUZZ_CHECK(before != NULL);
	int rc = lora_trainconf_load(&c, path, &e);
	char *after = lora_trainconf_json(&c);
	FUZZ_CHECK(after != NULL);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(strstr(e.msg, path) == e.msg);
		FUZZ_CHECK(strcmp(before, after) == 0);
	} else {
		cJSON *j = cJSON_Parse(after);
		FUZZ_CHECK(cJSON_IsObject(j));
		cJSON_Delete(j);
		FUZZ_CHECK(c.lora_r >= 1 && c.sequence_len >= 1 && c.micro_batch_size >= 1);
		for (size_t i = 0; i < c.lora_target_modules.n; i++)
			FUZZ_CHECK(c.lora_target_modules.items[i][0] != 0);
		char *t = lora_trainconf_targets(&c);
		FUZZ_CHECK(t != NULL);
		free(t);
	}
	free(before);
	free(after);
	lora_trainconf_free(&c);
	return 0;
}
