/* llama: the Llama-family transformer (Llama 2/3, Mistral, Qwen2, SmolLM,
 * TinyLlama) on the CPU, forward and backward, with LoRA adapters applied
 * at run time.
 *
 * config.json is read by model/config.h, the weights by model/weights.h,
 * and the numerical kernels live in model/kernels.c; test and benchmark
 * hooks are in model/llama_internal.h.
 *
 * The computation is Hugging Face's LlamaForCausalLM: embedding;
 * per block RMSNorm -> q/k/v projections (+ bias when the checkpoint has
 * one) -> RoPE (rotate-half) -> causal grouped-query attention (sliding
 * window where the config asks for it) -> o_proj -> residual -> RMSNorm ->
 * down(silu(gate(x)) * up(x)) -> residual; final RMSNorm; lm_head (or the
 * tied embedding); mean cross-entropy over the targets. Each row of a batch
 * is its own sequence with positions 0..T-1.
 *
 * An adapted linear module computes y = W x (+ b) + sum_a s_a B_a (A_a d(x))
 * over the attached adapters a, with s_a = scale_a * alpha/r (or
 * alpha/sqrt(r) for rsLoRA) and d LoRA dropout (training only, trainable
 * adapter only).
 *
 * Numbers: norms, RoPE, softmax, attention, the loss and everything LoRA
 * (factors, their gradients) are f32. The big products with the frozen
 * weights (projections, MLP, head) run in the compute type: f32 (bf16 and
 * f16 weights widen exactly, so this is the f32 model of their values) or
 * bf16 (activations rounded to bf16, weights in bf16, f32 accumulation; as
 * PyTorch's autocast does), see lora_llama_set_compute.
 *
 * Memory: the weights are read where they lie in the checkpoint's mapping,
 * in their stored dtype: no copy of the model. lora_llama_plan sizes one
 * activation arena for a batch shape; forward and backward allocate
 * nothing. Attention keeps per row and head only the log-sum-exp and
 * recomputes probabilities block by block in backward, so activation memory
 * grows linearly with the sequence length. Gradients exist only for the
 * trainable adapter's factors, in one arena.
 *
 * Threads: everything runs on the pool set by lora_blas_set_threads. */
#ifndef LORA_MODEL_LLAMA_H
#define LORA_MODEL_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "core/adapter.h"
#include "core/err.h"
#include "io/ckpt.h"
#include "model/config.h"

typedef struct lora_llama lora_llama;

/* Build the model from an open checkpoint with config.json beside it.
 * Every tensor the config implies must be present with that shape and a
 * float dtype (errors name the tensor and both shapes); q/k/v/o and MLP
 * biases are used when present. The weights stay in ck: ck must stay open
 * until lora_llama_free. Computes in f32 until lora_llama_set_compute. */
int lora_llama_open(lora_llama **out, const lora_ckpt *ck, lora_err *e);
void lora_llama_free(lora_llama *m);
const lora_config *lora_llama_get_config(const lora_llama *m);
/* Bytes of the checkpoint's tensors the model reads (its weights' share of
 * resident memory). */
size_t lora_llama_weight_bytes(const lora_llama *m);
/* Bytes of the activation arena (0 before plan). */
size_t lora_llama_activation_bytes(const lora_llama *m);

typedef enum { LORA_LLAMA_AUTO, LORA_LLAMA_F32, LORA_LLAMA_BF16 } lora_llama_compute;
/* The compute type of the big products. AUTO: bf16 when every weight
 * matrix is bf16 and the CPU multiplies bf16 natively (AVX512-BF16 or
 * AMX, lora_blas_bf16), else f32. BF16 where oneDNN cannot multiply bf16
 * at all is an error saying so. Drops the plan when the type changes. */
int lora_llama_set_compute(lora_llama *m, lora_llama_compute mode, lora_err *e);
/* The type in effect: LORA_F32 or LORA_BF16. */
lora_dtype lora_llama_compute_dtype(const lora_llama *m);
/* One line for a tool to print before work starts, e.g. "compute bf16
 * (oneDNN avx512_core_amx); weights 2.20 GB of bf16 read in place;
 * activations 1.31 GiB" (the last part once planned). */
void lora_llama_describe(const lora_llama *m, char *buf, size_t n);

/* Apply adapter a at run time with user scale k (its layers' updates are
 * multiplied by k * alpha/r). Every layer must name a linear module of a
 * block ("model.layers.N.self_attn.q_proj", an optional "base_model.model."
 * prefix is accepted) with the module's exact out x in; otherwise the
 * error names the layer (and both shapes). what names a in messages. The
 * model keeps pointers to a's factors: a must outlive the model, and
 * changes to them (an optimiser step) are seen by the next forward. At most
 * one adapter is trainable: backward fills gradients for its factors.
 * Attach before lora_llama_plan. */
int lora_llama_attach(lora_llama *m, const lora_adapter *a, double k, int trainable, const char *what,
                      lora_err *e);

/* LoRA dropout for the trainable adapter in training forwards: each input
 * element of each adapted module is zeroed with probability p and the rest
 * scaled by 1/(1-p); the mask is a hash of (seed, block, module, position,
 * feature), so forward and backward agree without storing it and a run is
 * reproducible. Change seed every step. p = 0 disables. */
void lora_llama_set_dropout(lora_llama *m, float p, uint64_t seed);

enum {
	LORA_LLAMA_TRAIN = 1,     /* keep what backward needs */
	LORA_LLAMA_RECOMPUTE = 2, /* with TRAIN: keep only block inputs; recompute each block in backward */
};
/* Size the activation arena for batches of B rows of T tokens (flags
 * above). Replaces an earlier plan. */
int lora_llama_plan(lora_llama *m, size_t B, size_t T, int flags, lora_err *e);

/* Forward over inputs (B,T). With targets (B,T) (a negative target is
 * ignored): *loss = mean cross-entropy over the targets used, *ntargets
 * their count (either may be NULL). Without targets: only the logits of the
 * last position of each row are computed (lora_llama_logits). A token id
 * out of range is an error naming its row and position. In a TRAIN plan
 * this also prepares backward: the gradient of the loss at the final norm
 * is computed chunk by chunk with the logits, so no B*T x vocab matrix is
 * ever held. */
int lora_llama_forward(lora_llama *m, const int32_t *inputs, const int32_t *targets, double *loss,
                       size_t *ntargets, lora_err *e);
/* Logits (B, vocab) of the last position of each row, after a forward
 * without targets or a decode step. */
const float *lora_llama_logits(const lora_llama *m);

/* Incremental decoding, for generation. lora_llama_plan_decode replaces
 * the plan with one for B rows of up to maxT positions plus a key/value
 * cache of every block. lora_llama_decode then feeds tokens (B, n) at
 * positions pos .. pos+n-1 of each row (pos + n <= maxT; positions before
 * pos must have been fed already): their keys and values join the cache,
 * they attend over positions 0 .. their own, and the logits of position
 * pos+n-1 of each row are left in lora_llama_logits. Feeding a prompt at
 * once and then one token at a time gives the logits a full forward of
 * the whole sequence gives. Adapters apply as in forward (no dropout). */
int lora_llama_plan_decode(lora_llama *m, size_t B, size_t maxT, lora_err *e);
int lora_llama_decode(lora_llama *m, const int32_t *tokens, size_t n, size_t pos, lora_err *e);

/* The gradient of the next TRAIN forwards is that of the summed loss over
 * their targets divided by n, not the mean over each batch's own targets:
 * with n the target count of every micro-batch of an optimizer step, the
 * accumulated gradient is that of the mean over all of them, as Hugging
 * Face's Trainer takes it (num_items_in_batch) when batches hold different
 * counts of unmasked labels. 0 restores the mean per batch. */
void lora_llama_set_loss_norm(lora_llama *m, size_t n);
/* Set the trainable adapter's gradients to zero. */
void lora_llama_zero_grad(lora_llama *m);
/* Accumulate (+=) d loss / d factors of the trainable adapter, for the
 * last forward (TRAIN plan, with targets). */
int lora_llama_backward(lora_llama *m, lora_err *e);
/* Gradient buffers of layer i of the trainable adapter (same shapes as its
 * A and B); 0, or -1 if there is no such layer. */
int lora_llama_grad(const lora_llama *m, size_t i, float **dA, float **dB);

#endif
