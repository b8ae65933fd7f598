#include "train/trainconf.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ops/init.h"

/* Step counts stop at a billion: far beyond any run, and inside a 32-bit
 * long, the type lora_optim_schedule counts steps in. Sizes stop at 2^20, as
 * lora-init's --rank does. */
#define MAX_STEPS 1000000000LL
#define MAX_SIZE (1LL << 20)

/* Initializers by type, so each table row reads as one line of intent; the
 * last argument is the lora-train flag, FLAG(letter, name, metavar) or
 * NOFLAG. */
#define FLAG(s, l, m) s, l, m
#define NOFLAG 0, NULL, NULL
#define K_INT(name, lo, hi, flags, def, what, help, flag) \
	{#name, LORA_TC_INT, offsetof(lora_trainconf, name), lo, hi, 0, 0, flags, NULL, NULL, def, what, help, flag}
#define K_NUM(name, lo, hi, flags, def, what, help, flag) \
	{#name, LORA_TC_NUM, offsetof(lora_trainconf, name), 0, 0, lo, hi, flags, NULL, NULL, def, what, help, flag}
#define K_BOOL(name, def, help, flag) \
	{#name, LORA_TC_BOOL, offsetof(lora_trainconf, name), 0, 0, 0, 0, 0, NULL, NULL, def, "true or false", help, flag}
#define K_ENUM(name, choices, aliases, def, what, help, flag) \
	{#name, LORA_TC_ENUM, offsetof(lora_trainconf, name), 0, 0, 0, 0, 0, choices, aliases, def, what, help, flag}
#define K_LIST(name, def, what, help, flag) \
	{#name, LORA_TC_LIST, offsetof(lora_trainconf, name), 0, 0, 0, 0, 0, NULL, NULL, def, what, help, flag}
#define STR(x) STR_(x)
#define STR_(x) #x

/* The enum choices are listed in the order of lora_optim_sched_kind and
 * lora_optim_kind: the stored index is the enum value. */
static const lora_trainconf_key keys[] = {
	K_ENUM(adapter, "lora", NULL, "lora", "lora",
	       "the adapter type; only lora (the key is accepted so axolotl files read unchanged)", NOFLAG),
	K_INT(lora_r, 1, MAX_SIZE, 0, STR(LORA_INIT_RANK), "a positive integer", "rank r of every adapted layer",
	      FLAG('r', "rank", "R")),
	K_NUM(lora_alpha, 0, INFINITY, LORA_TC_LO_OPEN, STR(LORA_INIT_ALPHA), "a positive number",
	      "alpha: the update B A is scaled by alpha/r", FLAG('a', "alpha", "A")),
	K_NUM(lora_dropout, 0, 1, LORA_TC_HI_OPEN, "0", "a number in [0, 1)",
	      "dropout probability on the input of each adapter during training", FLAG(0, "dropout", "P")),
	K_LIST(lora_target_modules, LORA_INIT_TARGETS, "a list of module names",
	       "module-name suffixes to adapt, a YAML list or a comma-separated string (the flag takes "
	       "all-linear too)",
	       FLAG('t', "targets", "LIST")),
	K_BOOL(lora_target_linear, "false", "adapt every linear module but the output head (all-linear)", NOFLAG),
	K_BOOL(peft_use_rslora, "false", "rank-stabilised LoRA: scale by alpha/sqrt(r)", FLAG(0, "rslora", NULL)),
	K_INT(sequence_len, 1, MAX_SIZE, 0, "256", "a positive integer", "tokens per training sequence",
	      FLAG('T', "seq", "T")),
	K_INT(micro_batch_size, 1, MAX_SIZE, 0, "1", "a positive integer", "sequences per forward and backward pass",
	      FLAG('b', "batch", "B")),
	K_BOOL(sample_packing, "false",
	       "token files with documents (tok): fill each row with whole examples; false: one example per row, "
	       "cut or padded to sequence_len",
	       FLAG(0, "sample-packing", NULL)),
	K_INT(gradient_accumulation_steps, 1, MAX_SIZE, 0, "1", "a positive integer",
	      "micro-batches whose gradients make one optimizer step", FLAG(0, "accum", "N")),
	K_NUM(num_epochs, 0, 1e6, LORA_TC_LO_OPEN, "1", "a positive number",
	      "passes over the data (fractions allowed) when max_steps is not set", FLAG(0, "epochs", "E")),
	K_INT(max_steps, -1, MAX_STEPS, LORA_TC_NONZERO, "-1", "a positive integer or -1",
	      "optimizer steps to run; -1: as many as num_epochs makes", FLAG(0, "steps", "N")),
	K_NUM(learning_rate, 0, INFINITY, 0, "0.0002", "a non-negative number",
	      "peak learning rate, reached at the end of warmup", FLAG(0, "lr", "LR")),
	K_ENUM(lr_scheduler, "constant linear cosine", "constant_with_warmup=constant", "cosine",
	       "one of constant, linear, cosine", "learning-rate schedule after warmup", FLAG(0, "scheduler", "KIND")),
	K_INT(warmup_steps, 0, MAX_STEPS, 0, "0", "a non-negative integer",
	      "optimizer steps of linear warmup from 0 to learning_rate", FLAG(0, "warmup", "N")),
	K_NUM(weight_decay, 0, INFINITY, 0, "0", "a non-negative number",
	      "weight decay: decoupled for adamw, added to the gradient for sgd", FLAG(0, "weight-decay", "WD")),
	K_NUM(max_grad_norm, 0, INFINITY, 0, "1", "a non-negative number",
	      "clip gradients to this global L2 norm; 0: no clipping", FLAG(0, "max-grad-norm", "N")),
	K_ENUM(optimizer, "adamw sgd", "adamw_torch=adamw adamw_torch_fused=adamw", "adamw", "one of adamw, sgd",
	       "adamw (decoupled weight decay, bias correction) or sgd", FLAG(0, "optimizer", "KIND")),
	K_NUM(adam_beta1, 0, 1, LORA_TC_HI_OPEN, "0.9", "a number in [0, 1)", "adamw: decay of the first moment",
	      NOFLAG),
	K_NUM(adam_beta2, 0, 1, LORA_TC_HI_OPEN, "0.999", "a number in [0, 1)", "adamw: decay of the second moment",
	      NOFLAG),
	K_NUM(adam_epsilon, 0, INFINITY, LORA_TC_LO_OPEN, "1e-08", "a positive number",
	      "adamw: added to the root of the second moment", NOFLAG),
	K_NUM(sgd_momentum, 0, 1, LORA_TC_HI_OPEN, "0", "a number in [0, 1)", "sgd: momentum; 0: plain SGD",
	      FLAG(0, "momentum", "MU")),
	K_INT(seed, 0, INT64_MAX, 0, STR(LORA_INIT_SEED), "a non-negative integer",
	      "seed of a new adapter, dropout and data order: same seed, same run", FLAG(0, "seed", "N")),
	K_INT(eval_steps, 0, MAX_STEPS, 0, "0", "a non-negative integer",
	      "evaluate on held-out data every N optimizer steps; 0: only at the end", FLAG(0, "eval-steps", "N")),
	K_INT(save_steps, 0, MAX_STEPS, 0, "0", "a non-negative integer",
	      "write a checkpoint every N optimizer steps; 0: off", FLAG(0, "save-steps", "N")),
	K_ENUM(compute, "auto f32 bf16", NULL, "auto", "one of auto, f32, bf16",
	       "type of the big matrix products: bf16 on a bf16 checkpoint where the CPU has AVX512-BF16 or AMX "
	       "(auto), or f32",
	       FLAG(0, "compute", "TYPE")),
	/* axolotl's spelling of the same choice */
	{"bf16", LORA_TC_ENUM, offsetof(lora_trainconf, compute), 0, 0, 0, 0, 0, "auto f32 bf16",
	 "true=bf16 false=f32", "auto", "auto, true or false", "axolotl's name for compute: true is bf16, false f32",
	 NOFLAG},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* axolotl keys whose job lora-train does on its command line: refused with
 * a pointer to the replacement rather than silently ignored. */
static const struct {
	const char *key, *hint;
} moved[] = {
	{"base_model", "the base model is given with -m MODEL"},
	{"datasets", "the token data is given with -d DATA"},
	{"output_dir", "the output is given with -o OUT"},
	{"lora_model_dir", "an adapter to continue is given as the ADAPTER operand"},
};

const lora_trainconf_key *lora_trainconf_keys(size_t *n)
{
	if (n)
		*n = NKEYS;
	return keys;
}

/* ---- values ---- */

static void *at(lora_trainconf *c, const lora_trainconf_key *k)
{
	return (char *)c + k->offset;
}

static const void *cat(const lora_trainconf *c, const lora_trainconf_key *k)
{
	return (const char *)c + k->offset;
}

static void list_free(lora_trainconf_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

static int list_push(lora_trainconf_list *l, const char *s, size_t len)
{
	char **items = realloc(l->items, (l->n + 1) * sizeof *items);
	if (!items)
		return LORA_ENOMEM;
	l->items = items;
	if (!(items[l->n] = malloc(len + 1)))
		return LORA_ENOMEM;
	memcpy(items[l->n], s, len);
	items[l->n++][len] = 0;
	return 0;
}

static int list_dup(lora_trainconf_list *dst, const lora_trainconf_list *src)
{
	*dst = (lora_trainconf_list){0};
	for (size_t i = 0; i < src->n; i++)
		if (list_push(dst, src->items[i], strlen(src->items[i]))) {
			list_free(dst);
			return LORA_ENOMEM;
		}
	return 0;
}

/* A value shown in a message: at most 40 bytes, control bytes escaped, so
 * the message stays one short line whatever the input holds. */
static const char *show(char *out, size_t cap, const char *s, size_t len)
{
	size_t o = 0, i = 0;
	for (; i < len && i < 40 && o + 8 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	if (i < len && o + 4 <= cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = 0;
	return out;
}

static int bad_value(const lora_trainconf_key *k, const char *s, size_t len, lora_err *e)
{
	char buf[200];
	return lora_err_set(e, LORA_EUSAGE, "'%s' must be %s, got '%s'", k->key, k->what, show(buf, sizeof buf, s, len));
}

/* Decimal integer, optional sign, nothing else. */
static int parse_int(const char *s, size_t len, long long *v)
{
	size_t i = s[0] == '+' || s[0] == '-';
	if (len <= i || len > 24)
		return -1;
	for (size_t j = i; j < len; j++)
		if (s[j] < '0' || s[j] > '9')
			return -1;
	char buf[32];
	memcpy(buf, s, len);
	buf[len] = 0;
	errno = 0;
	*v = strtoll(buf, NULL, 10);
	return errno ? -1 : 0;
}

/* Decimal floating point ([+-] digits [. digits] [e [+-] digits]): no hex,
 * no nan or inf, which strtod alone would accept. */
static int parse_num(const char *s, size_t len, double *v)
{
	size_t i = 0, digits = 0;
	if (len == 0 || len > 64)
		return -1;
	if (s[i] == '+' || s[i] == '-')
		i++;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		digits++;
	if (i < len && s[i] == '.')
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
	if (!digits)
		return -1;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t d = 0;
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			d++;
		if (!d)
			return -1;
	}
	if (i != len)
		return -1;
	char buf[72];
	memcpy(buf, s, len);
	buf[len] = 0;
	*v = strtod(buf, NULL);
	return isfinite(*v) ? 0 : -1;
}

/* The words YAML 1.1 (and so axolotl's PyYAML) reads as booleans. */
static int parse_bool(const char *s, size_t len, int *v)
{
	static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
	for (int i = 0; i < 3; i++) {
		if (len == strlen(yes[i]) && strncasecmp(s, yes[i], len) == 0)
			return *v = 1, 0;
		if (len == strlen(no[i]) && strncasecmp(s, no[i], len) == 0)
			return *v = 0, 0;
	}
	return -1;
}

/* Index of the word s in the space-separated list, or -1. */
static int word_index(const char *list, const char *s, size_t len)
{
	int idx = 0;
	for (const char *p = list; *p; idx++) {
		size_t w = strcspn(p, " ");
		if (w == len && memcmp(p, s, len) == 0)
			return idx;
		p += w;
		p += *p == ' ';
	}
	return -1;
}

static int parse_enum(const lora_trainconf_key *k, const char *s, size_t len, int *v)
{
	int i = word_index(k->choices, s, len);
	if (i >= 0)
		return *v = i, 0;
	/* aliases: "other=name ..." */
	for (const char *p = k->aliases; p && *p;) {
		size_t w = strcspn(p, " "), eq = strcspn(p, "=");
		if (eq == len && memcmp(p, s, len) == 0)
			return *v = word_index(k->choices, p + eq + 1, w - eq - 1), 0;
		p += w;
		p += *p == ' ';
	}
	return -1;
}

/* A module name: the characters of Python identifiers, dots and dashes
 * ("all-linear"). Regex syntax is refused rather than matched literally. */
static int module_name_ok(const char *s, size_t len)
{
	if (!len)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
		      ch == '.' || ch == '-'))
			return 0;
	}
	return 1;
}

/* Parse text s for key k and store it in c. Messages carry no location;
 * the code is LORA_EUSAGE (or LORA_ENOMEM). */
static int apply(lora_trainconf *c, const lora_trainconf_key *k, const char *s, size_t len, lora_err *e)
{
	char buf[200];
	switch (k->type) {
	case LORA_TC_INT: {
		long long v;
		double d;
		size_t i = len && (s[0] == '+' || s[0] == '-');
		/* YAML 1.1, as PyYAML (and so axolotl) reads it, takes 010 as octal 8 */
		if (len > i + 1 && s[i] == '0' && !parse_int(s, len, &v))
			return lora_err_set(e, LORA_EUSAGE,
			                    "'%s' got '%s': a leading 0 is octal to YAML 1.1 (PyYAML, axolotl); write it without",
			                    k->key, show(buf, sizeof buf, s, len));
		/* past long long, or a JSON number written with an exponent */
		if (parse_int(s, len, &v) && !parse_num(s, len, &d) && d == floor(d) && d > (double)k->ihi)
			v = LLONG_MAX;
		else if (parse_int(s, len, &v) || v < k->ilo || ((k->flags & LORA_TC_NONZERO) && v == 0))
			return bad_value(k, s, len, e);
		if (v > k->ihi)
			return lora_err_set(e, LORA_EUSAGE, "'%s' must be at most %lld, got '%s'", k->key, k->ihi,
			                    show(buf, sizeof buf, s, len));
		*(long long *)at(c, k) = v;
		return 0;
	}
	case LORA_TC_NUM: {
		double v;
		if (parse_num(s, len, &v) || v < k->lo || ((k->flags & LORA_TC_LO_OPEN) && v == k->lo) ||
		    ((k->flags & LORA_TC_HI_OPEN) && v >= k->hi))
			return bad_value(k, s, len, e);
		if (v > k->hi)
			return lora_err_set(e, LORA_EUSAGE, "'%s' must be at most %.17g, got '%s'", k->key, k->hi,
			                    show(buf, sizeof buf, s, len));
		*(double *)at(c, k) = v;
		return 0;
	}
	case LORA_TC_BOOL: {
		int v;
		if (parse_bool(s, len, &v))
			return bad_value(k, s, len, e);
		*(int *)at(c, k) = v;
		return 0;
	}
	case LORA_TC_ENUM: {
		int v;
		if (parse_enum(k, s, len, &v))
			return bad_value(k, s, len, e);
		*(int *)at(c, k) = v;
		return 0;
	}
	case LORA_TC_LIST: {
		lora_trainconf_list l = {0};
		for (size_t i = 0;;) {
			size_t j = i;
			while (j < len && s[j] != ',')
				j++;
			size_t a = i, b = j;
			while (a < b && s[a] == ' ')
				a++;
			while (b > a && s[b - 1] == ' ')
				b--;
			if (!module_name_ok(s + a, b - a)) {
				list_free(&l);
				return bad_value(k, s, len, e);
			}
			if (list_push(&l, s + a, b - a)) {
				list_free(&l);
				return lora_err_nomem(e);
			}
			if (j == len)
				break;
			i = j + 1;
		}
		list_free(at(c, k));
		*(lora_trainconf_list *)at(c, k) = l;
		return 0;
	}
	}
	return lora_err_set(e, LORA_EINVAL, "'%s': bad table entry", k->key);
}

static const lora_trainconf_key *find(const char *s, size_t len)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strlen(keys[i].key) == len && memcmp(keys[i].key, s, len) == 0)
			return &keys[i];
	return NULL;
}

/* Optimal string alignment distance (edits, with adjacent swaps costing
 * one), for "did you mean". Both strings are short: the caller checks. */
static size_t distance(const char *a, size_t na, const char *b, size_t nb)
{
	size_t d[66][66];
	for (size_t i = 0; i <= na; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= nb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= na; i++)
		for (size_t j = 1; j <= nb; j++) {
			size_t cost = a[i - 1] != b[j - 1];
			size_t v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v)
				v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[na][nb];
}

/* The unknown-key message, with the nearest key when it is near enough
 * to be a plausible typo (at most 2 edits, or a third of the key). */
static int unknown_key(const char *s, size_t len, lora_err *e)
{
	char buf[200];
	for (size_t i = 0; i < sizeof moved / sizeof moved[0]; i++)
		if (strlen(moved[i].key) == len && memcmp(moved[i].key, s, len) == 0)
			return lora_err_set(e, LORA_EUSAGE, "key '%s' is not supported: %s", moved[i].key, moved[i].hint);
	const char *best = NULL;
	size_t bestd = SIZE_MAX;
	if (len <= 64)
		for (size_t i = 0; i < NKEYS; i++) {
			size_t kl = strlen(keys[i].key);
			size_t d = distance(s, len, keys[i].key, kl);
			if (d < bestd)
				bestd = d, best = keys[i].key;
		}
	show(buf, sizeof buf, s, len);
	if (best && (bestd <= 2 || 3 * bestd <= len))
		return lora_err_set(e, LORA_EUSAGE, "unknown key '%s' (did you mean '%s'?)", buf, best);
	return lora_err_set(e, LORA_EUSAGE, "unknown key '%s'", buf);
}

/* Deep copy of c (the list is the only owned part). */
static int conf_dup(lora_trainconf *dst, const lora_trainconf *src)
{
	*dst = *src;
	return list_dup(&dst->lora_target_modules, &src->lora_target_modules);
}

int lora_trainconf_init(lora_trainconf *c, lora_err *e)
{
	memset(c, 0, sizeof *c);
	for (size_t i = 0; i < NKEYS; i++) {
		int rc = apply(c, &keys[i], keys[i].def, strlen(keys[i].def), e);
		if (rc) {
			lora_trainconf_free(c);
			return rc;
		}
	}
	return 0;
}

void lora_trainconf_free(lora_trainconf *c)
{
	list_free(&c->lora_target_modules);
}

int lora_trainconf_set(lora_trainconf *c, const char *key, const char *value, lora_err *e)
{
	const lora_trainconf_key *k = find(key, strlen(key));
	if (!k)
		return unknown_key(key, strlen(key), e);
	/* apply leaves c untouched on failure: it parses fully before storing. */
	return apply(c, k, value, strlen(value), e);
}

int lora_trainconf_set_flag(lora_trainconf *c, size_t i, const char *value, lora_err *e)
{
	if (i >= NKEYS)
		return lora_err_set(e, LORA_EINVAL, "no configuration key %zu", i);
	if (keys[i].type == LORA_TC_LIST && value && strcmp(value, "all-linear") == 0)
		return lora_trainconf_set(c, "lora_target_linear", "true", e);
	return apply(c, &keys[i], value ? value : "true", value ? strlen(value) : 4, e);
}

int lora_trainconf_set_pair(lora_trainconf *c, const char *pair, lora_err *e)
{
	const char *eq = strchr(pair, '=');
	char key[72];
	if (!eq || eq == pair || eq - pair >= 64) {
		char buf[200];
		return lora_err_set(e, LORA_EUSAGE, "--set: expected KEY=VALUE, got '%s'",
		                    show(buf, sizeof buf, pair, strlen(pair)));
	}
	snprintf(key, sizeof key, "%.*s", (int)(eq - pair), pair);
	return lora_trainconf_set(c, key, eq + 1, e);
}

int lora_trainconf_set_json(lora_trainconf *c, const char *json, lora_err *e)
{
	cJSON *j = cJSON_Parse(json), *it;
	int rc = 0;
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return lora_err_set(e, LORA_EFORMAT, "recorded configuration: not a JSON object");
	}
	cJSON_ArrayForEach(it, j) {
		char v[4096] = "";
		if (cJSON_IsString(it))
			snprintf(v, sizeof v, "%s", it->valuestring);
		else if (cJSON_IsBool(it))
			snprintf(v, sizeof v, "%s", cJSON_IsTrue(it) ? "true" : "false");
		else if (cJSON_IsNumber(it))
			snprintf(v, sizeof v, "%.17g", it->valuedouble);
		else if (cJSON_IsArray(it)) {
			cJSON *x;
			cJSON_ArrayForEach(x, it) if (cJSON_IsString(x))
				snprintf(v + strlen(v), sizeof v - strlen(v), "%s%s", *v ? "," : "", x->valuestring);
		}
		if ((rc = lora_trainconf_set(c, it->string, v, e)))
			break;
	}
	cJSON_Delete(j);
	return rc;
}

/* ---- YAML ---- */

typedef struct {
	yaml_parser_t p;
	const char *path;
	const unsigned char *buf;
	size_t len;
	lora_err *e;
} ctx;

static unsigned long line_of(const yaml_event_t *ev)
{
	return (unsigned long)ev->start_mark.line + 1;
}

/* "path:line: message", LORA_EFORMAT. */
__attribute__((format(printf, 3, 4)))
static int at_line(ctx *x, unsigned long line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return lora_err_set(x->e, LORA_EFORMAT, "%s:%lu: %s", x->path, line, msg);
}

/* A message from apply/unknown_key, placed at a line of the file. */
static int place(ctx *x, unsigned long line, int rc)
{
	if (rc == LORA_ENOMEM)
		return rc;
	x->e->code = LORA_EFORMAT;
	return lora_err_prefix(x->e, "%s:%lu", x->path, line);
}

/* Next event, refusing what this format does not allow wherever it
 * appears: anchors, aliases and tags. On error ev holds nothing. */
static int next(ctx *x, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&x->p, ev)) {
		yaml_parser_t *p = &x->p;
		if (p->error == YAML_MEMORY_ERROR)
			return lora_err_set(x->e, LORA_ENOMEM, "%s: out of memory parsing YAML", x->path);
		unsigned long line, col;
		if (p->error == YAML_READER_ERROR) {
			/* reader errors (bad UTF-8, control characters) carry a
			 * byte offset only: count lines up to it */
			size_t off = p->problem_offset < x->len ? p->problem_offset : x->len, start = 0;
			line = 1;
			for (size_t i = 0; i < off; i++)
				if (x->buf[i] == '\n')
					line++, start = i + 1;
			col = (unsigned long)(off - start) + 1;
		} else {
			line = (unsigned long)p->problem_mark.line + 1;
			col = (unsigned long)p->problem_mark.column + 1;
		}
		return lora_err_set(x->e, LORA_EFORMAT, "%s:%lu:%lu: YAML syntax error: %s", x->path, line, col,
		                    p->problem ? p->problem : "unknown problem");
	}
	const yaml_char_t *anchor = NULL, *tag = NULL;
	switch (ev->type) {
	case YAML_ALIAS_EVENT: {
		unsigned long line = line_of(ev);
		yaml_event_delete(ev);
		return at_line(x, line, "%s", "YAML aliases are not supported");
	}
	case YAML_SCALAR_EVENT:
		anchor = ev->data.scalar.anchor, tag = ev->data.scalar.tag;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = ev->data.sequence_start.anchor, tag = ev->data.sequence_start.tag;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = ev->data.mapping_start.anchor, tag = ev->data.mapping_start.tag;
		break;
	default:
		break;
	}
	if (anchor || tag) {
		unsigned long line = line_of(ev);
		yaml_event_delete(ev);
		return at_line(x, line, "%s",
		               anchor ? "YAML anchors are not supported" : "YAML tags are not supported");
	}
	return 0;
}

static const char *kind_of(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_MAPPING_START_EVENT: return "a mapping";
	case YAML_SEQUENCE_START_EVENT: return "a sequence";
	default: return "a scalar";
	}
}

/* A plain empty, ~ or null scalar: YAML's null. */
static int is_null(const yaml_event_t *ev)
{
	if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	return n == 0 || (n == 1 && s[0] == '~') ||
	       (n == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

/* The items of a block or flow sequence value of a LIST key; the
 * SEQUENCE_START event has been consumed. */
static int read_list(ctx *x, lora_trainconf *c, const lora_trainconf_key *k, unsigned long line)
{
	lora_trainconf_list l = {0};
	yaml_event_t ev;
	int rc;
	char buf[200];
	for (;;) {
		if ((rc = next(x, &ev)))
			goto out;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		unsigned long il = line_of(&ev);
		if (ev.type != YAML_SCALAR_EVENT) {
			const char *nested = ev.type == YAML_MAPPING_START_EVENT ? "mapping" : "sequence";
			yaml_event_delete(&ev);
			rc = lora_err_set(x->e, LORA_EFORMAT, "%s:%lu: '%s' must be %s, got a nested %s", x->path, il,
			                  k->key, k->what, nested);
			goto out;
		}
		const char *s = (const char *)ev.data.scalar.value;
		size_t n = ev.data.scalar.length;
		if (is_null(&ev) || !module_name_ok(s, n)) {
			rc = lora_err_set(x->e, LORA_EFORMAT, "%s:%lu: '%s' must be %s, got '%s'", x->path, il, k->key,
			                  k->what, show(buf, sizeof buf, s, n));
			yaml_event_delete(&ev);
			goto out;
		}
		rc = list_push(&l, s, n);
		yaml_event_delete(&ev);
		if (rc) {
			rc = lora_err_set(x->e, LORA_ENOMEM, "%s: out of memory", x->path);
			goto out;
		}
	}
	if (!l.n) {
		rc = lora_err_set(x->e, LORA_EFORMAT, "%s:%lu: '%s' must be %s, got an empty list", x->path, line,
		                  k->key, k->what);
		goto out;
	}
	list_free(at(c, k));
	*(lora_trainconf_list *)at(c, k) = l;
	return 0;
out:
	list_free(&l);
	return rc;
}

/* The top-level mapping, its MAPPING_START consumed, applied to c. */
static int read_mapping(ctx *x, lora_trainconf *c)
{
	unsigned long seen[NKEYS] = {0};
	yaml_event_t ev;
	int rc;
	for (;;) {
		if ((rc = next(x, &ev)))
			return rc;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		unsigned long line = line_of(&ev);
		if (ev.type != YAML_SCALAR_EVENT) {
			const char *what = kind_of(&ev);
			yaml_event_delete(&ev);
			return at_line(x, line, "keys must be plain strings, got %s", what);
		}
		const lora_trainconf_key *k = find((const char *)ev.data.scalar.value, ev.data.scalar.length);
		if (!k) {
			rc = unknown_key((const char *)ev.data.scalar.value, ev.data.scalar.length, x->e);
			yaml_event_delete(&ev);
			return place(x, line, rc);
		}
		yaml_event_delete(&ev);
		size_t ki = (size_t)(k - keys);
		if (seen[ki])
			return at_line(x, line, "duplicate key '%s' (first on line %lu)", k->key, seen[ki]);
		seen[ki] = line;

		if ((rc = next(x, &ev)))
			return rc;
		unsigned long vl = line_of(&ev);
		if (ev.type == YAML_SEQUENCE_START_EVENT && k->type == LORA_TC_LIST) {
			yaml_event_delete(&ev);
			if ((rc = read_list(x, c, k, vl)))
				return rc;
			continue;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			const char *what = kind_of(&ev);
			yaml_event_delete(&ev);
			return at_line(x, vl, "'%s' must be %s, got %s", k->key, k->what, what);
		}
		if (!is_null(&ev))
			rc = apply(c, k, (const char *)ev.data.scalar.value, ev.data.scalar.length, x->e);
		yaml_event_delete(&ev);
		if (rc)
			return place(x, vl, rc);
	}
}

/* The whole stream: no document, or one document holding one mapping (or
 * only a null). */
static int read_stream(ctx *x, lora_trainconf *c)
{
	yaml_event_t ev;
	int rc, docs = 0;
	for (;;) {
		if ((rc = next(x, &ev)))
			return rc;
		yaml_event_type_t t = ev.type;
		unsigned long line = line_of(&ev);
		if (t == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
			yaml_event_delete(&ev);
			continue;
		}
		if (t == YAML_DOCUMENT_START_EVENT) {
			yaml_event_delete(&ev);
			if (docs++)
				return at_line(x, line, "%s", "only one YAML document is allowed");
			continue;
		}
		/* the root node of the document */
		if (t == YAML_MAPPING_START_EVENT) {
			yaml_event_delete(&ev);
			if ((rc = read_mapping(x, c)))
				return rc;
			continue;
		}
		int null = is_null(&ev);
		const char *what = kind_of(&ev);
		yaml_event_delete(&ev);
		if (!null)
			return at_line(x, line, "expected a mapping of keys to values, got %s", what);
	}
}

int lora_trainconf_load(lora_trainconf *c, const char *path, lora_err *e)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc;
	FILE *f = fopen(path, "rb");
	if (!f)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	/* Read at most one byte past the limit: the file may be a pipe or a
	 * device that never ends. */
	if (!(buf = malloc(LORA_TRAINCONF_MAX_BYTES + 1))) {
		fclose(f);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	}
	len = fread(buf, 1, LORA_TRAINCONF_MAX_BYTES + 1, f);
	int ferr = ferror(f), err = errno;
	fclose(f);
	if (ferr) {
		free(buf);
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(err ? err : EIO));
	}
	if (len > LORA_TRAINCONF_MAX_BYTES) {
		free(buf);
		return lora_err_set(e, LORA_EFORMAT, "%s: file is larger than 1 MiB", path);
	}

	lora_trainconf work;
	if (conf_dup(&work, c)) {
		free(buf);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	}
	ctx x = {.path = path, .buf = buf, .len = len, .e = e};
	if (!yaml_parser_initialize(&x.p)) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	yaml_parser_set_input_string(&x.p, buf, len);
	rc = read_stream(&x, &work);
	yaml_parser_delete(&x.p);
	if (!rc) {
		lora_trainconf_free(c);
		*c = work;
		work.lora_target_modules = (lora_trainconf_list){0};
	}
out:
	lora_trainconf_free(&work);
	free(buf);
	return rc;
}

/* ---- output ---- */

char *lora_trainconf_json(const lora_trainconf *c)
{
	cJSON *o = cJSON_CreateObject();
	char *s = NULL;
	if (!o)
		return NULL;
	for (size_t i = 0; i < NKEYS; i++) {
		const lora_trainconf_key *k = &keys[i];
		cJSON *v = NULL;
		char buf[32];
		if (i && k->offset == keys[i - 1].offset) /* another name of the key before */
			continue;
		switch (k->type) {
		case LORA_TC_INT:
			/* raw text: a double would round seeds above 2^53 */
			snprintf(buf, sizeof buf, "%lld", *(const long long *)cat(c, k));
			v = cJSON_CreateRaw(buf);
			break;
		case LORA_TC_NUM:
			v = cJSON_CreateNumber(*(const double *)cat(c, k));
			break;
		case LORA_TC_BOOL:
			v = cJSON_CreateBool(*(const int *)cat(c, k));
			break;
		case LORA_TC_ENUM: {
			int idx = *(const int *)cat(c, k);
			const char *p = k->choices;
			for (int j = 0; j < idx && *p; j++) {
				p += strcspn(p, " ");
				p += *p == ' ';
			}
			size_t w = strcspn(p, " ");
			if (w < sizeof buf) {
				memcpy(buf, p, w);
				buf[w] = 0;
				v = cJSON_CreateString(buf);
			}
			break;
		}
		case LORA_TC_LIST: {
			const lora_trainconf_list *l = cat(c, k);
			v = cJSON_CreateArray();
			for (size_t j = 0; v && j < l->n; j++) {
				cJSON *item = cJSON_CreateString(l->items[j]);
				if (!item || !cJSON_AddItemToArray(v, item)) {
					cJSON_Delete(item);
					cJSON_Delete(v);
					v = NULL;
				}
			}
			break;
		}
		}
		if (!v || !cJSON_AddItemToObject(o, k->key, v)) {
			cJSON_Delete(v);
			goto out;
		}
	}
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

char *lora_trainconf_targets(const lora_trainconf *c)
{
	const lora_trainconf_list *l = &c->lora_target_modules;
	if (c->lora_target_linear)
		return strdup("all-linear");
	size_t n = 1;
	for (size_t i = 0; i < l->n; i++)
		n += strlen(l->items[i]) + 1;
	char *s = malloc(n), *p = s;
	if (!s)
		return NULL;
	*p = 0;
	for (size_t i = 0; i < l->n; i++) {
		size_t w = strlen(l->items[i]);
		if (i)
			*p++ = ',';
		memcpy(p, l->items[i], w + 1);
		p += w;
	}
	return s;
}

void lora_trainconf_optim(const lora_trainconf *c, lora_optim_conf *o)
{
	*o = (lora_optim_conf){
		.kind = c->optimizer == 1 ? LORA_OPTIM_SGD : LORA_OPTIM_ADAMW,
		.lr = c->learning_rate,
		.beta1 = c->adam_beta1,
		.beta2 = c->adam_beta2,
		.eps = c->adam_epsilon,
		.weight_decay = c->weight_decay,
		.momentum = c->sgd_momentum,
	};
}

void lora_trainconf_schedule(const lora_trainconf *c, long total, lora_optim_schedule *s)
{
	*s = (lora_optim_schedule){
		.kind = (lora_optim_sched_kind)c->lr_scheduler,
		.lr = c->learning_rate,
		.warmup = (long)c->warmup_steps,
		.total = total,
	};
}
