/* llama_internal: test and benchmark hooks of the transformer
 * (model/llama.h). Used by tests/unit, tests/tools and bench only; no tool
 * relies on them. */
#ifndef LORA_MODEL_LLAMA_INTERNAL_H
#define LORA_MODEL_LLAMA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/llama.h"

/* Parameters of the frozen model. */
size_t lora_llama_param_count(const lora_llama *m);

/* Model FLOPs per token of one forward (training = 0) or forward and
 * backward (training = 1) at sequence length T: the multiply-adds (x2) of
 * every matrix product the computation needs once (projections, LoRA, the
 * head, causal attention counted over the keys each query sees), excluding
 * what recomputation repeats. Backward counts input gradients only where
 * some trainable factor lies below, and the factor gradients. */
double lora_llama_flops_per_token(const lora_llama *m, size_t T, int training);

/* A full forward over inputs (B, T) of a plan without TRAIN (not a decode
 * plan), writing the logits of every position to logits (B, T, vocab):
 * the reference that cached decoding is checked against. */
int lora_llama_forward_logits(lora_llama *m, const int32_t *inputs, float *logits, lora_err *e);

#endif
