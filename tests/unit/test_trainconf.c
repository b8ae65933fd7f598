/* trainconf: every key from a file, every error message, flags over the
 * file, the hardening bounds (aliases, nesting, size) and the JSON dump. */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ops/init.h"
#include "train/trainconf.h"

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	fputs(text, f);
	fclose(f);
}

/* Load text as run.yaml over fresh defaults; return the code, message in e. */
static int load_text(lora_trainconf *c, const char *text, lora_err *e)
{
	put("run.yaml", text);
	lora_trainconf_free(c);
	lora_trainconf_init(c, NULL);
	e->msg[0] = 0;
	return lora_trainconf_load(c, "run.yaml", e);
}

/* The file must fail with exactly this message and LORA_EFORMAT. */
#define BAD(text, want)                                                                   \
	do {                                                                                  \
		int rc_ = load_text(&c, text, &e);                                                \
		CHECK(rc_ == LORA_EFORMAT && strcmp(e.msg, want) == 0, "%s\n  got  (%d) %s\n  want %s", \
		      #text, rc_, e.msg, want);                                                   \
	} while (0)

#define GOOD(text)                                                                            \
	do {                                                                                      \
		int rc_ = load_text(&c, text, &e);                                                    \
		CHECK(rc_ == 0, "%s: %s", #text, e.msg);                                              \
	} while (0)

static int list_is(const lora_trainconf_list *l, int n, ...)
{
	va_list ap;
	va_start(ap, n);
	int ok = l->n == (size_t)n;
	for (int i = 0; ok && i < n; i++)
		ok = strcmp(l->items[i], va_arg(ap, const char *)) == 0;
	va_end(ap);
	return ok;
}

static void test_defaults(void)
{
	lora_trainconf c;
	lora_err e = {0};
	CHECK(lora_trainconf_init(&c, &e) == 0, "init: %s", e.msg);
	CHECK(c.adapter == 0 && c.lora_r == 8 && c.lora_alpha == 8 && c.lora_dropout == 0, "lora defaults");
	/* the new adapter's keys default to lora-init's defaults, the one set */
	lora_init_opts io;
	lora_init_defaults(&io);
	char *tl = lora_trainconf_targets(&c);
	CHECK((size_t)c.lora_r == io.rank && c.lora_alpha == io.alpha && (uint64_t)c.seed == io.seed &&
	          !strcmp(tl, io.targets) && c.peft_use_rslora == io.rslora, "defaults are lora-init's");
	free(tl);
	CHECK(list_is(&c.lora_target_modules, 2, "q_proj", "v_proj"), "default targets");
	CHECK(!c.lora_target_linear && !c.peft_use_rslora && !c.sample_packing, "bool defaults");
	CHECK(c.sequence_len == 256 && c.micro_batch_size == 1 && c.gradient_accumulation_steps == 1, "batch defaults");
	CHECK(c.num_epochs == 1 && c.max_steps == -1, "length defaults");
	CHECK(c.learning_rate == 2e-4 && c.lr_scheduler == LORA_SCHED_COSINE && c.warmup_steps == 0, "lr defaults");
	CHECK(c.weight_decay == 0 && c.max_grad_norm == 1.0 && c.optimizer == LORA_OPTIM_ADAMW, "optimizer defaults");
	CHECK(c.adam_beta1 == 0.9 && c.adam_beta2 == 0.999 && c.adam_epsilon == 1e-8 && c.sgd_momentum == 0,
	      "adam defaults");
	CHECK(c.seed == 42 && c.eval_steps == 0 && c.save_steps == 0, "seed and periodic defaults");
	lora_trainconf_free(&c);
	CHECK(c.lora_target_modules.items == NULL, "free clears the list");
	lora_trainconf_free(&c); /* twice is harmless */
}

static void test_table(void)
{
	size_t n;
	const lora_trainconf_key *k = lora_trainconf_keys(&n);
	CHECK(n == 28, "%zu keys", n);
	static const char *const want[] = {
		"adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_linear",
		"peft_use_rslora", "sequence_len", "micro_batch_size", "sample_packing", "gradient_accumulation_steps", "num_epochs",
		"max_steps", "learning_rate", "lr_scheduler", "warmup_steps", "weight_decay", "max_grad_norm",
		"optimizer", "adam_beta1", "adam_beta2", "adam_epsilon", "sgd_momentum", "seed", "eval_steps",
		"save_steps", "compute", "bf16"};
	for (size_t i = 0; i < n && i < sizeof want / sizeof want[0]; i++) {
		CHECK(!strcmp(k[i].key, want[i]), "key %zu is %s, want %s", i, k[i].key, want[i]);
		CHECK(k[i].what && *k[i].what && k[i].help && *k[i].help && k[i].def, "%s documented", k[i].key);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(k[i].key, k[j].key) != 0, "%s listed twice", k[i].key);
	}
}

static void test_good_file(void)
{
	lora_trainconf c;
	lora_err e = {0};
	lora_trainconf_init(&c, &e);
	/* every key, none at its default */
	GOOD("# a full configuration\n"
	     "adapter: lora\n"
	     "lora_r: 16\n"
	     "lora_alpha: 32.5\n"
	     "lora_dropout: 0.05\n"
	     "lora_target_modules:\n"
	     "  - q_proj\n"
	     "  - k_proj\n"
	     "  - self_attn.o_proj\n"
	     "lora_target_linear: yes\n"
	     "peft_use_rslora: true\n"
	     "sequence_len: 1024\n"
	     "micro_batch_size: 4\n"
	     "gradient_accumulation_steps: 8\n"
	     "num_epochs: 2.5\n"
	     "max_steps: 500\n"
	     "learning_rate: 3e-5\n"
	     "lr_scheduler: linear\n"
	     "warmup_steps: 20\n"
	     "weight_decay: 0.01\n"
	     "max_grad_norm: 0\n"
	     "optimizer: sgd\n"
	     "adam_beta1: 0.8\n"
	     "adam_beta2: 0.95\n"
	     "adam_epsilon: 1e-6\n"
	     "sgd_momentum: 0.9\n"
	     "seed: 9223372036854775807\n"
	     "eval_steps: 50\n"
	     "save_steps: 100\n"
	     "bf16: true\n");
	CHECK(c.adapter == 0 && c.lora_r == 16 && c.lora_alpha == 32.5 && c.lora_dropout == 0.05, "lora keys");
	CHECK(list_is(&c.lora_target_modules, 3, "q_proj", "k_proj", "self_attn.o_proj"), "block list");
	CHECK(c.lora_target_linear == 1 && c.peft_use_rslora == 1, "bools");
	CHECK(c.sequence_len == 1024 && c.micro_batch_size == 4 && c.gradient_accumulation_steps == 8, "batch keys");
	CHECK(c.num_epochs == 2.5 && c.max_steps == 500, "length keys");
	CHECK(c.learning_rate == 3e-5 && c.lr_scheduler == LORA_SCHED_LINEAR && c.warmup_steps == 20, "lr keys");
	CHECK(c.weight_decay == 0.01 && c.max_grad_norm == 0 && c.optimizer == LORA_OPTIM_SGD, "optimizer keys");
	CHECK(c.adam_beta1 == 0.8 && c.adam_beta2 == 0.95 && c.adam_epsilon == 1e-6 && c.sgd_momentum == 0.9,
	      "adam keys");
	CHECK(c.seed == 9223372036854775807LL && c.eval_steps == 50 && c.save_steps == 100, "seed and periodic");
	CHECK(c.compute == 2, "axolotl's bf16: true is compute bf16");

	/* JSON of this configuration parses back to the same values */
	char *js = lora_trainconf_json(&c);
	cJSON *j = cJSON_Parse(js);
	CHECK(j && cJSON_IsObject(j), "json parses: %s", js ? js : "(null)");
	size_t n;
	const lora_trainconf_key *k = lora_trainconf_keys(&n);
	/* every key but axolotl's other name of compute, bf16 */
	CHECK(cJSON_GetArraySize(j) == (int)n - 1, "json has every key");
	for (size_t i = 0; i < n; i++)
		CHECK(!strcmp(k[i].key, "bf16") == !cJSON_GetObjectItemCaseSensitive(j, k[i].key), "json has %s", k[i].key);
	CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "compute")), "bf16"), "compute in json");
#define JNUM(name) cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, name))
#define JSTR(name) cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, name))
	CHECK(!strcmp(JSTR("adapter"), "lora") && JNUM("lora_r") == 16 && JNUM("lora_alpha") == 32.5 &&
	          JNUM("lora_dropout") == 0.05, "json lora keys");
	cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "lora_target_modules");
	CHECK(cJSON_GetArraySize(tm) == 3 && !strcmp(cJSON_GetArrayItem(tm, 2)->valuestring, "self_attn.o_proj"),
	      "json target list");
	CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "lora_target_linear")) &&
	          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "peft_use_rslora")), "json bools");
	CHECK(JNUM("sequence_len") == 1024 && JNUM("micro_batch_size") == 4 && JNUM("gradient_accumulation_steps") == 8 &&
	          JNUM("num_epochs") == 2.5 && JNUM("max_steps") == 500, "json sizes");
	CHECK(JNUM("learning_rate") == 3e-5 && !strcmp(JSTR("lr_scheduler"), "linear") && JNUM("warmup_steps") == 20,
	      "json schedule");
	CHECK(JNUM("weight_decay") == 0.01 && JNUM("max_grad_norm") == 0 && !strcmp(JSTR("optimizer"), "sgd"),
	      "json optimizer");
	CHECK(JNUM("adam_beta1") == 0.8 && JNUM("adam_beta2") == 0.95 && JNUM("adam_epsilon") == 1e-6 &&
	          JNUM("sgd_momentum") == 0.9 && JNUM("eval_steps") == 50 && JNUM("save_steps") == 100,
	      "json adam and periodic");
	/* integers are written exactly, even past 2^53 */
	CHECK(js && strstr(js, "\"seed\":9223372036854775807"), "seed exact in json");
	cJSON_Delete(j);
	free(js);

	char *t = lora_trainconf_targets(&c);
	CHECK(t && !strcmp(t, "all-linear"), "lora_target_linear gives all-linear: %s", t);
	free(t);
	c.lora_target_linear = 0;
	t = lora_trainconf_targets(&c);
	CHECK(t && !strcmp(t, "q_proj,k_proj,self_attn.o_proj"), "targets joined: %s", t);
	free(t);

	lora_optim_conf oc;
	lora_trainconf_optim(&c, &oc);
	CHECK(oc.kind == LORA_OPTIM_SGD && oc.lr == 3e-5 && oc.beta1 == 0.8 && oc.beta2 == 0.95 && oc.eps == 1e-6 &&
	          oc.weight_decay == 0.01 && oc.momentum == 0.9, "optimizer conf");
	lora_optim_schedule s;
	lora_trainconf_schedule(&c, 700, &s);
	CHECK(s.kind == LORA_SCHED_LINEAR && s.lr == 3e-5 && s.warmup == 20 && s.total == 700, "schedule");

	/* other spellings: flow list, comma string, quoted numbers, aliases
	 * of axolotl names, YAML 1.1 booleans, a document marker */
	GOOD("---\n"
	     "lora_target_modules: [q_proj, v_proj, gate_proj]\n"
	     "learning_rate: \"2e-5\"\n"
	     "lora_r: '4'\n"
	     "optimizer: adamw_torch_fused\n"
	     "lr_scheduler: constant_with_warmup\n"
	     "peft_use_rslora: On\n"
	     "...\n");
	CHECK(list_is(&c.lora_target_modules, 3, "q_proj", "v_proj", "gate_proj"), "flow list");
	CHECK(c.learning_rate == 2e-5 && c.lr_scheduler == LORA_SCHED_CONSTANT && c.lora_r == 4, "quoted numbers");
	CHECK(c.optimizer == LORA_OPTIM_ADAMW && c.peft_use_rslora == 1, "axolotl spellings");
	GOOD("lora_target_modules: q_proj, k_proj ,v_proj\n");
	CHECK(list_is(&c.lora_target_modules, 3, "q_proj", "k_proj", "v_proj"), "comma string");
	GOOD("lora_target_modules: all-linear\n");
	CHECK(list_is(&c.lora_target_modules, 1, "all-linear"), "all-linear as a name");

	/* nulls keep the current value, as axolotl treats None */
	GOOD("lora_r:\nlora_alpha: ~\nmax_steps: null\nlora_target_modules:\n");
	CHECK(c.lora_r == 8 && c.lora_alpha == 8 && c.max_steps == -1 && c.lora_target_modules.n == 2, "nulls");
	/* empty and comment-only files are empty configurations */
	GOOD("");
	GOOD("# nothing\n\n");
	GOOD("---\n");
	CHECK(c.lora_r == 8, "empty file keeps defaults");
	lora_trainconf_free(&c);
}

static void test_errors(void)
{
	lora_trainconf c;
	lora_err e = {0};
	lora_trainconf_init(&c, &e);

	/* unknown keys */
	BAD("lora_r: 8\nlora_alpha: 16\nlearning_rat: 1e-4\n",
	    "run.yaml:3: unknown key 'learning_rat' (did you mean 'learning_rate'?)");
	BAD("lora_rank: 8\n", "run.yaml:1: unknown key 'lora_rank' (did you mean 'lora_r'?)");
	BAD("warmup_step: 8\n", "run.yaml:1: unknown key 'warmup_step' (did you mean 'warmup_steps'?)");
	BAD("lr_schedluer: cosine\n", "run.yaml:1: unknown key 'lr_schedluer' (did you mean 'lr_scheduler'?)");
	BAD("wandb_project: x\n", "run.yaml:1: unknown key 'wandb_project'");
	BAD("\"a\\tb\": 1\n", "run.yaml:1: unknown key 'a\\x09b'");
	BAD("base_model: meta-llama/Llama-2-7b\n",
	    "run.yaml:1: key 'base_model' is not supported: the base model is given with -m MODEL");
	BAD("lora_r: 8\ndatasets:\n  - path: x\n",
	    "run.yaml:2: key 'datasets' is not supported: the token data is given with -d DATA");
	BAD("output_dir: ./out\n", "run.yaml:1: key 'output_dir' is not supported: the output is given with -o OUT");

	/* wrong types and ranges */
	BAD("lora_r: 8\nlora_alpha: 16\nsequence_len: 512\n\nmicro_batch_size: four\n",
	    "run.yaml:5: 'micro_batch_size' must be a positive integer, got 'four'");
	BAD("micro_batch_size: 0\n", "run.yaml:1: 'micro_batch_size' must be a positive integer, got '0'");
	BAD("lora_r: 8.0\n", "run.yaml:1: 'lora_r' must be a positive integer, got '8.0'");
	BAD("lora_r: 2000000\n", "run.yaml:1: 'lora_r' must be at most 1048576, got '2000000'");
	BAD("lora_r: 99999999999999999999999\n", "run.yaml:1: 'lora_r' must be at most 1048576, got '99999999999999999999999'");
	BAD("lora_r: 1e30\n", "run.yaml:1: 'lora_r' must be at most 1048576, got '1e30'");
	BAD("lora_r: 010\n", "run.yaml:1: 'lora_r' got '010': a leading 0 is octal to YAML 1.1 (PyYAML, axolotl); write it without");
	BAD("lora_r: -07\n", "run.yaml:1: 'lora_r' got '-07': a leading 0 is octal to YAML 1.1 (PyYAML, axolotl); write it without");
	BAD("learning_rate: -1e-4\n", "run.yaml:1: 'learning_rate' must be a non-negative number, got '-1e-4'");
	BAD("learning_rate: .inf\n", "run.yaml:1: 'learning_rate' must be a non-negative number, got '.inf'");
	BAD("learning_rate: nan\n", "run.yaml:1: 'learning_rate' must be a non-negative number, got 'nan'");
	BAD("learning_rate: 0x10\n", "run.yaml:1: 'learning_rate' must be a non-negative number, got '0x10'");
	BAD("learning_rate: 1e999\n", "run.yaml:1: 'learning_rate' must be a non-negative number, got '1e999'");
	BAD("lora_dropout: 1\n", "run.yaml:1: 'lora_dropout' must be a number in [0, 1), got '1'");
	BAD("lora_dropout: -0.1\n", "run.yaml:1: 'lora_dropout' must be a number in [0, 1), got '-0.1'");
	BAD("adam_beta1: 1.0\n", "run.yaml:1: 'adam_beta1' must be a number in [0, 1), got '1.0'");
	BAD("adam_beta2: -0.5\n", "run.yaml:1: 'adam_beta2' must be a number in [0, 1), got '-0.5'");
	BAD("adam_epsilon: 0\n", "run.yaml:1: 'adam_epsilon' must be a positive number, got '0'");
	BAD("lora_alpha: 0\n", "run.yaml:1: 'lora_alpha' must be a positive number, got '0'");
	BAD("num_epochs: 2000000\n", "run.yaml:1: 'num_epochs' must be at most 1000000, got '2000000'");
	BAD("max_steps: 0\n", "run.yaml:1: 'max_steps' must be a positive integer or -1, got '0'");
	BAD("max_steps: -2\n", "run.yaml:1: 'max_steps' must be a positive integer or -1, got '-2'");
	BAD("seed: -1\n", "run.yaml:1: 'seed' must be a non-negative integer, got '-1'");
	BAD("warmup_steps: 1.5\n", "run.yaml:1: 'warmup_steps' must be a non-negative integer, got '1.5'");
	BAD("peft_use_rslora: maybe\n", "run.yaml:1: 'peft_use_rslora' must be true or false, got 'maybe'");
	BAD("lr_scheduler: cosine_with_restarts\n",
	    "run.yaml:1: 'lr_scheduler' must be one of constant, linear, cosine, got 'cosine_with_restarts'");
	BAD("optimizer: adamw_bnb_8bit\n", "run.yaml:1: 'optimizer' must be one of adamw, sgd, got 'adamw_bnb_8bit'");
	BAD("adapter: qlora\n", "run.yaml:1: 'adapter' must be lora, got 'qlora'");
	BAD("lora_r: \"\"\n", "run.yaml:1: 'lora_r' must be a positive integer, got ''");
	BAD("lora_r: \"8\\n9\"\n", "run.yaml:1: 'lora_r' must be a positive integer, got '8\\x0a9'");
	BAD("lora_r: \"8\\09\"\n", "run.yaml:1: 'lora_r' must be a positive integer, got '8\\x009'");
	BAD("lora_r: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	    "run.yaml:1: 'lora_r' must be a positive integer, got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'");

	/* target lists */
	BAD("lora_target_modules:\n  - q_proj\n  - 'q_proj.*'\n",
	    "run.yaml:3: 'lora_target_modules' must be a list of module names, got 'q_proj.*'");
	BAD("lora_target_modules: q_proj,,v_proj\n",
	    "run.yaml:1: 'lora_target_modules' must be a list of module names, got 'q_proj,,v_proj'");
	BAD("lora_target_modules: []\n", "run.yaml:1: 'lora_target_modules' must be a list of module names, got an empty list");
	BAD("lora_target_modules:\n  - q_proj\n  -\n", "run.yaml:3: 'lora_target_modules' must be a list of module names, got ''");
	BAD("lora_target_modules:\n  - q_proj\n  - [v_proj]\n",
	    "run.yaml:3: 'lora_target_modules' must be a list of module names, got a nested sequence");
	BAD("lora_target_modules:\n  - name: q_proj\n",
	    "run.yaml:2: 'lora_target_modules' must be a list of module names, got a nested mapping");

	/* structure */
	BAD("lora_r: 8\nlora_alpha: 16\nwarmup_steps: 5\nlora_r: 16\n", "run.yaml:4: duplicate key 'lora_r' (first on line 1)");
	BAD("lora_r:\nlora_r: 4\n", "run.yaml:2: duplicate key 'lora_r' (first on line 1)");
	BAD("- lora_r: 8\n", "run.yaml:1: expected a mapping of keys to values, got a sequence");
	BAD("just text\n", "run.yaml:1: expected a mapping of keys to values, got a scalar");
	BAD("lora_r:\n  rank: 8\n", "run.yaml:2: 'lora_r' must be a positive integer, got a mapping");
	BAD("lora_r: [8]\n", "run.yaml:1: 'lora_r' must be a positive integer, got a sequence");
	BAD("? [a, b]\n: 1\n", "run.yaml:1: keys must be plain strings, got a sequence");
	BAD("lora_r: 8\n---\nlora_r: 9\n", "run.yaml:2: only one YAML document is allowed");
	BAD("lora_r: !!int 8\n", "run.yaml:1: YAML tags are not supported");
	lora_trainconf_free(&c);
}

static void test_yaml_errors(void)
{
	lora_trainconf c;
	lora_err e = {0};
	lora_trainconf_init(&c, &e);
	/* syntax errors carry libyaml's line and column */
	BAD("lora_target_modules: [q_proj, v_proj\n", "run.yaml:2:1: YAML syntax error: did not find expected ',' or ']'");
	BAD("lora_r: 8\nlora_alpha: 16: 2\n",
	    "run.yaml:2:15: YAML syntax error: mapping values are not allowed in this context");
	BAD("lora_r: 8\n\"seed: 1\n", "run.yaml:3:1: YAML syntax error: found unexpected end of stream");
	BAD("lora_r: 8\n- 1\n", "run.yaml:2:1: YAML syntax error: did not find expected key");
	BAD("lora_r: 8\nseed: @x\n", "run.yaml:2:7: YAML syntax error: found character that cannot start any token");
	BAD("lora_r: 8\nseed: \xff\n", "run.yaml:2:7: YAML syntax error: invalid leading UTF-8 octet");
	BAD("lora_r: 8\tx: 1\nseed: \x01\n", "run.yaml:2:7: YAML syntax error: control characters are not allowed");

	/* aliases and anchors are refused before anything is expanded */
	BAD("lora_r: 8\nseed: *s\n", "run.yaml:2: YAML aliases are not supported");
	BAD("a: &a [x, x, x, x, x, x, x, x, x]\n"
	    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
	    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
	    "run.yaml:1: unknown key 'a'");
	BAD("lora_target_modules: &a [x, x, x, x, x, x, x, x, x]\n"
	    "seed: [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
	    "run.yaml:1: YAML anchors are not supported");
	BAD("lora_target_modules: [q_proj, *a]\n", "run.yaml:1: YAML aliases are not supported");
	BAD("lora_r: &r 8\n", "run.yaml:1: YAML anchors are not supported");
	BAD("&m\nlora_r: 8\n", "run.yaml:1: YAML anchors are not supported");

	/* deep nesting stops at the first level too many, whatever the depth */
	size_t depth = 200000;
	char *deep = malloc(2 * depth + 64);
	strcpy(deep, "lora_r: ");
	size_t o = strlen(deep);
	memset(deep + o, '[', depth);
	memset(deep + o + depth, ']', depth);
	strcpy(deep + o + 2 * depth, "\n");
	BAD(deep, "run.yaml:1: 'lora_r' must be a positive integer, got a sequence");
	strcpy(deep, "lora_target_modules: ");
	o = strlen(deep);
	memset(deep + o, '[', depth);
	memset(deep + o + depth, ']', depth);
	strcpy(deep + o + 2 * depth, "\n");
	BAD(deep, "run.yaml:1: 'lora_target_modules' must be a list of module names, got a nested sequence");
	memset(deep, '{', depth);
	deep[depth] = 0;
	BAD(deep, "run.yaml:1: keys must be plain strings, got a mapping");
	memset(deep, '[', depth);
	deep[depth] = 0;
	BAD(deep, "run.yaml:1: expected a mapping of keys to values, got a sequence");
	free(deep);

	/* the 1 MiB bound: a file of exactly 1 MiB loads, one byte more does not */
	size_t max = LORA_TRAINCONF_MAX_BYTES;
	char *big = malloc(max + 2);
	const char *tail = "\nlora_r: 12\n";
	big[0] = '#';
	memset(big + 1, ' ', max - 1 - strlen(tail));
	strcpy(big + max - strlen(tail), tail);
	CHECK(strlen(big) == max, "1 MiB text");
	GOOD(big);
	CHECK(c.lora_r == 12, "a 1 MiB file loads");
	big[max - 1] = ' ';
	big[max] = '\n';
	big[max + 1] = 0;
	BAD(big, "run.yaml: file is larger than 1 MiB");
	free(big);

	/* unreadable */
	CHECK(lora_trainconf_load(&c, "missing.yaml", &e) == LORA_EIO &&
	          !strcmp(e.msg, "missing.yaml: No such file or directory"), "missing: %s", e.msg);
	CHECK(lora_trainconf_load(&c, ".", &e) == LORA_EIO && !strcmp(e.msg, ".: Is a directory"), "dir: %s", e.msg);

	/* a failed load changes nothing, even keys before the error */
	lora_trainconf_free(&c);
	lora_trainconf_init(&c, NULL);
	put("run.yaml", "lora_r: 4\nlora_target_modules: [a, b]\nseed: x\n");
	CHECK(lora_trainconf_load(&c, "run.yaml", &e) == LORA_EFORMAT, "load fails");
	CHECK(c.lora_r == 8 && list_is(&c.lora_target_modules, 2, "q_proj", "v_proj") && c.seed == 42,
	      "failed load leaves the configuration as it was");
	lora_trainconf_free(&c);
}

static void test_flags(void)
{
	lora_trainconf c;
	lora_err e = {0};
	lora_trainconf_init(&c, &e);
	put("run.yaml", "lora_r: 4\nlearning_rate: 1e-4\nlora_target_modules: [q_proj]\n");
	CHECK(lora_trainconf_load(&c, "run.yaml", &e) == 0, "load: %s", e.msg);
	/* flags are applied after the file, so they win */
	CHECK(lora_trainconf_set(&c, "lora_r", "16", &e) == 0 && c.lora_r == 16, "flag over file");
	CHECK(c.learning_rate == 1e-4, "file value kept where no flag");
	CHECK(lora_trainconf_set(&c, "lora_target_modules", "k_proj, o_proj", &e) == 0 &&
	          list_is(&c.lora_target_modules, 2, "k_proj", "o_proj"), "list flag replaces the file's list");
	CHECK(lora_trainconf_set(&c, "optimizer", "adamw_torch", &e) == 0 && c.optimizer == LORA_OPTIM_ADAMW,
	      "alias by flag");
	CHECK(lora_trainconf_set(&c, "lora_target_linear", "true", &e) == 0 && c.lora_target_linear == 1, "bool flag");
	/* same validation, same messages, no file or line */
	CHECK(lora_trainconf_set(&c, "lora_r", "x", &e) == LORA_EUSAGE &&
	          !strcmp(e.msg, "'lora_r' must be a positive integer, got 'x'"), "flag type: %s", e.msg);
	CHECK(c.lora_r == 16, "failed flag leaves the value");
	CHECK(lora_trainconf_set(&c, "lora_dropout", "1.5", &e) == LORA_EUSAGE &&
	          !strcmp(e.msg, "'lora_dropout' must be a number in [0, 1), got '1.5'"), "flag range: %s", e.msg);
	CHECK(lora_trainconf_set(&c, "lora_rr", "8", &e) == LORA_EUSAGE &&
	          !strcmp(e.msg, "unknown key 'lora_rr' (did you mean 'lora_r'?)"), "flag key: %s", e.msg);
	CHECK(lora_trainconf_set(&c, "lora_target_modules", "", &e) == LORA_EUSAGE &&
	          !strcmp(e.msg, "'lora_target_modules' must be a list of module names, got ''"), "empty list: %s", e.msg);
	CHECK(list_is(&c.lora_target_modules, 2, "k_proj", "o_proj"), "failed list flag leaves the list");
	CHECK(lora_trainconf_set(&c, "max_steps", "-1", &e) == 0 && c.max_steps == -1, "max_steps -1");
	lora_trainconf_free(&c);
}

int main(void)
{
	/* work in a private directory so messages name plain "run.yaml" */
	const char *tmp = getenv("TMPDIR");
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/trainconf-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir) || chdir(dir)) {
		perror(dir);
		return 1;
	}
	test_defaults();
	test_table();
	test_good_file();
	test_errors();
	test_yaml_errors();
	test_flags();
	unlink("run.yaml");
	if (chdir("/") == 0)
		rmdir(dir);
	DONE();
}
