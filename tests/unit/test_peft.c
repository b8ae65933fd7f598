/* peft: PEFT's pattern rule, the adapter_config.json we write, and
 * directory round trips. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/peft.h"
#include "core/rng.h"

static lora_adapter *make(const char *const *names, const size_t *ranks, const double *alphas, size_t n)
{
	lora_adapter *a = lora_adapter_new();
	lora_rng g;
	lora_rng_seed(&g, 9);
	for (size_t i = 0; i < n; i++) {
		lora_layer *l = lora_adapter_add(a, names[i], 8, 6, ranks[i], alphas[i], 0, NULL);
		for (size_t j = 0; j < l->rank * l->in; j++)
			l->A[j] = lora_rng_normal(&g);
		for (size_t j = 0; j < l->out * l->rank; j++)
			l->B[j] = lora_rng_normal(&g);
	}
	return a;
}

static cJSON *config_of(const lora_adapter *a, lora_err *e)
{
	char *text;
	if (lora_peft_config(a, &text, e))
		return NULL;
	cJSON *j = cJSON_Parse(text);
	free(text);
	return j;
}

static char *compact(const cJSON *j, const char *key)
{
	return cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, key));
}

#define CHECK_JSON(j, key, want)                                                      \
	do {                                                                              \
		char *got_ = compact(j, key);                                                 \
		CHECK(got_ && strcmp(got_, want) == 0, "%s: got %s, want %s", key, got_, want); \
		cJSON_free(got_);                                                             \
	} while (0)

int main(void)
{
	lora_err e;
	/* PEFT's rule: re.match of (.*\.)?(KEY)$ on the module name; expected
	 * answers are Python 3.11's */
	struct {
		const char *key, *module;
		int want;
	} pm[] = {
		{"q_proj", "model.layers.0.self_attn.q_proj", 1},
		{"q_proj", "q_proj", 1},
		{"q_proj", "model.layers.0.self_attn.xq_proj", 0},
		{"q_proj", "model.q_proj.lora", 0},
		{"self_attn.q_proj", "model.layers.0.self_attn.q_proj", 1},
		{"layers.0.self_attn.q_proj", "model.layers.10.self_attn.q_proj", 0},
		{"layers.1.self_attn.q_proj", "model.layers.1.self_attn.q_proj", 1},
		{"layers\\.\\d+\\.mlp\\..*", "model.layers.12.mlp.up_proj", 1},
		{"layers\\.\\d+\\.mlp\\..*", "model.layers.x.mlp.up_proj", 0},
		{"(?:q|v)_proj", "a.v_proj", 1},
		{"q_proj|k_proj", "a.k_proj", 1},
		{"model.layers.0.q", "model.layers.0.q", 1},
		{"model.layers.0.q", "model.layers.0xq", 1}, /* '.' is a regex wildcard, as in PEFT */
		{"model\\.layers\\.0\\.q", "model.layers.0xq", 0},
		/* the key spliced in as Python regex text, Python's reading */
		{"layers\\.\\d+\\.q", "m.layers.\xd9\xa3.q", 1}, /* \d: any Unicode digit */
		{"q_proj", "x.q_proj\n", 1},                      /* $ before a final newline */
		{"q_proj\\Z", "x.q_proj\n", 0},                  /* \Z: only at the end */
		{"a)|(b", "b", 1},                                 /* (.*\.)?(a)|(b)$ */
		{"a)|(b", "x.bb", 0},
		/* no key matched: PEFT's rank_pattern.get(module) still finds a key
		 * equal to the name */
		{"w+1", "w+1", 1},
		{"w+1", "a.w+1", 0},
		{"w+1", "ww1", 1},
	};
	for (size_t i = 0; i < sizeof pm / sizeof *pm; i++)
		CHECK(lora_peft_pattern_match(pm[i].key, pm[i].module, &e) == pm[i].want, "'%s' vs '%s'", pm[i].key,
		      pm[i].module);
	CHECK(lora_peft_pattern_match("w(", "w", &e) == LORA_EINVAL &&
	      strcmp(e.msg, "pattern key 'w(' is not a valid regular expression: missing closing parenthesis at "
	                    "offset 2") == 0,
	      "bad regex: %s", e.msg);

	/* a fresh config: PEFT's layout (keys sorted, indent 2) */
	const char *n1[] = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
	                    "model.layers.1.self_attn.q_proj"};
	size_t r1[] = {4, 4, 4};
	double al1[] = {8, 8, 8};
	lora_adapter *a = make(n1, r1, al1, 3);
	a->base_name = strdup("tiny-llama");
	a->rslora = 1;
	char *text = NULL;
	CHECK(lora_peft_config(a, &text, &e) == 0, "config: %s", e.msg);
	CHECK(text && strncmp(text, "{\n  \"alpha_pattern\": {},\n  \"base_model_name_or_path\": \"tiny-llama\",\n", 68) == 0,
	      "layout: %s", text);
	CHECK(text && strstr(text, "\"target_modules\": [\n    \"q_proj\",\n    \"v_proj\"\n  ],\n"), "targets: %s", text);
	CHECK(text && !strstr(text, "use_dora") && !strstr(text, "lora_bias"), "no use_dora/lora_bias when false");
	free(text);
	cJSON *j = config_of(a, &e);
	CHECK_JSON(j, "peft_type", "\"LORA\"");
	CHECK_JSON(j, "r", "4");
	CHECK_JSON(j, "lora_alpha", "8");
	CHECK_JSON(j, "rank_pattern", "{}");
	CHECK_JSON(j, "use_rslora", "true");
	CHECK_JSON(j, "fan_in_fan_out", "false");
	cJSON_Delete(j);
	lora_adapter_free(a);

	/* mixed ranks and alphas: the most common values plus one entry each */
	const char *n2[] = {"a", "b", "c"};
	size_t r2[] = {2, 2, 4};
	double al2[] = {16, 0.5, 16};
	a = make(n2, r2, al2, 3);
	j = config_of(a, &e);
	CHECK_JSON(j, "r", "2");
	CHECK_JSON(j, "rank_pattern", "{\"c\":4}");
	CHECK_JSON(j, "lora_alpha", "16");
	CHECK_JSON(j, "alpha_pattern", "{\"b\":0.5}");
	cJSON_Delete(j);
	lora_adapter_free(a);

	/* a key that would also match a longer name: escaped keys for every
	 * layer, longest first */
	const char *n3[] = {"layers.0.q", "model.layers.0.q", "x"};
	size_t r3[] = {4, 2, 2};
	double al3[] = {8, 8, 8};
	a = make(n3, r3, al3, 3);
	j = config_of(a, &e);
	CHECK_JSON(j, "r", "2");
	CHECK_JSON(j, "rank_pattern", "{\"model\\\\.layers\\\\.0\\\\.q\":2,\"layers\\\\.0\\\\.q\":4,\"x\":2}");
	CHECK_JSON(j, "alpha_pattern", "{\"model\\\\.layers\\\\.0\\\\.q\":8,\"layers\\\\.0\\\\.q\":8,\"x\":8}");
	cJSON_Delete(j);

	/* DoRA and lora_bias are all or nothing in PEFT */
	a->layers[0].magnitude = calloc(8, sizeof(float));
	CHECK(lora_peft_config(a, &text, &e) == LORA_EINVAL &&
	      strcmp(e.msg, "layer 'model.layers.0.q' has no DoRA magnitude but 1 other layers do; PEFT's use_dora "
	                    "covers every layer or none") == 0,
	      "partial dora: %s", e.msg);
	for (size_t i = 1; i < 3; i++)
		a->layers[i].magnitude = calloc(8, sizeof(float));
	a->layers[2].bias = calloc(8, sizeof(float));
	CHECK(lora_peft_config(a, &text, &e) == LORA_EINVAL && strstr(e.msg, "layer 'layers.0.q' has no lora_B bias"),
	      "partial bias: %s", e.msg);
	a->layers[0].bias = calloc(8, sizeof(float));
	a->layers[1].bias = calloc(8, sizeof(float));
	j = config_of(a, &e);
	CHECK_JSON(j, "use_dora", "true");
	CHECK_JSON(j, "lora_bias", "true");
	cJSON_Delete(j);
	lora_adapter_free(a);

	/* an imported config comes back byte for byte while it is exact, and
	 * with only the disagreeing fields rewritten when not */
	const char *n4[] = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"};
	size_t r4[] = {8, 4};
	double al4[] = {16, 16};
	a = make(n4, r4, al4, 2);
	const char *orig = "{\"task_type\": \"CAUSAL_LM\", \"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16,\n"
	                   " \"rank_pattern\": {\"v_proj\": 4}, \"lora_dropout\": 0.05, \"target_modules\": \"model\\\\..*_proj\"}";
	a->peft_config = strdup(orig);
	CHECK(lora_peft_config(a, &text, &e) == 0 && strcmp(text, orig) == 0, "verbatim: %s", text);
	free(text);
	a->layers[0].rank = 2; /* (the factors are not looked at) */
	j = config_of(a, &e);
	CHECK_JSON(j, "task_type", "\"CAUSAL_LM\"");
	CHECK_JSON(j, "lora_dropout", "0.05");
	CHECK_JSON(j, "target_modules", "\"model\\\\..*_proj\"");
	CHECK_JSON(j, "r", "2");
	CHECK_JSON(j, "rank_pattern", "{\"model.layers.0.self_attn.v_proj\":4}");
	CHECK_JSON(j, "use_rslora", "false");
	CHECK(!cJSON_GetObjectItem(j, "use_dora"), "use_dora not added when false");
	cJSON_Delete(j);
	a->layers[0].rank = 8;
	a->fan_in_fan_out = 1;
	a->base_name = strdup("gpt2");
	j = config_of(a, &e);
	CHECK_JSON(j, "fan_in_fan_out", "true");
	CHECK_JSON(j, "base_model_name_or_path", "\"gpt2\"");
	CHECK_JSON(j, "rank_pattern", "{\"v_proj\":4}");
	cJSON_Delete(j);
	free(a->peft_config);
	a->peft_config = strdup("{\"peft_type\": \"IA3\"}");
	CHECK(lora_peft_config(a, &text, &e) == LORA_EFORMAT &&
	      strcmp(e.msg, "the adapter's PEFT config: peft_type 'IA3' is not supported (only LORA)") == 0,
	      "bad imported config: %s", e.msg);
	free(a->peft_config);
	a->peft_config = NULL;

	/* directory round trip, replacement rules */
	char dir[] = "/tmp/test_peft.XXXXXX";
	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	char out[256], file[300];
	snprintf(out, sizeof out, "%s/p", dir);
	a->dtype = LORA_BF16;
	size_t s1[1] = {3};
	lora_adapter_add_extra(a, "base_model.model.lm_head.modules_to_save.weight", LORA_I32, 1, s1, "abcdefghijkl", NULL);
	CHECK(lora_peft_write(a, out, 0, &e) == 0, "write: %s", e.msg);
	lora_adapter *b = NULL;
	CHECK(lora_peft_read(&b, out, &e) == 0, "read back: %s", e.msg);
	CHECK(b && b->nlayers == 2 && b->dtype == LORA_BF16 && b->fan_in_fan_out && b->nextras == 1 &&
	      memcmp(b->extras[0].data, "abcdefghijkl", 12) == 0 && b->layers[1].rank == 4 && b->layers[1].alpha == 16,
	      "read back fields");
	for (size_t i = 0; b && i < 2; i++)
		for (size_t k = 0; k < a->layers[i].rank * 6; k++)
			CHECK(b->layers[i].A[k] == lora_dtype_bf16_to_f32(lora_dtype_f32_to_bf16(a->layers[i].A[k])), "A rounded to bf16");
	lora_adapter_free(b);
	CHECK(lora_peft_write(a, out, 0, &e) == LORA_EINVAL && strstr(e.msg, "already exists (use -f to overwrite)"),
	      "exists: %s", e.msg);
	CHECK(lora_peft_write(a, out, 1, &e) == 0, "force: %s", e.msg);
	snprintf(file, sizeof file, "%s/README.md", out);
	FILE *f = fopen(file, "w");
	fclose(f);
	CHECK(lora_peft_write(a, out, 1, &e) == LORA_EINVAL &&
	      strstr(e.msg, "holds 'README.md', which would be lost; not replacing it"), "foreign: %s",
	      e.msg);
	unlink(file);
	/* a failure leaves neither the target nor a temporary directory */
	snprintf(out, sizeof out, "%s/q", dir);
	a->dtype = LORA_F16;
	a->layers[1].B[3] = 1e6f;
	CHECK(lora_peft_write(a, out, 0, &e) == LORA_EINVAL &&
	      strcmp(e.msg, "layer 'model.layers.0.self_attn.v_proj' B: value 1e+06 at [0,3] overflows f16") == 0,
	      "overflow: %s", e.msg);
	struct stat sb;
	CHECK(stat(out, &sb) != 0, "nothing written on failure");
	snprintf(file, sizeof file, "rm -r '%s/p' && rmdir '%s'", dir, dir);
	CHECK(system(file) == 0, "only p was left in the scratch directory");
	lora_adapter_free(a);
	DONE();
}
