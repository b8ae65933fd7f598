/* kernels: the numerical kernels of the transformer, forward and backward.
 *
 * INTERNAL HEADER: used by model/llama.c and the unit tests
 * (tests/unit/test_kernels.c) only; not part of any public contract.
 *
 * Shape letters of the comments:
 *   B    rows of a batch (independent sequences)
 *   T    positions per row (sequence length)
 *   N    rows of activations, B*T (or any count of independent rows)
 *   C    model width (hidden_size)
 *   F    MLP width (intermediate_size)
 *   V    vocabulary size
 *   NH   query heads          NKV  key/value heads (NH is a multiple)
 *   HS   head size (head_dim, even)
 *   QD   NH*HS                KVD  NKV*HS
 *   QKV  QD + 2*KVD: one row of packed q | k | v
 *   r    LoRA rank            in, out: a linear module's widths (y = W x)
 * Arrays are row-major float32: "(N, QKV)" is N rows of QKV floats, and a
 * "ldy" argument is the row stride of y when y is columns of a wider array.
 *
 * Conventions (llm.c's): <op>_forward / <op>_backward; outputs first, then
 * inputs, then sizes; backward kernels accumulate (+=) into the gradients
 * they produce, except where the comment says "written" or "in place".
 * Elementwise kernels are plain loops threaded with OpenMP; the products go
 * through math/blas. */
#ifndef LORA_MODEL_KERNELS_H
#define LORA_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "model/config.h"

// out (N, C) = the rows wte[inp[i]] widened to f32; inp (N) token ids, each
// < V; wte (V, C) of dtype dt (f32, f16 or bf16), any alignment
void lora_kernels_embedding_forward(float *out, const int32_t *inp, const void *wte, lora_dtype dt, size_t N,
                                    size_t C);

// out (N, C) = inp * rstd * weight, rstd (N) = 1 / sqrt(mean(inp^2) + eps)
// (rstd may be NULL); inp (N, C), weight (C)
void lora_kernels_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, float eps,
                                  size_t N, size_t C);
// out (N, C): the forward's out again from its rstd (N); inp (N, C), weight (C)
void lora_kernels_rmsnorm_recompute(float *out, const float *inp, const float *weight, const float *rstd, size_t N,
                                    size_t C);
// dinp (N, C) += d/dinp; dout (N, C), inp (N, C), weight (C), rstd (N) of the forward
void lora_kernels_rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                                   const float *rstd, size_t N, size_t C);

// cosv, sinv (T, HS/2): the angles of positions 0..T-1 as Hugging Face
// computes them in float32 (inv_freq from rope_theta and the scaling rule of c)
void lora_kernels_rope_tables(float *cosv, float *sinv, const lora_config *c, size_t T);
// Rotate-half RoPE, in place, on the first nrot heads of HS of each row of
// qkv (B*T, ldq) (q's then k's heads: nrot = NH + NKV), row t of each batch
// row at position pos0 + t; cosv, sinv (pos0 + T, HS/2)
void lora_kernels_rope_forward(float *qkv, const float *cosv, const float *sinv, size_t pos0, size_t B, size_t T,
                               size_t nrot, size_t HS, size_t ldq);
// In place: dqkv (B*T, ldq), the gradient at the rotated values, becomes the
// gradient at the values before rotation (the transposed rotation)
void lora_kernels_rope_backward(float *dqkv, const float *cosv, const float *sinv, size_t pos0, size_t B, size_t T,
                                size_t nrot, size_t HS, size_t ldq);

// Floats of scratch per thread that the attention kernels need for T
// positions (for decode: maxT) of NH query heads over NKV key/value heads
// of size HS, with q, k and v of type dt.
size_t lora_kernels_attention_scratch(size_t T, size_t NH, size_t NKV, size_t HS, lora_dtype dt);
// Causal grouped-query attention with scale 1/sqrt(HS), over a sliding
// window of the last `window` keys (0: all): att (B*T, QD) = softmax(q k^T)
// v per head; lse (B, NH, T) the log-sum-exp of each row of scores, all
// that backward keeps of the probabilities; qkv (B*T, QKV) after RoPE, of
// type dt (f32, or bf16: the products take bf16 operands, the
// probabilities rounded to bf16, and accumulate in f32) (query head h uses
// key/value head h / (NH/NKV)); scratch (nthr,
// lora_kernels_attention_scratch(T, NH, NKV, HS, dt)); nthr threads
void lora_kernels_attention_forward(float *att, float *lse, float *scratch, const void *qkv, lora_dtype dt, size_t B,
                                    size_t T, size_t NH, size_t NKV, size_t HS, size_t window, int nthr);
// dqkv (B*T, QKV) += d/dqkv, the probabilities recomputed from lse; Dsum
// (B, NH, T) and scratch (as in forward) are work space; datt (B*T, QD) the
// gradient at att; att (B*T, QD), lse (B, NH, T), qkv (B*T, QKV) of type
// dt as the forward left them; in bf16 the gradients at the outputs and at
// the scores are rounded to bf16 for the products
void lora_kernels_attention_backward(float *dqkv, float *Dsum, float *scratch, const float *datt, const float *att,
                                     const float *lse, const void *qkv, lora_dtype dt, size_t B, size_t T, size_t NH,
                                     size_t NKV, size_t HS, size_t window, int nthr);
// Attention of T new positions pos..pos+T-1 of each row over every cached
// position up to each: their keys and values are first stored into the
// caches. att (B*T, QD); kc, vc (B, maxT, KVD) of type dt; scratch (nthr,
// lora_kernels_attention_scratch(maxT, NH, NKV, HS, dt)); qkv (B*T, QKV)
// of type dt after RoPE
void lora_kernels_attention_decode(float *att, void *kc, void *vc, float *scratch, const void *qkv, lora_dtype dt,
                                   size_t pos, size_t maxT, size_t B, size_t T, size_t NH, size_t NKV, size_t HS,
                                   size_t window, int nthr);

// h (N, F) = silu(gate) * up; gu (N, 2F) of type dt (f32 or bf16) holds
// gate then up in each row; the result goes to h (f32) and/or h16 (bf16),
// either may be NULL
void lora_kernels_swiglu_forward(float *h, uint16_t *h16, const void *gu, lora_dtype dt, size_t N, size_t F);
// dgu (N, 2F) written, not accumulated: it is the only path to gate and up,
// and skipping a memset of (N, 2F) per block pays; in f32 to dgu and/or in
// bf16 to dgu16, either may be NULL. dh (N, F), gu (N, 2F) of type dt
void lora_kernels_swiglu_backward(float *dgu, uint16_t *dgu16, const float *dh, const void *gu, lora_dtype dt,
                                  size_t N, size_t F);

// rowloss (N) = cross-entropy of each row of logits (N, V) against targets
// (N) (a negative target: loss 0). With gscale != 0 the backward is fused
// in: logits are written in place with gscale * (softmax - onehot(target))
// (zero for an ignored row), so the head never holds a second (N, V) array
void lora_kernels_crossentropy_forward(double *rowloss, float *logits, const int32_t *targets, float gscale,
                                       size_t N, size_t V);

// y (N, ldy) += s * bias (n) on the first n columns of each row
void lora_kernels_bias_forward(float *y, const float *bias, float s, size_t N, size_t n, size_t ldy);

// LoRA dropout, mask from a hash of (key, element index): the same key gives
// the same mask in forward and backward without storing it.
// The key of one stream (block and module) of a seed.
uint64_t lora_kernels_dropout_key(uint64_t seed, uint64_t stream);
// out (N, C) = x (N, C) * mask / (1 - p), mask 0 with probability p
void lora_kernels_dropout_forward(float *out, const float *x, uint64_t key, float p, size_t N, size_t C);
// dx (N, C) += dout (N, C) * mask / (1 - p)
void lora_kernels_dropout_backward(float *dx, const float *dout, uint64_t key, float p, size_t N, size_t C);

// One adapter layer: y (N, ldy) += s * (x A^T) B^T (+ s * bias when not
// NULL); u (N, r) is left holding x A^T. x (N, in), A (r, in), B (out, r),
// bias (out)
void lora_kernels_lora_forward(float *y, float *u, const float *x, const float *A, const float *B,
                               const float *bias, float s, size_t N, size_t in, size_t out, size_t r, size_t ldy);
// Its backward: dA (r, in) += s B^T dy^T x, dB (out, r) += s dy^T x A^T,
// dx (N, in) += s dy B A; any of the three may be NULL (dA and dB go
// together). du (N, r) is written with s * dy B (callers that apply a
// dropout mask to dx take it from there); u (N, r) is scratch.
// dy (N, ldy), x (N, in), A (r, in), B (out, r)
void lora_kernels_lora_backward(float *dx, float *dA, float *dB, float *du, float *u, const float *dy,
                                const float *x, const float *A, const float *B, float s, size_t N, size_t in,
                                size_t out, size_t r, size_t ldy);

#endif
