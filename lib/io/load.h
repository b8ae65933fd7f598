/* load: open an adapter whatever form it comes in, for every tool that
 * takes one: a .lora file, standard input ("-"), a PEFT adapter directory
 * (adapter_config.json + adapter_model.safetensors), a bare
 * adapter_model.safetensors with its adapter_config.json beside it, or a
 * GGUF LoRA adapter (its q/k rows put back in Hugging Face's order with the
 * head counts the file records); and the
 * one rule that tells these from a checkpoint, which lora-inspect follows
 * too. */
#ifndef LORA_LOAD_H
#define LORA_LOAD_H

#include "core/adapter.h"
#include "core/err.h"

typedef enum {
	LORA_LOAD_LORA, /* a .lora file or stream */
	LORA_LOAD_PEFT, /* a PEFT adapter directory, or its weights file */
	LORA_LOAD_GGUF, /* a GGUF LoRA adapter (llama.cpp's) */
	LORA_LOAD_CKPT, /* anything else: a checkpoint file, index or directory */
} lora_load_kind;

/* What path holds, in this order:
 *   "-"                              .lora on standard input
 *   a directory                      PEFT if it holds adapter_config.json, else CKPT
 *   not a regular file (a pipe)      .lora, streamed: nothing is read ahead
 *   a file starting with the magic   .lora, whatever its name
 *   a file named *.lora              .lora (the reader names what is wrong)
 *   a file starting with "GGUF"      GGUF
 *   a file named *.gguf              GGUF (the reader names what is wrong)
 *   a file named *.safetensors       PEFT if adapter_config.json is beside it
 *   any other file                   CKPT
 * Returns 0, or LORA_EIO naming path when it cannot be examined. */
int lora_load_kind_of(const char *path, lora_load_kind *kind, lora_err *e);

/* Load an adapter with its tensors, by lora_load_kind_of. A path of kind
 * CKPT is not an adapter: a directory or a *.safetensors file goes to the
 * PEFT reader and anything else to the .lora reader, so that the error
 * says what is missing. Caller frees *out. */
int lora_load_adapter(lora_adapter **out, const char *path, lora_err *e);

/* Split "PATH[:SCALE]" into path (caller frees) and scale (default 1).
 * The suffix after the last ':' counts as a scale only if it is a finite
 * number, so paths containing ':' still work. */
int lora_load_spec(const char *spec, char **path, double *scale, lora_err *e);

#endif
