/* targets: which modules of a model an adapter applies to.
 *
 * Three ways to say it, as PEFT does: a list of name suffixes (a module
 * matches a key when its name equals the key or ends with "." + key),
 * "all-linear" (every 2-D weight but the embeddings and the output head),
 * or a Python regex that must match the whole module name (re.fullmatch, as
 * PEFT matches a string target_modules; read and bounded by core/pattern). A layer
 * list ("0-3,7") further restricts to transformer blocks by index: the
 * first all-digit component of the module name. */
#ifndef LORA_TARGETS_H
#define LORA_TARGETS_H

#include <stddef.h>

#include "core/err.h"
#include "core/pattern.h"

typedef struct {
	char **keys;   /* suffix keys, or NULL */
	size_t nkeys;
	int all_linear;
	lora_pattern *re; /* the regex, or NULL */
	unsigned char *layers; /* layers[i] != 0 selects block i; NULL = all */
	size_t nlayers;
} lora_targets;

/* Parse a comma-separated suffix list or "all-linear" (list may be NULL when
 * regex is given). regex, if non-NULL, replaces the list; one that does not
 * compile is a usage error (LORA_EUSAGE) naming --target-regex. */
int lora_targets_init(lora_targets *t, const char *list, const char *regex, lora_err *e);
/* Restrict to blocks in spec, e.g. "0-3,7". */
int lora_targets_set_layers(lora_targets *t, const char *spec, lora_err *e);
void lora_targets_free(lora_targets *t);
/* 1 if the module name is selected by name and layer (shape not checked),
 * 0 if not, or an error from matching the regex (a bound passed). */
int lora_targets_match(const lora_targets *t, const char *module, lora_err *e);
/* Block index of a module name, or -1 if it has none. */
long lora_targets_module_layer(const char *module);

#endif
