/* Fuzz model inputs (lora_ckpt_open on a directory): the input is a
 * multi-file input (fuzz.h) unpacked into a directory, typically config.json
 * and model.safetensors, or model.safetensors.index.json and its shards. An
 * accepted model lists every tensor of its shards once, sorted by name,
 * each found by lora_ckpt_find in the shard that holds it. */
#include "fuzz.h"
#include "io/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir = fuzz_dir();
	fuzz_unpack(dir, data, size);
	lora_ckpt *m = NULL;
	lora_err e = {0};
	int rc = lora_ckpt_open(&m, dir, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(m == NULL);
		return 0;
	}
	size_t total = 0;
	for (size_t s = 0; s < m->nshards; s++)
		total += m->shards[s]->ntensors;
	FUZZ_CHECK(total == m->ntensors);
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		FUZZ_CHECK(m->tensor_shard[i] < m->nshards);
		FUZZ_CHECK(lora_st_find(m->shards[m->tensor_shard[i]], t->name) == t);
		FUZZ_CHECK(lora_ckpt_find(m, t->name) == t);
		if (i)
			FUZZ_CHECK(strcmp(m->tensors[i - 1]->name, t->name) < 0);
	}
	char fp[17];
	lora_ckpt_fingerprint(m, fp);
	FUZZ_CHECK(strlen(fp) == 16);
	FUZZ_CHECK(m->name != NULL);
	lora_ckpt_close(m);
	return 0;
}
