/* Fuzz the Hugging Face config.json parser (lora_config_parse). An
 * accepted config describes a model the transformer can be built for. */
#include "fuzz.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lora_config c;
	lora_err e = {0};
	int rc = lora_config_parse(&c, (const char *)data, size, "config.json", &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(strncmp(e.msg, "config.json: ", 13) == 0);
		return 0;
	}
	FUZZ_CHECK(c.dim >= 1 && c.hidden_dim >= 1 && c.n_layers >= 1 && c.n_heads >= 1 && c.vocab_size >= 1);
	FUZZ_CHECK(c.n_kv_heads >= 1 && c.n_heads % c.n_kv_heads == 0);
	FUZZ_CHECK(c.head_dim >= 2 && c.head_dim % 2 == 0);
	FUZZ_CHECK(c.rms_eps > 0 && c.rope_theta > 0);
	FUZZ_CHECK(strcmp(c.model_type, "llama") == 0 || strcmp(c.model_type, "mistral") == 0 ||
	           strcmp(c.model_type, "qwen2") == 0);
	if (c.rope_type != LORA_ROPE_DEFAULT)
		FUZZ_CHECK(c.rope_factor > 0);
	return 0;
}
