#include "io/peft.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/outdir.h"
#include "core/outfile.h"
#include "core/path.h"
#include "core/pattern.h"
#include "io/safetensors.h"

/* PEFT saves LoRA models wrapped as base_model.model.<module>. */
static const char PREFIX[] = "base_model.model.";
#define PREFIX_LEN (sizeof PREFIX - 1)

/* LoraConfig's defaults for keys a config leaves out. */
#define DEFAULT_R 8
#define DEFAULT_ALPHA 8





int lora_peft_detect(const char *path)
{
	struct stat sb;
	char *dir = NULL, *cfg = NULL;
	int yes = 0;
	if (stat(path, &sb) != 0)
		return 0;
	if (S_ISDIR(sb.st_mode)) {
		cfg = lora_path_join(path, LORA_PEFT_CONFIG);
	} else if (lora_path_has_suffix(path, ".safetensors")) {
		dir = lora_path_dir(path);
		cfg = dir ? lora_path_join(dir, LORA_PEFT_CONFIG) : NULL;
	}
	yes = cfg && lora_path_exists(cfg);
	free(dir);
	free(cfg);
	return yes;
}

/* The config and weight paths of a PEFT adapter given as either. */
static int resolve(const char *path, char **cfg, char **weights, lora_err *e)
{
	struct stat sb;
	char *dir = NULL, *bin = NULL;
	int rc = 0;
	*cfg = *weights = NULL;
	if (stat(path, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode)) {
		*cfg = lora_path_join(path, LORA_PEFT_CONFIG);
		*weights = lora_path_join(path, LORA_PEFT_WEIGHTS);
		bin = lora_path_join(path, "adapter_model.bin");
		if (!*cfg || !*weights || !bin) {
			rc = lora_err_nomem(e);
		} else if (!lora_path_exists(*cfg)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: no %s (not a PEFT adapter directory)", path,
			                  LORA_PEFT_CONFIG);
		} else if (!lora_path_exists(*weights) && lora_path_exists(bin)) {
			rc = lora_err_set(e, LORA_EFORMAT,
			                  "%s: adapter_model.bin (a Python pickle) is not supported; save the adapter as %s",
			                  path, LORA_PEFT_WEIGHTS);
		} else if (stat(*weights, &sb) != 0) {
			rc = lora_err_set(e, LORA_EIO, "%s: %s", *weights, strerror(errno));
		}
	} else {
		*weights = strdup(path);
		dir = lora_path_dir(path);
		*cfg = dir ? lora_path_join(dir, LORA_PEFT_CONFIG) : NULL;
		if (!*weights || !*cfg)
			rc = lora_err_nomem(e);
		else if (!lora_path_exists(*cfg))
			rc = lora_err_set(e, LORA_EFORMAT, "%s: no %s beside it (not a PEFT adapter)", path,
			                  LORA_PEFT_CONFIG);
	}
	free(dir);
	free(bin);
	if (rc) {
		free(*cfg);
		free(*weights);
		*cfg = *weights = NULL;
	}
	return rc;
}

/* ---- patterns ---- */

/* The compiled pattern keys and string target_modules of one config may
 * hold this much memory in all: each is small, but a 16 MiB config could
 * hold millions. */
#define MAX_PATTERN_BYTES (32u << 20)

/* PEFT's get_pattern_key: KEY applies to a module when
 * re.match(rf"(.*\.)?({KEY})$", module) does, the key spliced in as text. */
static int key_compile(lora_pattern **p, const char *key, const char *what, lora_err *e)
{
	return lora_pattern_compile(p, "(.*\\.)?(", key, ")$", LORA_PATTERN_MATCH, what, e);
}

int lora_peft_pattern_match(const char *key, const char *module, lora_err *e)
{
	lora_pattern *p;
	int rc = key_compile(&p, key, "pattern key", e);
	if (rc)
		return rc;
	rc = lora_pattern_match(p, module, e);
	lora_pattern_free(p);
	return rc == 0 && strcmp(key, module) == 0 ? 1 : rc;
}

/* ---- config ---- */

typedef struct {
	cJSON *root;
	size_t r;
	double alpha;
	const cJSON *rank_pattern, *alpha_pattern; /* objects, or NULL */
	lora_pattern **rank_re, **alpha_re; /* one per key, in file order */
	size_t nrank, nalpha;
	int rslora, fan_in_fan_out, dora, lora_bias;
	const cJSON *targets;     /* array of strings, string, or NULL */
	lora_pattern *target_re;  /* a string target_modules (not all-linear) */
	/* What else decides which modules PEFT gives a LoRA layer
	 * (check_target_module_exists): exclude_modules (array or string,
	 * compiled), modules_to_save (one pattern each), layers_to_transform
	 * (number or non-empty array, else NULL) with the layer index patterns
	 * (layers_pattern's, or PEFT's default). */
	const cJSON *exclude;
	lora_pattern *exclude_re;
	lora_pattern **save_re, **layer_re;
	size_t nsave, nlayer_re;
	const cJSON *layers;
	size_t pattern_bytes;     /* held by the compiled patterns */
	const char *base;     /* base_model_name_or_path, or NULL */
	const char *name;     /* of the config, for messages */
} pconfig;

static void free_patterns(lora_pattern **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		lora_pattern_free(v[i]);
	free(v);
}

static void pconfig_free(pconfig *c)
{
	free_patterns(c->rank_re, c->nrank);
	free_patterns(c->alpha_re, c->nalpha);
	free_patterns(c->save_re, c->nsave);
	free_patterns(c->layer_re, c->nlayer_re);
	lora_pattern_free(c->target_re);
	lora_pattern_free(c->exclude_re);
	cJSON_Delete(c->root);
	memset(c, 0, sizeof *c);
}

static int get_flag(const cJSON *root, const char *key, int *v, const char *name, lora_err *e)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
	if (x && !cJSON_IsNull(x) && !cJSON_IsBool(x))
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' must be true or false", name, key);
	*v = cJSON_IsTrue(x);
	return 0;
}

static int is_count(const cJSON *x)
{
	return cJSON_IsNumber(x) && x->valuedouble >= 1 && x->valuedouble <= 0x1p31 &&
	       x->valuedouble == floor(x->valuedouble);
}

/* A whole number past is_count's range: "too large", not "not a count". */
static int too_large(const cJSON *x)
{
	return cJSON_IsNumber(x) && x->valuedouble > 0x1p31 && x->valuedouble == floor(x->valuedouble);
}

/* Count a compiled pattern against the config's budget. */
static int charge(pconfig *c, const lora_pattern *p, const char *name, lora_err *e)
{
	c->pattern_bytes += lora_pattern_size(p);
	if (c->pattern_bytes > MAX_PATTERN_BYTES)
		return lora_err_set(e, LORA_EFORMAT, "%s: the patterns take over %u MiB compiled", name,
		                    MAX_PATTERN_BYTES >> 20);
	return 0;
}

/* Compile the keys of a rank_pattern / alpha_pattern object, checking its
 * values (positive integers / finite numbers). */
static int compile_pattern(pconfig *c, const cJSON *o, int ranks, lora_pattern ***res, size_t *n,
                           const char *name, lora_err *e)
{
	const char *kind = ranks ? "rank_pattern" : "alpha_pattern";
	char what[600];
	const cJSON *it;
	int rc;
	snprintf(what, sizeof what, "%s: %s key", name, kind);
	*res = calloc((size_t)cJSON_GetArraySize(o) + 1, sizeof **res);
	if (!*res)
		return lora_err_nomem(e);
	cJSON_ArrayForEach(it, o) {
		if (ranks && too_large(it))
			return lora_err_set(e, LORA_EFORMAT, "%s: %s '%s': %g is too large (at most 2147483648)", name, kind,
			                    it->string, it->valuedouble);
		if (ranks ? !is_count(it) : !(cJSON_IsNumber(it) && isfinite(it->valuedouble)))
			return lora_err_set(e, LORA_EFORMAT, "%s: %s '%s' must map to %s", name, kind, it->string,
			                    ranks ? "a positive integer" : "a finite number");
		if ((rc = key_compile(&(*res)[*n], it->string, what, e)))
			return rc;
		if ((rc = charge(c, (*res)[(*n)++], name, e)))
			return rc;
	}
	return 0;
}

/* A string target_modules is a regex PEFT matches with re.fullmatch, but
 * for "all-linear" in any case, which PEFT expands to the linear layers. */
static int compile_targets(pconfig *c, const char *name, lora_err *e)
{
	char what[600];
	int rc;
	if (!cJSON_IsString(c->targets) || strcasecmp(c->targets->valuestring, "all-linear") == 0)
		return 0;
	snprintf(what, sizeof what, "%s: target_modules", name);
	if ((rc = lora_pattern_compile(&c->target_re, NULL, c->targets->valuestring, NULL, LORA_PATTERN_FULL, what,
	                               e)))
		return rc;
	return charge(c, c->target_re, name, e);
}

/* A list of strings, a string (when str_ok), or absent/null: 0; else -1. */
static int strings(const cJSON *x, int str_ok)
{
	const cJSON *it;
	if (!x || cJSON_IsNull(x) || (str_ok && cJSON_IsString(x)))
		return 0;
	if (!cJSON_IsArray(x))
		return -1;
	cJSON_ArrayForEach(it, x)
		if (!cJSON_IsString(it))
			return -1;
	return 0;
}

/* Compile before + each string of x (a string or a list of them) + after
 * into a fresh array *res of *n patterns, anchored as re.match. */
static int compile_each(pconfig *c, const cJSON *x, const char *before, const char *after, lora_pattern ***res,
                        size_t *n, const char *what, const char *name, lora_err *e)
{
	const cJSON *it;
	int rc, one = cJSON_IsString(x);
	*res = calloc(one ? 1 : (size_t)cJSON_GetArraySize(x) + 1, sizeof **res);
	if (!*res)
		return lora_err_nomem(e);
	for (it = one ? x : x->child; it; it = one ? NULL : it->next) {
		if ((rc = lora_pattern_compile(&(*res)[*n], before, it->valuestring, after, LORA_PATTERN_MATCH, what, e)))
			return rc;
		if ((rc = charge(c, (*res)[(*n)++], name, e)))
			return rc;
	}
	return 0;
}

/* The keys besides target_modules that decide which modules PEFT adapts. */
static int compile_selection(pconfig *c, const char *name, lora_err *e)
{
	const cJSON *x;
	char what[600];
	int rc;
	x = cJSON_GetObjectItemCaseSensitive(c->root, "exclude_modules");
	if (strings(x, 1))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'exclude_modules' must be a list of strings or a string", name);
	c->exclude = x && !cJSON_IsNull(x) ? x : NULL;
	if (cJSON_IsString(x)) {
		snprintf(what, sizeof what, "%s: exclude_modules", name);
		if ((rc = lora_pattern_compile(&c->exclude_re, NULL, x->valuestring, NULL, LORA_PATTERN_FULL, what, e)) ||
		    (rc = charge(c, c->exclude_re, name, e)))
			return rc;
	}
	/* PEFT never puts an adapter on a module it saves whole: a name in
	 * modules_to_save, spliced into re.match(rf"(^|.*\.){m}($|\..*)"). */
	x = cJSON_GetObjectItemCaseSensitive(c->root, "modules_to_save");
	if (strings(x, 0))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'modules_to_save' must be a list of strings", name);
	snprintf(what, sizeof what, "%s: modules_to_save", name);
	if (cJSON_IsArray(x) && (rc = compile_each(c, x, "(^|.*\\.)", "($|\\..*)", &c->save_re, &c->nsave, what, name, e)))
		return rc;
	x = cJSON_GetObjectItemCaseSensitive(c->root, "layers_to_transform");
	int bad = x && !cJSON_IsNull(x) && !cJSON_IsNumber(x) && !cJSON_IsArray(x);
	for (const cJSON *it = cJSON_IsArray(x) ? x->child : cJSON_IsNumber(x) ? x : NULL; it && !bad;
	     it = cJSON_IsArray(x) ? it->next : NULL)
		bad = !cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 0x1p53;
	if (bad)
		return lora_err_set(e, LORA_EFORMAT, "%s: 'layers_to_transform' must be an integer or a list of integers",
		                    name);
	c->layers = cJSON_IsNumber(x) || (cJSON_IsArray(x) && x->child) ? x : NULL;
	x = cJSON_GetObjectItemCaseSensitive(c->root, "layers_pattern");
	if (strings(x, 1))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'layers_pattern' must be a list of strings or a string", name);
	if (!c->layers)
		return 0;
	/* The layer index is the first number PEFT's pattern finds (lazy .*?,
	 * as PEFT 0.20 matches, so an expert index never passes for it); an
	 * empty layers_pattern means any name before the number. */
	snprintf(what, sizeof what, "%s: layers_pattern", name);
	if ((cJSON_IsString(x) && *x->valuestring) || (cJSON_IsArray(x) && x->child))
		return compile_each(c, x, ".*?\\.", "\\.(\\d+)\\.", &c->layer_re, &c->nlayer_re, what, name, e);
	cJSON *def = cJSON_CreateString(".*?\\.[^.]*\\.(\\d+)\\.");
	if (!def)
		return lora_err_nomem(e);
	rc = compile_each(c, def, NULL, NULL, &c->layer_re, &c->nlayer_re, what, name, e);
	cJSON_Delete(def);
	return rc;
}

/* Parse and check a LoRA config from text; name is used in messages. */
static int pconfig_parse(pconfig *c, const char *text, size_t len, const char *name, const char *what,
                         lora_err *e)
{
	const cJSON *x;
	int rc;
	memset(c, 0, sizeof *c);
	c->name = name;
	if ((rc = lora_json_parse(&c->root, name, what, text, len, e)))
		return rc;
	x = cJSON_GetObjectItemCaseSensitive(c->root, "peft_type");
	if (!x)
		return lora_err_set(e, LORA_EFORMAT, "%s: 'peft_type' is missing", name);
	if (!cJSON_IsString(x))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'peft_type' must be a string", name);
	if (strcmp(x->valuestring, "LORA") != 0)
		return lora_err_set(e, LORA_EFORMAT, "%s: peft_type '%s' is not supported (only LORA)", name,
		                    x->valuestring);
	x = cJSON_GetObjectItemCaseSensitive(c->root, "r");
	if (x && too_large(x))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'r': %g is too large (at most 2147483648)", name, x->valuedouble);
	if (x && !is_count(x))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'r' must be a positive integer", name);
	c->r = x ? (size_t)x->valuedouble : DEFAULT_R;
	x = cJSON_GetObjectItemCaseSensitive(c->root, "lora_alpha");
	if (x && !(cJSON_IsNumber(x) && isfinite(x->valuedouble)))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'lora_alpha' must be a finite number", name);
	c->alpha = x ? x->valuedouble : DEFAULT_ALPHA;
	static const char *const pk[] = {"rank_pattern", "alpha_pattern"};
	for (int k = 0; k < 2; k++) {
		x = cJSON_GetObjectItemCaseSensitive(c->root, pk[k]);
		if (!x || cJSON_IsNull(x))
			continue;
		if (!cJSON_IsObject(x))
			return lora_err_set(e, LORA_EFORMAT, "%s: '%s' must be an object", name, pk[k]);
		if (k == 0) {
			c->rank_pattern = x;
			rc = compile_pattern(c, x, 1, &c->rank_re, &c->nrank, name, e);
		} else {
			c->alpha_pattern = x;
			rc = compile_pattern(c, x, 0, &c->alpha_re, &c->nalpha, name, e);
		}
		if (rc)
			return rc;
	}
	if ((rc = get_flag(c->root, "use_rslora", &c->rslora, name, e)) ||
	    (rc = get_flag(c->root, "fan_in_fan_out", &c->fan_in_fan_out, name, e)) ||
	    (rc = get_flag(c->root, "use_dora", &c->dora, name, e)) ||
	    (rc = get_flag(c->root, "lora_bias", &c->lora_bias, name, e)))
		return rc;
	x = cJSON_GetObjectItemCaseSensitive(c->root, "target_modules");
	if (cJSON_IsArray(x)) {
		const cJSON *it;
		cJSON_ArrayForEach(it, x)
			if (!cJSON_IsString(it))
				return lora_err_set(e, LORA_EFORMAT, "%s: 'target_modules' must be a list of strings or a string",
				                    name);
		c->targets = x;
	} else if (cJSON_IsString(x)) {
		c->targets = x;
	} else if (x && !cJSON_IsNull(x)) {
		return lora_err_set(e, LORA_EFORMAT, "%s: 'target_modules' must be a list of strings or a string",
		                    name);
	}
	x = cJSON_GetObjectItemCaseSensitive(c->root, "base_model_name_or_path");
	if (x && !cJSON_IsNull(x) && !cJSON_IsString(x))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'base_model_name_or_path' must be a string", name);
	c->base = cJSON_IsString(x) ? x->valuestring : NULL;
	if ((rc = compile_targets(c, name, e)))
		return rc;
	return compile_selection(c, name, e);
}

/* The layer index of module under c's layer patterns: 1 with *idx, 0 when
 * none applies, or an error where PEFT's int() of the group would raise. */
static int layer_index(const pconfig *c, const char *module, uint64_t *idx, lora_err *e)
{
	for (size_t i = 0; i < c->nlayer_re; i++) {
		size_t at, n;
		int rc = lora_pattern_group(c->layer_re[i], module, 1, &at, &n, e);
		if (rc <= 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		uint64_t v = 0;
		for (size_t k = 0; at != SIZE_MAX && k < n; k++) {
			char d = module[at + k];
			if (d < '0' || d > '9') {
				at = SIZE_MAX;
				break;
			}
			v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(d - '0');
		}
		/* \d also takes other Unicode digits, and a group of the pattern
		 * itself can come first: refused rather than read another way. */
		if (at == SIZE_MAX || n == 0)
			return lora_err_set(e, LORA_EFORMAT,
			                    "%s: module '%s': the layer index that layers_pattern finds is not a number of "
			                    "ASCII digits",
			                    c->name, module);
		*idx = v;
		return 1;
	}
	return 0;
}

/* Does PEFT give module a LoRA layer under c (check_target_module_exists)?
 * 1, 0, or an error from matching. A null target_modules (PEFT then picks
 * targets by model type, which the adapter does not record) and
 * "all-linear" take every module with factors as targeted. */
static int targeted(const pconfig *c, const char *module, lora_err *e)
{
	const cJSON *it, *t = c->targets;
	size_t m = strlen(module);
	int rc, found = 0;
	if (c->exclude_re && (rc = lora_pattern_match(c->exclude_re, module, e)))
		return rc < 0 ? rc : 0;
	if (cJSON_IsArray(c->exclude))
		cJSON_ArrayForEach(it, c->exclude) {
			size_t k = strlen(it->valuestring);
			if (!strcmp(module, it->valuestring) ||
			    (m > k && module[m - k - 1] == '.' && !strcmp(module + m - k, it->valuestring)))
				return 0;
		}
	for (size_t i = 0; i < c->nsave; i++)
		if ((rc = lora_pattern_match(c->save_re[i], module, e)))
			return rc < 0 ? rc : 0;
	if (!t)
		return 1;
	if (c->target_re)
		return lora_pattern_match(c->target_re, module, e);
	if (cJSON_IsString(t)) {
		found = 1; /* all-linear */
	} else {
		cJSON_ArrayForEach(it, t) {
			size_t k = strlen(it->valuestring);
			if (!strcmp(module, it->valuestring))
				return 1; /* named whole: no layer filter */
			if (m > k && module[m - k - 1] == '.' && !strcmp(module + m - k, it->valuestring))
				found = 1;
		}
	}
	if (!found || !c->layers)
		return found;
	uint64_t idx = 0;
	if ((rc = layer_index(c, module, &idx, e)) <= 0)
		return rc;
	for (it = cJSON_IsArray(c->layers) ? c->layers->child : c->layers; it;
	     it = cJSON_IsArray(c->layers) ? it->next : NULL)
		if (it->valuedouble >= 0 && (uint64_t)it->valuedouble == idx)
			return 1;
	return 0;
}

/* PEFT's lookup in a rank_pattern / alpha_pattern object o (keys compiled
 * in re): the first key in file order that applies to module, else a key
 * equal to module's name (PEFT's dict.get(module) when get_pattern_key
 * found nothing), else none (*hit = NULL). */
static int lookup(const cJSON *o, lora_pattern *const *re, const char *module, const cJSON **hit, lora_err *e)
{
	const cJSON *it;
	size_t i = 0;
	*hit = NULL;
	if (!o)
		return 0;
	cJSON_ArrayForEach(it, o) {
		int m = lora_pattern_match(re[i++], module, e);
		if (m < 0)
			return m;
		if (m) {
			*hit = it;
			return 0;
		}
	}
	*hit = cJSON_GetObjectItemCaseSensitive(o, module);
	return 0;
}

/* Rank and alpha of module under c, and the pattern keys that gave them
 * (NULL for r / lora_alpha); 0, or an error from matching. */
static int pconfig_resolve(const pconfig *c, const char *module, size_t *rank, double *alpha, const char **rkey,
                           lora_err *e)
{
	const cJSON *hr, *ha;
	int rc;
	if ((rc = lookup(c->rank_pattern, c->rank_re, module, &hr, e)) ||
	    (rc = lookup(c->alpha_pattern, c->alpha_re, module, &ha, e)))
		return rc;
	*rank = hr ? (size_t)hr->valuedouble : c->r;
	*alpha = ha ? ha->valuedouble : c->alpha;
	if (rkey)
		*rkey = hr ? hr->string : NULL;
	return 0;
}


/* ---- reading ---- */

enum { T_A, T_B, T_MAG, T_BIAS, T_KINDS };
static const char *const suffixes[T_KINDS] = {".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector",
                                              ".lora_B.bias"};

typedef struct {
	char *module;
	int kind;
	const lora_st_tensor *t;
} entry;

static int cmp_entry(const void *a, const void *b)
{
	const entry *x = a, *y = b;
	int c = strcmp(x->module, y->module);
	return c ? c : x->kind - y->kind;
}

static int cmp_tensor_name(const void *a, const void *b)
{
	return strcmp((*(const lora_st_tensor *const *)a)->name, (*(const lora_st_tensor *const *)b)->name);
}

/* Kind of a key and its module name (caller frees), or -1 for an extra. */
static int classify(const char *key, char **module)
{
	size_t n = strlen(key);
	*module = NULL;
	if (strncmp(key, PREFIX, PREFIX_LEN) != 0)
		return -1;
	for (int k = 0; k < T_KINDS; k++) {
		size_t s = strlen(suffixes[k]);
		if (n > PREFIX_LEN + s && strcmp(key + n - s, suffixes[k]) == 0) {
			*module = strndup(key + PREFIX_LEN, n - PREFIX_LEN - s);
			return *module ? k : -2;
		}
	}
	return -1;
}


/* Convert tensor t to freshly allocated f32, refusing non-finite values. */
static int load_f32(float **out, const lora_st_tensor *t, const char *path, lora_err *e)
{
	size_t n = t->nelem, cols = t->ndim == 2 ? t->shape[1] : 0;
	float *f = malloc((n ? n : 1) * sizeof *f);
	if (!f)
		return lora_err_set(e, LORA_ENOMEM, "%s: tensor '%s': out of memory", path, t->name);
	lora_dtype_to_f32(f, t->data, t->dtype, n);
	size_t bad = lora_dtype_find_nonfinite(f, n);
	if (bad < n) {
		free(f);
		if (cols)
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': non-finite value at [%zu,%zu]", path,
			                    t->name, bad / cols, bad % cols);
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': non-finite value at [%zu]", path, t->name,
		                    bad);
	}
	*out = f;
	return 0;
}

/* Build one layer from its tensors (tk[kind], NULL when absent). */
static int add_layer(lora_adapter *a, const char *module, const lora_st_tensor *const tk[T_KINDS],
                     const pconfig *c, const char *path, const char *cfgname, lora_err *e)
{
	char sh[96];
	const lora_st_tensor *A = tk[T_A], *B = tk[T_B];
	if (!A || !B) {
		const lora_st_tensor *have = A ? A : B ? B : tk[T_MAG] ? tk[T_MAG] : tk[T_BIAS];
		if (A || B)
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' has no matching '%s%s%s'", path, have->name,
			                    PREFIX, module, suffixes[A ? T_B : T_A]);
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' belongs to no LoRA layer (no '%s%s%s')", path,
		                    have->name, PREFIX, module, suffixes[T_A]);
	}
	for (int k = 0; k < T_KINDS; k++)
		if (tk[k] && !lora_dtype_is_float(tk[k]->dtype))
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': dtype %s is not supported (F32, F16 or BF16)",
			                    path, tk[k]->name, lora_dtype_st_name(tk[k]->dtype));
	for (int k = 0; k < 2; k++)
		if (tk[k]->ndim != 2)
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' is %zu-D; LoRA factors must be 2-D", path,
			                    tk[k]->name, tk[k]->ndim);
	size_t rank = A->shape[0], in = A->shape[1], out = B->shape[0];
	if (B->shape[1] != rank) {
		lora_shape_format(sh, sizeof sh, A->shape, A->ndim);
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shape %s does not match lora_B rank %zu", path,
		                    A->name, sh, B->shape[1]);
	}
	if (rank < 1 || in < 1 || out < 1 || rank > (1u << 31) || in > (1u << 31) || out > (1u << 31)) {
		lora_shape_format(sh, sizeof sh, A->shape, A->ndim);
		char shb[96];
		lora_shape_format(shb, sizeof shb, B->shape, B->ndim);
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: module '%s': shapes %s (lora_A) and %s (lora_B) are out of range "
		                    "(each side in [1, 2^31])",
		                    path, module, sh, shb);
	}
	size_t want;
	double alpha;
	const char *rkey;
	int rc;
	if ((rc = pconfig_resolve(c, module, &want, &alpha, &rkey, e)))
		return rc;
	if (rank != want) {
		if (rkey)
			return lora_err_set(e, LORA_EFORMAT,
			                    "%s: tensor '%s': rank %zu does not match rank_pattern '%s' = %zu in %s", path,
			                    A->name, rank, rkey, want, cfgname);
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': rank %zu does not match r = %zu in %s", path,
		                    A->name, rank, want, cfgname);
	}
	static const char *const flag[] = {[T_MAG] = "use_dora", [T_BIAS] = "lora_bias"};
	for (int k = T_MAG; k <= T_BIAS; k++) {
		int on = k == T_MAG ? c->dora : c->lora_bias;
		if (tk[k] && !on)
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': %s is not true in %s", path, tk[k]->name,
			                    flag[k], cfgname);
		if (!tk[k] && on)
			return lora_err_set(e, LORA_EFORMAT, "%s: module '%s' has no '%s' but %s sets %s", path, module,
			                    suffixes[k] + 1, cfgname, flag[k]);
		if (tk[k] && (tk[k]->ndim != 1 || tk[k]->shape[0] != out)) {
			lora_shape_format(sh, sizeof sh, tk[k]->shape, tk[k]->ndim);
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shape %s does not match lora_B (%zu outputs)",
			                    path, tk[k]->name, sh, out);
		}
	}
	lora_layer *l = lora_adapter_add(a, module, out, in, rank, alpha, 1, e);
	if (!l)
		return lora_err_prefix(e, "%s", path);
	if ((rc = load_f32(&l->A, A, path, e)) || (rc = load_f32(&l->B, B, path, e)) ||
	    (tk[T_MAG] && (rc = load_f32(&l->magnitude, tk[T_MAG], path, e))) ||
	    (tk[T_BIAS] && (rc = load_f32(&l->bias, tk[T_BIAS], path, e))))
		return rc;
	l->has_magnitude = l->magnitude != NULL;
	l->has_bias = l->bias != NULL;
	return 0;
}

int lora_peft_read(lora_adapter **out, const char *path, lora_err *e)
{
	char *cfg = NULL, *weights = NULL, *text = NULL;
	size_t len = 0, nent = 0;
	pconfig c = {0};
	lora_st *st = NULL;
	lora_adapter *a = NULL;
	entry *ent = NULL;
	const lora_st_tensor **extra = NULL;
	size_t nextra = 0;
	int rc;
	*out = NULL;
	if ((rc = resolve(path, &cfg, &weights, e)) ||
	    (rc = lora_json_slurp(&text, &len, cfg, LORA_PEFT_MAX_CONFIG, e)) ||
	    (rc = pconfig_parse(&c, text, len, cfg, "file", e)) || (rc = lora_st_open(&st, weights, e)))
		goto out;
	a = lora_adapter_new();
	ent = calloc(st->ntensors + 1, sizeof *ent);
	extra = calloc(st->ntensors + 1, sizeof *extra);
	if (!a || !ent || !extra)
		goto nomem;
	for (size_t i = 0; i < st->ntensors; i++) {
		char *module;
		int k = classify(st->tensors[i].name, &module);
		if (k == -2)
			goto nomem;
		if (k < 0)
			extra[nextra++] = &st->tensors[i];
		else
			ent[nent++] = (entry){module, k, &st->tensors[i]};
	}
	qsort(ent, nent, sizeof *ent, cmp_entry);
	const char *cfgname = LORA_PEFT_CONFIG;
	/* PEFT loads the state dict with strict=False: the tensors of a module
	 * it gave no LoRA layer are dropped without a word. They are skipped
	 * here too, but said: a count and the first names. */
	const char *skipped[3];
	size_t nskipped = 0, nkept = 0;
	a->dtype = LORA_F32;
	for (size_t i = 0; i < nent;) {
		const lora_st_tensor *tk[T_KINDS] = {0};
		size_t j = i;
		for (; j < nent && strcmp(ent[j].module, ent[i].module) == 0; j++)
			tk[ent[j].kind] = ent[j].t;
		int on = targeted(&c, ent[i].module, e);
		if (on < 0) {
			rc = on;
			goto out;
		}
		if (!on && nskipped < 3)
			skipped[nskipped] = ent[i].module;
		nskipped += !on;
		if (on && (rc = add_layer(a, ent[i].module, tk, &c, weights, cfgname, e)))
			goto out;
		/* The kept factors, magnitudes and biases share one storage
		 * dtype; a mix is stored as f32, which holds every f16 and bf16
		 * value exactly. */
		for (size_t k = i; on && k < j; k++)
			a->dtype = nkept++ == 0 || ent[k].t->dtype == a->dtype ? ent[k].t->dtype : LORA_F32;
		i = j;
	}
	if (nskipped) {
		char names[3 * 1040] = "";
		size_t k = 0;
		for (size_t n = 0; n < nskipped && n < 3; n++)
			k += (size_t)snprintf(names + k, sizeof names - k, "%s'%.1024s'", n ? ", " : "", skipped[n]);
		if (nskipped > 3)
			snprintf(names + k, sizeof names - k, " and %zu more", nskipped - 3);
		lora_err_warn("%s: %zu module%s that %s does not target %s skipped, as PEFT skips %s: %s", weights,
		              nskipped, nskipped > 1 ? "s" : "", cfgname, nskipped > 1 ? "are" : "is",
		              nskipped > 1 ? "them" : "it", names);
	}
	qsort(extra, nextra, sizeof *extra, cmp_tensor_name);
	for (size_t i = 0; i < nextra; i++) {
		const lora_st_tensor *t = extra[i];
		if (!lora_adapter_add_extra(a, t->name, t->dtype, t->ndim, t->shape, t->data, e)) {
			rc = lora_err_prefix(e, "%s", weights);
			goto out;
		}
	}
	a->rslora = c.rslora;
	a->fan_in_fan_out = c.fan_in_fan_out;
	if (c.base && !(a->base_name = strdup(c.base)))
		goto nomem;
	if (cJSON_IsString(c.targets)) {
		if ((rc = lora_adapter_add_target(a, c.targets->valuestring, e)))
			goto out;
	} else if (c.targets) {
		const cJSON *it;
		cJSON_ArrayForEach(it, c.targets)
			if ((rc = lora_adapter_add_target(a, it->valuestring, e)))
				goto out;
	}
	a->peft_config = text;
	text = NULL;
	a->file_bytes = st->file_size + len;
	*out = a;
	a = NULL;
	goto out;
nomem:
	rc = lora_err_nomem(e);
out:
	for (size_t i = 0; i < nent; i++)
		free(ent[i].module);
	free(ent);
	free(extra);
	lora_st_close(st);
	pconfig_free(&c);
	lora_adapter_free(a);
	free(text);
	free(cfg);
	free(weights);
	return rc;
}

/* ---- the config PEFT would load ---- */

/* Python's json.dumps(indent=2) layout, which is what PEFT writes. */
static int pretty(FILE *f, const cJSON *j, int depth)
{
	if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
		int obj = cJSON_IsObject(j);
		if (!j->child)
			return fputs(obj ? "{}" : "[]", f) < 0;
		fputs(obj ? "{\n" : "[\n", f);
		for (const cJSON *c = j->child; c; c = c->next) {
			fprintf(f, "%*s", 2 * (depth + 1), "");
			if (obj) {
				cJSON *k = cJSON_CreateString(c->string);
				char *ks = k ? cJSON_PrintUnformatted(k) : NULL;
				cJSON_Delete(k);
				if (!ks)
					return -1;
				fprintf(f, "%s: ", ks);
				cJSON_free(ks);
			}
			if (pretty(f, c, depth + 1))
				return -1;
			fputs(c->next ? ",\n" : "\n", f);
		}
		fprintf(f, "%*s%s", 2 * depth, "", obj ? "}" : "]");
		return 0;
	}
	char *s = cJSON_PrintUnformatted(j);
	if (!s)
		return -1;
	fputs(s, f);
	cJSON_free(s);
	return 0;
}

static char *print_config(const cJSON *root)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	if (!f)
		return NULL;
	int bad = pretty(f, root, 0);
	fputc('\n', f);
	bad |= ferror(f);
	if (fclose(f) != 0 || bad) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void regex_escape(char *dst, const char *s)
{
	for (; *s; s++) {
		if (strchr(".^$*+?()[]{}|\\", *s))
			*dst++ = '\\';
		*dst++ = *s;
	}
	*dst = 0;
}

static int cmp_len_desc(const void *a, const void *b)
{
	const lora_layer *x = *(const lora_layer *const *)a, *y = *(const lora_layer *const *)b;
	size_t m = strlen(x->name), n = strlen(y->name);
	return m != n ? (m < n ? 1 : -1) : strcmp(x->name, y->name);
}

/* Most frequent value of v[0..n) (ties: the smallest). */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The most frequent value of v (the smallest of equally frequent ones);
 * sorts v, so that 80k layers cost n log n, not n^2. */
static double mode_of(double *v, size_t n)
{
	double best = n ? v[0] : 0;
	size_t bestc = 0;
	qsort(v, n, sizeof *v, cmp_double);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i; j < n && v[j] == v[i]; j++)
			;
		if (j - i > bestc)
			best = v[i], bestc = j - i;
	}
	return best;
}

/* Does c give every layer of a its rank and alpha? 1, 0, or an error. */
static int ranks_agree(const pconfig *c, const lora_adapter *a, lora_err *e)
{
	for (size_t i = 0; i < a->nlayers; i++) {
		size_t r;
		double al;
		int rc = pconfig_resolve(c, a->layers[i].name, &r, &al, NULL, e);
		if (rc)
			return rc;
		if (r != a->layers[i].rank || al != a->layers[i].alpha)
			return 0;
	}
	return 1;
}

/* Replace (or add) key in obj with v. */
static int put(cJSON *obj, const char *key, cJSON *v)
{
	if (!v)
		return -1;
	if (cJSON_GetObjectItemCaseSensitive(obj, key))
		return cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v) ? 0 : (cJSON_Delete(v), -1);
	cJSON_AddItemToObject(obj, key, v);
	return 0;
}

/* Set key of obj to null where it is present. */
static int unset(cJSON *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(obj, key) ? put(obj, key, cJSON_CreateNull()) : 0;
}

/* Set r, lora_alpha, rank_pattern and alpha_pattern of root to express the
 * ranks and alphas of a: the most common rank and alpha, and one pattern
 * entry per layer that differs, keyed by its module name. When a plain name
 * would also match another layer (dots are regex wildcards; keys match as
 * suffixes), every layer gets an escaped key, longest names first, so each
 * layer meets its own key before any shorter one. */
static int set_ranks(cJSON *root, const lora_adapter *a, lora_err *e)
{
	size_t n = a->nlayers;
	double *rv = malloc((n ? n : 1) * sizeof *rv), *av = malloc((n ? n : 1) * sizeof *av);
	const lora_layer **order = malloc((n ? n : 1) * sizeof *order);
	char *key = NULL;
	size_t maxlen = 0;
	int rc = 0;
	if (!rv || !av || !order)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		rv[i] = (double)a->layers[i].rank, av[i] = a->layers[i].alpha;
		order[i] = &a->layers[i];
		size_t l = strlen(a->layers[i].name);
		maxlen = l > maxlen ? l : maxlen;
	}
	if (!(key = malloc(2 * maxlen + 1)))
		goto nomem;
	double r = n ? mode_of(rv, n) : DEFAULT_R, alpha = n ? mode_of(av, n) : DEFAULT_ALPHA;
	for (int attempt = 0; attempt < 2; attempt++) {
		cJSON *rp = cJSON_CreateObject(), *ap;
		if (put(root, "rank_pattern", rp) || put(root, "alpha_pattern", ap = cJSON_CreateObject()))
			goto nomem;
		if (attempt)
			qsort(order, n, sizeof *order, cmp_len_desc);
		for (size_t i = 0; i < n; i++) {
			const lora_layer *l = order[i];
			if (attempt)
				regex_escape(key, l->name);
			else
				strcpy(key, l->name);
			if ((attempt || (double)l->rank != r) && !cJSON_AddNumberToObject(rp, key, (double)l->rank))
				goto nomem;
			if ((attempt || l->alpha != alpha) && !cJSON_AddNumberToObject(ap, key, l->alpha))
				goto nomem;
		}
		if (put(root, "r", cJSON_CreateNumber(r)) || put(root, "lora_alpha", cJSON_CreateNumber(alpha)))
			goto nomem;
		/* Check the result with the same matcher the reader uses. Plain
		 * names that fail as patterns (invalid, or over a bound on
		 * another name) get the escaped keys of the second attempt. */
		char *text = cJSON_PrintUnformatted(root);
		pconfig c;
		if (!text)
			goto nomem;
		rc = pconfig_parse(&c, text, strlen(text), "adapter_config.json", "text", e);
		int ok = rc ? rc : ranks_agree(&c, a, e);
		pconfig_free(&c);
		cJSON_free(text);
		if (ok == LORA_ENOMEM)
			goto nomem;
		rc = 0;
		if (ok == 1)
			goto out;
	}
	rc = lora_err_set(e, LORA_EINVAL, "cannot express the layers' ranks and alphas as PEFT patterns");
	goto out;
nomem:
	rc = lora_err_nomem(e);
out:
	free(rv);
	free(av);
	free(order);
	free(key);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* target_modules: the distinct last name components of the layers, which
 * PEFT matches as suffixes. Modules of the base model with the same names
 * that the adapter does not cover get layers with B = 0 from PEFT, which
 * change nothing. */
static cJSON *target_list(const lora_adapter *a)
{
	const char **names = malloc((a->nlayers ? a->nlayers : 1) * sizeof *names);
	cJSON *arr = cJSON_CreateArray();
	if (!names || !arr) {
		free(names);
		cJSON_Delete(arr);
		return NULL;
	}
	for (size_t i = 0; i < a->nlayers; i++) {
		const char *dot = strrchr(a->layers[i].name, '.');
		names[i] = dot ? dot + 1 : a->layers[i].name;
	}
	qsort(names, a->nlayers, sizeof *names, cmp_str);
	for (size_t i = 0; i < a->nlayers; i++)
		if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
			cJSON_AddItemToArray(arr, cJSON_CreateString(names[i]));
	free(names);
	return arr;
}

/* Does PEFT give every layer of a a LoRA layer under c (targeted)? 1, 0,
 * or an error. A config without target_modules covers no layer. */
static int targets_cover(const pconfig *c, const lora_adapter *a, lora_err *e)
{
	if (!c->targets)
		return a->nlayers == 0;
	for (size_t i = 0; i < a->nlayers; i++) {
		int rc = targeted(c, a->layers[i].name, e);
		if (rc <= 0)
			return rc;
	}
	return 1;
}

/* PEFT applies DoRA and lora_bias to every layer or to none. */
static int uniform_flags(const lora_adapter *a, int *dora, int *bias, lora_err *e)
{
	size_t nd = lora_adapter_dora_layers(a), nb = lora_adapter_bias_layers(a);
	*dora = nd > 0, *bias = nb > 0;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		if (nd && !l->magnitude)
			return lora_err_set(e, LORA_EINVAL,
			                    "layer '%s' has no DoRA magnitude but %zu other layers do; "
			                    "PEFT's use_dora covers every layer or none",
			                    l->name, nd);
		if (nb && !l->bias)
			return lora_err_set(e, LORA_EINVAL,
			                    "layer '%s' has no lora_B bias but %zu other layers do; "
			                    "PEFT's lora_bias covers every layer or none",
			                    l->name, nb);
	}
	return 0;
}

static int set_flag(cJSON *root, const char *key, int on, int only_if_true)
{
	if (!on && only_if_true && !cJSON_GetObjectItemCaseSensitive(root, key))
		return 0;
	return put(root, key, cJSON_CreateBool(on));
}

/* A fresh config, keys sorted as PEFT's save_pretrained sorts them. use_dora
 * and lora_bias appear only when true, so PEFT versions that predate them
 * still load plain adapters. */
static cJSON *fresh_config(const lora_adapter *a, int dora, int bias)
{
	cJSON *c = cJSON_CreateObject();
	if (!c)
		return NULL;
	cJSON_AddObjectToObject(c, "alpha_pattern");
	if (a->base_name)
		cJSON_AddStringToObject(c, "base_model_name_or_path", a->base_name);
	else
		cJSON_AddNullToObject(c, "base_model_name_or_path");
	cJSON_AddStringToObject(c, "bias", "none");
	cJSON_AddBoolToObject(c, "fan_in_fan_out", a->fan_in_fan_out);
	cJSON_AddTrueToObject(c, "inference_mode");
	cJSON_AddTrueToObject(c, "init_lora_weights");
	cJSON_AddNullToObject(c, "layers_pattern");
	cJSON_AddNullToObject(c, "layers_to_transform");
	cJSON_AddNumberToObject(c, "lora_alpha", DEFAULT_ALPHA);
	if (bias)
		cJSON_AddTrueToObject(c, "lora_bias");
	cJSON_AddNumberToObject(c, "lora_dropout", 0);
	cJSON_AddNullToObject(c, "modules_to_save");
	cJSON_AddStringToObject(c, "peft_type", "LORA");
	cJSON_AddNumberToObject(c, "r", DEFAULT_R);
	cJSON_AddObjectToObject(c, "rank_pattern");
	cJSON_AddNullToObject(c, "revision");
	cJSON_AddItemToObject(c, "target_modules", target_list(a));
	cJSON_AddNullToObject(c, "task_type");
	if (dora)
		cJSON_AddTrueToObject(c, "use_dora");
	cJSON_AddBoolToObject(c, "use_rslora", a->rslora);
	return c;
}

int lora_peft_config(const lora_adapter *a, char **text, lora_err *e)
{
	pconfig c = {0};
	cJSON *root = NULL;
	int dora, bias, rc;
	*text = NULL;
	if ((rc = uniform_flags(a, &dora, &bias, e)))
		return rc;
	if (!a->peft_config) {
		if (!(root = fresh_config(a, dora, bias)))
			goto nomem;
		if ((rc = set_ranks(root, a, e)))
			goto out;
		goto print;
	}
	if ((rc = pconfig_parse(&c, a->peft_config, strlen(a->peft_config), "the adapter's PEFT config", "text", e)))
		goto out;
	int same_ranks = ranks_agree(&c, a, e), cover = same_ranks < 0 ? 0 : targets_cover(&c, a, e);
	if (same_ranks < 0 || cover < 0) {
		rc = same_ranks < 0 ? same_ranks : cover;
		goto out;
	}
	int same_base = !a->base_name || (c.base && strcmp(c.base, a->base_name) == 0);
	if (same_ranks && cover && same_base && c.rslora == a->rslora && c.fan_in_fan_out == a->fan_in_fan_out &&
	    c.dora == dora && c.lora_bias == bias) {
		/* Still exact: hand back the imported text byte for byte. */
		if (!(*text = strdup(a->peft_config)))
			goto nomem;
		goto out;
	}
	root = c.root;
	c.root = NULL;
	/* Layers the config would not adapt get a target list that names them
	 * all, and no exclusion or layer filter left to undo it. */
	if ((!same_ranks && (rc = set_ranks(root, a, e))) ||
	    (!cover && (put(root, "target_modules", target_list(a)) || unset(root, "exclude_modules") ||
	                unset(root, "layers_to_transform") || unset(root, "layers_pattern"))) ||
	    (!same_base && put(root, "base_model_name_or_path", cJSON_CreateString(a->base_name))) ||
	    set_flag(root, "use_rslora", a->rslora, 0) || set_flag(root, "fan_in_fan_out", a->fan_in_fan_out, 0) ||
	    set_flag(root, "use_dora", dora, 1) || set_flag(root, "lora_bias", bias, 1)) {
		if (!rc)
			goto nomem;
		goto out;
	}
print:
	if (!(*text = print_config(root)))
		goto nomem;
	goto out;
nomem:
	rc = lora_err_nomem(e);
out:
	pconfig_free(&c);
	cJSON_Delete(root);
	return rc;
}

/* ---- writing ---- */

typedef struct {
	char *key;
	lora_st_spec spec;
	const float *f;         /* float payload, or NULL */
	const lora_extra *x;    /* raw payload when f is NULL */
	const lora_layer *l;
	const char *which;
	size_t cols;
} wtensor;

static int cmp_wtensor(const void *a, const void *b)
{
	return strcmp(((const wtensor *)a)->key, ((const wtensor *)b)->key);
}

/* Every value must be finite and stay finite at dtype t. */
static int check_values(const wtensor *w, lora_dtype t, lora_err *e)
{
	size_t n = w->spec.ndim == 2 ? w->spec.shape[0] * w->spec.shape[1] : w->spec.shape[0];
	for (size_t i = 0; i < n; i++) {
		float v = w->f[i];
		int fin = isfinite(v);
		if (fin && t == LORA_F16)
			fin = isfinite(lora_dtype_f16_to_f32(lora_dtype_f32_to_f16(v)));
		else if (fin && t == LORA_BF16)
			fin = isfinite(lora_dtype_bf16_to_f32(lora_dtype_f32_to_bf16(v)));
		if (fin)
			continue;
		char at[64];
		if (w->cols)
			snprintf(at, sizeof at, "[%zu,%zu]", i / w->cols, i % w->cols);
		else
			snprintf(at, sizeof at, "[%zu]", i);
		if (!isfinite(v))
			return lora_err_set(e, LORA_EINVAL, "layer '%s' %s: non-finite value at %s", w->l->name, w->which, at);
		return lora_err_set(e, LORA_EINVAL, "layer '%s' %s: value %g at %s overflows %s", w->l->name, w->which,
		                    (double)v, at, lora_dtype_name(t));
	}
	return 0;
}

static int add_w(wtensor *ws, size_t *n, const char *module, const char *suffix, const float *f,
                 const lora_layer *l, const char *which, lora_dtype t, size_t d0, size_t d1)
{
	size_t len = PREFIX_LEN + strlen(module) + strlen(suffix) + 1;
	wtensor *w = &ws[(*n)++];
	memset(w, 0, sizeof *w);
	if (!(w->key = malloc(len)))
		return -1;
	snprintf(w->key, len, "%s%s%s", PREFIX, module, suffix);
	w->spec.name = w->key;
	w->spec.dtype = t;
	w->spec.ndim = d1 ? 2 : 1;
	w->spec.shape[0] = d0;
	w->spec.shape[1] = d1;
	w->f = f, w->l = l, w->which = which, w->cols = d1;
	return 0;
}

static int write_weights(const lora_adapter *a, const char *path, lora_err *e)
{
	size_t cap = 4 * a->nlayers + a->nextras, n = 0;
	wtensor *ws = calloc(cap ? cap : 1, sizeof *ws);
	lora_st_spec *specs = calloc(cap ? cap : 1, sizeof *specs);
	unsigned char *buf = NULL;
	lora_st_writer *w = NULL;
	int rc = 0;
	static const lora_st_meta meta[] = {{"format", "pt"}};
	if (!ws || !specs)
		goto nomem;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		if (add_w(ws, &n, l->name, suffixes[T_A], l->A, l, "A", a->dtype, l->rank, l->in) ||
		    add_w(ws, &n, l->name, suffixes[T_B], l->B, l, "B", a->dtype, l->out, l->rank) ||
		    (l->magnitude &&
		     add_w(ws, &n, l->name, suffixes[T_MAG], l->magnitude, l, "magnitude", a->dtype, l->out, 0)) ||
		    (l->bias && add_w(ws, &n, l->name, suffixes[T_BIAS], l->bias, l, "bias", a->dtype, l->out, 0)))
			goto nomem;
	}
	for (size_t i = 0; i < a->nextras; i++) {
		const lora_extra *x = &a->extras[i];
		wtensor *t = &ws[n++];
		if (!x->data) {
			rc = lora_err_set(e, LORA_EINVAL, "extra '%s': no tensor data", x->name);
			goto out;
		}
		if (!(t->key = strdup(x->name)))
			goto nomem;
		t->spec.name = t->key;
		t->spec.dtype = x->dtype;
		t->spec.ndim = x->ndim;
		memcpy(t->spec.shape, x->shape, sizeof x->shape);
		t->x = x;
	}
	/* Sorted keys make the file a function of the adapter alone. */
	qsort(ws, n, sizeof *ws, cmp_wtensor);
	size_t biggest = 0;
	for (size_t i = 0; i < n; i++) {
		specs[i] = ws[i].spec;
		specs[i].name = ws[i].key;
		if (ws[i].f) {
			size_t k = ws[i].spec.shape[0] * (ws[i].spec.ndim == 2 ? ws[i].spec.shape[1] : 1);
			biggest = k > biggest ? k : biggest;
		}
	}
	if (!(buf = malloc((biggest ? biggest : 1) * lora_dtype_size(a->dtype))))
		goto nomem;
	if ((rc = lora_st_writer_open(&w, path, specs, n, meta, 1, 0, e)))
		goto out;
	for (size_t i = 0; i < n && !rc; i++) {
		if (ws[i].f) {
			size_t k = ws[i].spec.shape[0] * (ws[i].spec.ndim == 2 ? ws[i].spec.shape[1] : 1);
			lora_dtype_from_f32(buf, ws[i].f, a->dtype, k);
			rc = lora_st_writer_write(w, buf, k * lora_dtype_size(a->dtype), e);
		} else {
			rc = lora_st_writer_write(w, ws[i].x->data, ws[i].x->nbytes, e);
		}
	}
	if (rc)
		lora_st_writer_abort(w);
	else
		rc = lora_st_writer_commit(w, e);
	goto out;
nomem:
	rc = lora_err_nomem(e);
out:
	for (size_t i = 0; ws && i < n; i++)
		free(ws[i].key);
	free(ws);
	free(specs);
	free(buf);
	return rc;
}

/* An existing target may be replaced only if it is a directory holding
 * nothing but adapter files. */
/* What a replaced adapter directory may hold. */
static const char *const adapter_files[] = {LORA_PEFT_CONFIG, LORA_PEFT_WEIGHTS, NULL};

/* Remove the adapter files of dir and then dir itself. */
int lora_peft_write(const lora_adapter *a, const char *dir, int force, lora_err *e)
{
	char *text = NULL;
	const char *cfg, *weights;
	int rc;
	lora_outdir d;
	lora_outfile o;
	if (!dir || !*dir || strcmp(dir, "-") == 0)
		return lora_err_set(e, LORA_EUSAGE, "a PEFT adapter is a directory: give its name, not standard output");
	for (size_t i = 0; i < a->nlayers; i++)
		if (!a->layers[i].A || !a->layers[i].B)
			return lora_err_set(e, LORA_EINVAL, "layer '%s': no tensor data", a->layers[i].name);
	/* Everything that can be refused is refused before a file is made. */
	if ((rc = lora_peft_config(a, &text, e)))
		return rc;
	for (size_t i = 0; i < a->nlayers && !rc; i++) {
		const lora_layer *l = &a->layers[i];
		wtensor t[4] = {
			{.f = l->A, .l = l, .which = "A", .cols = l->in, .spec = {.ndim = 2, .shape = {l->rank, l->in}}},
			{.f = l->B, .l = l, .which = "B", .cols = l->rank, .spec = {.ndim = 2, .shape = {l->out, l->rank}}},
			{.f = l->magnitude, .l = l, .which = "magnitude", .spec = {.ndim = 1, .shape = {l->out}}},
			{.f = l->bias, .l = l, .which = "bias", .spec = {.ndim = 1, .shape = {l->out}}},
		};
		for (int k = 0; k < 4 && !rc; k++)
			if (t[k].f)
				rc = check_values(&t[k], a->dtype, e);
	}
	if (rc)
		goto out;
	if ((rc = lora_outdir_open(&d, dir, force, adapter_files, e)))
		goto out;
	if (!(cfg = lora_outdir_file(&d, LORA_PEFT_CONFIG)) || !(weights = lora_outdir_file(&d, LORA_PEFT_WEIGHTS))) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	if ((rc = lora_outfile_open(&o, cfg, 0, e)))
		goto fail;
	fputs(text, o.fp);
	if ((rc = lora_outfile_commit(&o, e)) || (rc = write_weights(a, weights, e)))
		goto fail;
	rc = lora_outdir_commit(&d, e);
	goto out;
fail:
	lora_outdir_abort(&d, e);
out:
	free(text);
	return rc;
}
