/* targets: which modules of a model an adapter applies to.
 *
 * Three ways to say it, as PEFT does: a list of name suffixes (a module
 * matches a key when its name equals the key or ends with "." + key),
 * "all-linear" (every 2-D weight but the embeddings and the output head),
 * or a POSIX extended regex that must match the whole module name. A layer
 * list ("0-3,7") further restricts to transformer blocks by index: the
 * first all-digit component of the module name. */
#ifndef LORA_TARGETS_H
#define LORA_TARGETS_H

#include <regex.h>
#include <stddef.h>

#include "core/err.h"

typedef struct {
	char **keys;   /* suffix keys, or NULL */
	size_t nkeys;
	int all_linear;
	int has_regex;
	regex_t re;
	unsigned char *layers; /* layers[i] != 0 selects block i; NULL = all */
	size_t nlayers;
} lora_targets;

/* Parse a comma-separated suffix list or "all-linear" (list may be NULL when
 * regex is given). regex, if non-NULL, replaces the list. */
int lora_targets_init(lora_targets *t, const char *list, const char *regex, lora_err *e);
/* Restrict to blocks in spec, e.g. "0-3,7". */
int lora_targets_set_layers(lora_targets *t, const char *spec, lora_err *e);
void lora_targets_free(lora_targets *t);
/* 1 if the module name is selected by name and layer (shape not checked). */
int lora_targets_match(const lora_targets *t, const char *module);
/* Block index of a module name, or -1 if it has none. */
long lora_targets_module_layer(const char *module);

#endif
