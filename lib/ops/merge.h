/* merge: fold adapters into a checkpoint, streaming tensor by tensor.
 *
 * W' = W + sum_i k_i * s_i * B_i A_i for every adapted weight (k_i the
 * user's scale, negated by subtract; s_i the adapter's alpha/r), computed
 * in f32 and rounded once to the output dtype. DoRA layers then rescale
 * each output row to the magnitude vector; lora_B biases are added to the
 * module's bias. Everything is matched and shape-checked before a byte is
 * written; the output appears only when complete. */
#ifndef LORA_MERGE_H
#define LORA_MERGE_H

#include <stdint.h>

#include "core/adapter.h"
#include "io/ckpt.h"
#include "io/gguf.h"

/* A GGUF model as the output: one file, tensors named and laid out as
 * llama.cpp's convert_hf_to_gguf writes them (io/gguflora.h), q_proj and
 * k_proj rows permuted for arch llama, 1-D tensors and norms in f32, the
 * matrices in type (F32, F16, BF16 or Q8_0, which falls back to F16 for a
 * matrix whose rows are not whole blocks; -1: each its own dtype). */
typedef struct {
	const lora_gguf_kvspec *kv; /* the header: hyperparameters, tokenizer */
	size_t nkv;
	const char *extra;          /* an f32 vector written before the model's tensors */
	const float *extra_data;    /* (rope_freqs.weight), or NULL */
	size_t extra_n;
	const char *arch;
	size_t n_heads, n_kv_heads;
	int type;
} lora_merge_gguf;

typedef struct {
	const lora_adapter *a;
	const char *path; /* for messages */
	double scale;
} lora_merge_input;

typedef struct {
	int subtract;
	int ignore_unknown; /* skip adapter tensors that are not linear LoRA factors */
	int force;          /* replace an existing output */
	int dtype;          /* -1: keep each tensor's dtype; else a float lora_dtype */
	const lora_merge_gguf *gguf; /* write this GGUF model at out instead (dtype unused) */
	/* Called after each tensor (may be NULL): tensors and bytes done/total. */
	void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes, uint64_t total_bytes);
	void *ctx;
} lora_merge_opts;

/* Load the adapters of "PATH[:SCALE]" specs in order as merge inputs
 * (path "standard input" for "-"). Free with lora_merge_inputs_free, also
 * after an error. */
int lora_merge_inputs_load(lora_merge_input **in, char *const *specs, size_t n, lora_err *e);
void lora_merge_inputs_free(lora_merge_input *in, size_t n);

/* Merge into out. A model given as one .safetensors file is written as one
 * file; a directory or an index is written as a directory with the same
 * shard layout, an updated index, and every other file copied. Returns 0 or
 * LORA_E*; on error nothing is left at out. *merged (may be NULL) receives
 * the number of tensors changed. */
int lora_merge_checkpoint(const lora_ckpt *m, const lora_merge_input *in, size_t n, const char *out,
                          const lora_merge_opts *o, size_t *merged, lora_err *e);

#endif
