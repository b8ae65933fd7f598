/* combine: several adapters as one, without a model (lora-merge --combine).
 *
 * Adapter i contributes w_i * s_i * B_i A_i to every layer it holds
 * (w_i its weight, s_i its scaling). */
#ifndef LORA_COMBINE_H
#define LORA_COMBINE_H

#include <stddef.h>

#include "core/adapter.h"
#include "core/err.h"
#include "ops/merge.h"
#include "ops/svd.h"

/* Concatenate n >= 1 adapters into one exact adapter. Every layer name held
 * by any input becomes one output layer (in order of first appearance) with
 * rank = sum of the ranks of the inputs holding it, B = [B_1 B_2 ...]
 * (columns side by side), A = [w_1 s_1 A_1; w_2 s_2 A_2; ...] (rows
 * stacked) and alpha = rank, rslora off (scaling 1): its delta is
 * sum_i w_i s_i B_i A_i up to the f32 rounding of w_i s_i A_i. lora_B
 * biases are summed as sum_i w_i s_i bias_i.
 *
 * weights may be NULL (all 1); names[i] (may be NULL) names input i in
 * errors, else "adapter i+1". Errors: a layer whose shape differs between
 * inputs, fan_in_fan_out disagreeing, different base-model fingerprints, a
 * DoRA layer (magnitude vector: not linear), extra tensors (embedding LoRA,
 * modules_to_save: cannot be summed). The output takes the first input's
 * dtype, base model and PEFT-free metadata; targets are the union.
 * Caller frees *out. */
int lora_combine_cat(lora_adapter **out, lora_adapter *const *in, const double *weights,
                     const char *const *names, size_t n, lora_err *e);

/* lora_combine_cat followed by lora_svd_rerank with o's rank rule: the
 * exact SVD combination (optimal rank-K approximation of the weighted sum,
 * per layer). rep as for lora_svd_rerank (may be NULL). Caller frees *out. */
int lora_combine_svd(lora_adapter **out, lora_adapter *const *in, const double *weights,
                     const char *const *names, size_t n, const lora_svd_opts *o,
                     lora_svd_report *rep, lora_err *e);

/* lora-merge --combine: the inputs (their scales as weights, their paths
 * as names) concatenated (svd 0), or re-ranked to rank, or by energy when
 * rank is 0, at the first input's dtype. Caller frees *out. */
int lora_combine_inputs(lora_adapter **out, const lora_merge_input *in, size_t n, int svd, size_t rank,
                        double energy, lora_err *e);

#endif
