/* load: open an adapter whatever form it comes in, for every tool that
 * takes one: a .lora file, standard input ("-"), a PEFT adapter directory
 * (adapter_config.json + adapter_model.safetensors), or a bare
 * adapter_model.safetensors with its adapter_config.json beside it. */
#ifndef LORA_LOAD_H
#define LORA_LOAD_H

#include "core/adapter.h"
#include "core/err.h"

/* Load an adapter with its tensors: "-" is a .lora on standard input; a
 * directory is a PEFT adapter (lora_peft_read); a file with the .lora magic
 * is a .lora; any other *.safetensors file is PEFT weights with
 * adapter_config.json beside them. Caller frees *out. */
int lora_load_adapter(lora_adapter **out, const char *path, lora_err *e);

/* Split "PATH[:SCALE]" into path (caller frees) and scale (default 1).
 * The suffix after the last ':' counts as a scale only if it is a finite
 * number, so paths containing ':' still work. */
int lora_load_spec(const char *spec, char **path, double *scale, lora_err *e);

#endif
