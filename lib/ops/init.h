/* init: build a fresh adapter for a model's target modules and initialise
 * its factors (lora-init, and lora-train when no adapter is given). */
#ifndef LORA_INIT_H
#define LORA_INIT_H

#include <stdint.h>

#include "core/adapter.h"
#include "io/ckpt.h"
#include "ops/targets.h"

typedef enum { LORA_INIT_KAIMING, LORA_INIT_GAUSSIAN, LORA_INIT_ZEROS } lora_init_kind;

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
