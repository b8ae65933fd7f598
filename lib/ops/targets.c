#include "ops/targets.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lora_targets_init(lora_targets *t, const char *list, const char *regex, lora_err *e)
{
	memset(t, 0, sizeof *t);
	if (regex) {
		int rc = lora_pattern_compile(&t->re, NULL, regex, NULL, LORA_PATTERN_FULL, "--target-regex", e);
		if (rc == LORA_EINVAL && e)
			e->code = rc = LORA_EUSAGE; /* it came from the command line */
		return rc;
	}
	if (!list || !*list)
		return lora_err_set(e, LORA_EUSAGE, "empty target list");
	if (strcmp(list, "all-linear") == 0) {
		t->all_linear = 1;
		return 0;
	}
	const char *p = list;
	while (*p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (len == 0)
			return lora_err_set(e, LORA_EUSAGE, "target list '%s' has an empty entry", list);
		char **k = realloc(t->keys, (t->nkeys + 1) * sizeof *k);
		if (!k)
			return lora_err_nomem(e);
		t->keys = k;
		if (!(k[t->nkeys] = strndup(p, len)))
			return lora_err_nomem(e);
		t->nkeys++;
		p += len + (c ? 1 : 0);
		if (c && !*p)
			return lora_err_set(e, LORA_EUSAGE, "target list '%s' has an empty entry", list);
	}
	return 0;
}

int lora_targets_set_layers(lora_targets *t, const char *spec, lora_err *e)
{
	const char *p = spec;
	while (1) {
		char *end;
		errno = 0;
		if (!isdigit((unsigned char)*p))
			goto bad;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		if (*end == '-') {
			if (!isdigit((unsigned char)end[1]))
				goto bad;
			hi = strtoul(end + 1, &end, 10);
		}
		if (errno || hi < lo || hi > 100000)
			goto bad;
		if (hi >= t->nlayers) {
			unsigned char *l = realloc(t->layers, hi + 1);
			if (!l)
				return lora_err_nomem(e);
			memset(l + t->nlayers, 0, hi + 1 - t->nlayers);
			t->layers = l;
			t->nlayers = hi + 1;
		}
		memset(t->layers + lo, 1, hi - lo + 1);
		if (*end == 0)
			return 0;
		if (*end != ',')
			goto bad;
		p = end + 1;
	}
bad:
	return lora_err_set(e, LORA_EUSAGE, "--layers '%s': expected a list like 0-3,7", spec);
}

void lora_targets_free(lora_targets *t)
{
	for (size_t i = 0; i < t->nkeys; i++)
		free(t->keys[i]);
	free(t->keys);
	free(t->layers);
	lora_pattern_free(t->re);
	memset(t, 0, sizeof *t);
}

long lora_targets_module_layer(const char *module)
{
	const char *p = module;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		size_t i = 0;
		while (i < len && isdigit((unsigned char)p[i]))
			i++;
		if (len > 0 && i == len && len < 10)
			return strtol(p, NULL, 10);
		if (!dot)
			break;
		p = dot + 1;
	}
	return -1;
}

static int ends_with_key(const char *name, const char *key)
{
	size_t n = strlen(name), k = strlen(key);
	return n == k ? strcmp(name, key) == 0
	              : n > k && name[n - k - 1] == '.' && strcmp(name + n - k, key) == 0;
}

/* Embeddings and the output head are not "linear" in PEFT's all-linear. */
static int is_embedding_or_head(const char *module)
{
	const char *last = strrchr(module, '.');
	last = last ? last + 1 : module;
	return strstr(module, "embed") || strcmp(last, "lm_head") == 0 || strcmp(last, "wte") == 0 ||
	       strcmp(last, "wpe") == 0 || strcmp(last, "output") == 0;
}

int lora_targets_match(const lora_targets *t, const char *module, lora_err *e)
{
	int ok = 0;
	if (t->re)
		ok = lora_pattern_match(t->re, module, e);
	else if (t->all_linear)
		ok = !is_embedding_or_head(module);
	else
		for (size_t i = 0; i < t->nkeys && !ok; i++)
			ok = ends_with_key(module, t->keys[i]);
	if (ok == 1 && t->layers) {
		long l = lora_targets_module_layer(module);
		ok = l >= 0 && (size_t)l < t->nlayers && t->layers[l];
	}
	return ok;
}
