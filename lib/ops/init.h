/* init: build a fresh adapter for a model's target modules and initialise
 * its factors: the one way lora-init and lora-train (when given no adapter)
 * make one, with one set of defaults.
 *
 * The defaults are PEFT's LoraConfig (r 8, lora_alpha 8, so the update
 * starts with scale alpha/r = 1: the LoRA paper's "set alpha to the first r
 * tried"), the paper's targets q_proj and v_proj, PEFT's Kaiming-uniform A,
 * and seed 42, Hugging Face's and axolotl's default seed: lora-train's
 * configuration keys take these as their defaults, so `lora-init | lora-train`
 * and lora-train alone start from the same adapter. */
#ifndef LORA_INIT_H
#define LORA_INIT_H

#include <stdint.h>

#include "core/adapter.h"
#include "io/ckpt.h"
#include "ops/targets.h"

typedef enum { LORA_INIT_KAIMING, LORA_INIT_GAUSSIAN, LORA_INIT_ZEROS } lora_init_kind;

#define LORA_INIT_RANK 8
#define LORA_INIT_ALPHA 8
#define LORA_INIT_TARGETS "q_proj,v_proj"
#define LORA_INIT_SEED 42

typedef struct {
	size_t rank;          /* LORA_INIT_RANK */
	double alpha;         /* LORA_INIT_ALPHA */
	const char *targets;  /* suffix list or "all-linear"; LORA_INIT_TARGETS */
	const char *regex;    /* replaces targets when not NULL */
	const char *layers;   /* only these blocks ("0-3,7"), or NULL */
	lora_init_kind kind;  /* LORA_INIT_KAIMING */
	uint64_t seed;        /* LORA_INIT_SEED */
	int rslora;           /* scale by alpha/sqrt(r) */
	lora_dtype dtype;     /* storage dtype: f32 */
	const char *tool;     /* "lora-init 0.1.0": recorded as provenance, with the
	                         model, init and seed; NULL: no provenance */
} lora_init_opts;

/* The defaults above. */
void lora_init_defaults(lora_init_opts *o);

/* A new adapter: a layer for every module of m that o selects
 * (lora_init_from_model), or, with m NULL, one per shape spec
 * "NAME=OUTxIN" (a trailing ".weight" of NAME is dropped); the targets
 * recorded, the factors initialised (lora_init_weights). A bad spec or one
 * given twice is LORA_EUSAGE naming it. Caller frees *out. */
int lora_init_new(lora_adapter **out, const lora_ckpt *m, char *const *shapes, size_t nshapes,
                  const lora_init_opts *o, lora_err *e);

/* Record in a what t selects, as given: the regex when there is one, else
 * each suffix key, and "all-linear". */
int lora_init_record_targets(lora_adapter *a, const lora_targets *t, const char *regex, lora_err *e);

/* Parse "kaiming", "gaussian", "zeros"; 0 or -1. */
int lora_init_parse(const char *s, lora_init_kind *k);
const char *lora_init_name(lora_init_kind k);

/* Add a layer to a for every module of m selected by t: a module is a
 * tensor name ending in ".weight" minus that suffix. A selected tensor that
 * is not 2-D, or whose smaller side is below rank, is an error naming it;
 * so is selecting nothing. Records the model's name and fingerprint. */
int lora_init_from_model(lora_adapter *a, const lora_ckpt *m, const lora_targets *t,
                         size_t rank, double alpha, lora_err *e);

/* Fill every layer's factors. kaiming: A ~ U(-1/sqrt(in), 1/sqrt(in)), PEFT's
 * kaiming_uniform_(a=sqrt(5)); gaussian: A ~ N(0, (1/rank)^2), PEFT's
 * normal_(std=1/r); zeros: A = 0. B = 0 always, so training starts from the
 * base model exactly. Each layer draws from its own stream seeded by seed
 * and the layer name, so a layer's values do not depend on which other
 * layers are present. */
void lora_init_weights(lora_adapter *a, lora_init_kind k, uint64_t seed);

#endif
