/* optim: the optimizers (AdamW, SGD with momentum), gradient clipping by
 * global norm, and learning-rate schedules with linear warmup.
 *
 * The trainable parameters live in one flat float arena of n values; the
 * optimizer keeps its state for that arena in one allocation per buffer.
 * Every elementwise loop runs over fixed blocks of elements with OpenMP, so
 * each value is computed by the same instructions whatever the thread count:
 * results are bit-identical with 1 thread or 64. Per-element arithmetic is
 * done in double and rounded to float once; the state buffers are float.
 *
 * AdamW (torch.optim.AdamW, amsgrad=False), at step t = 1, 2, ...:
 *     p <- p * (1 - lr*wd)                  decoupled weight decay
 *     m <- b1*m + (1-b1)*g
 *     v <- b2*v + (1-b2)*g^2
 *     mhat = m / (1 - b1^t),  vhat = v / (1 - b2^t)
 *     p <- p - lr * mhat / (sqrt(vhat) + eps)
 * (torch writes the last line as p -= (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps);
 * the two are the same expression.) m and v start at zero.
 *
 * SGD (torch.optim.SGD, dampening=0, nesterov=False), at every step:
 *     g <- g + wd*p                         coupled weight decay (L2 on the loss)
 *     buf <- g on the first step, else buf <- mu*buf + g     (only when mu > 0)
 *     p <- p - lr*buf                       (p - lr*g when mu = 0)
 *
 * Clipping (torch.nn.utils.clip_grad_norm_, L2 norm):
 *     norm = sqrt(sum g_i^2);  coef = max_norm / (norm + 1e-6);  g <- g*coef if coef < 1
 *
 * Schedules (Hugging Face transformers' get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup with
 * num_cycles = 0.5), with W warmup steps, T total steps, and the step s
 * counted from 0 as LambdaLR does (the first optimizer step uses s = 0):
 *     lr(s) = base * f(s)
 *     s < W:      f = s / max(1, W)                        all kinds
 *     constant:   f = 1
 *     linear:     f = max(0, (T - s) / max(1, T - W))
 *     cosine:     f = max(0, 0.5 * (1 + cos(pi * q))),  q = (s - W) / max(1, T - W)
 * Linear and cosine hold the value at T for s > T (0 when W < T), where
 * Hugging Face's cosine would rise again; s < 0 counts as 0. Unlike Hugging
 * Face's plain "constant", our constant schedule honours warmup (it is their
 * "constant_with_warmup"; with W = 0 the two agree). */
#ifndef LORA_OPTIM_H
#define LORA_OPTIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

typedef enum { LORA_OPTIM_ADAMW = 0, LORA_OPTIM_SGD = 1 } lora_optim_kind;

/* Hyperparameters. lr is the base (peak) rate, kept for the caller's
 * schedule: lora_optim_step takes the rate of the current step explicitly. */
typedef struct {
	lora_optim_kind kind;
	double lr;
	double beta1, beta2, eps; /* AdamW only: b1, b2 in [0, 1), eps > 0 */
	double weight_decay;      /* >= 0: decoupled for AdamW, coupled (L2) for SGD */
	double momentum;          /* SGD only, in [0, 1); 0 = plain SGD, no buffer */
} lora_optim_conf;

typedef struct {
	lora_optim_conf conf;
	size_t n;      /* parameters */
	uint64_t step; /* steps taken; the next step is t = step + 1 */
	float *m;      /* AdamW first moment, or the SGD momentum buffer (n); NULL for plain SGD */
	float *v;      /* AdamW second moment (n); NULL for SGD */
} lora_optim;

/* Validate conf and allocate zeroed state for n parameters. Returns 0,
 * LORA_EINVAL (a hyperparameter out of range, named in e) or LORA_ENOMEM.
 * On failure o holds nothing to free. */
int lora_optim_init(lora_optim *o, const lora_optim_conf *conf, size_t n, lora_err *e);
/* Release the state; o may be zeroed or already freed. */
void lora_optim_free(lora_optim *o);

/* One update of params (n) from grads (n) at learning rate lr (the
 * scheduled rate of this step), as described above; increments o->step.
 * Returns 0, or LORA_EINVAL when n is not the n o was made for. */
int lora_optim_step(lora_optim *o, float *params, const float *grads, size_t n, double lr);

/* Global L2 norm of g (n), accumulated in double in fixed blocks summed in
 * order, so the result does not depend on the thread count. When
 * max_norm > 0 and the norm is finite, g is scaled by
 * max_norm / (norm + 1e-6) if that is below 1; max_norm <= 0 only measures.
 * A non-finite norm (an inf or NaN gradient) leaves g untouched: the caller
 * decides whether to skip the step. Returns the norm before clipping. */
double lora_optim_clip_grad_norm(float *g, size_t n, double max_norm);

typedef enum { LORA_SCHED_CONSTANT = 0, LORA_SCHED_LINEAR = 1, LORA_SCHED_COSINE = 2 } lora_optim_sched_kind;

typedef struct {
	lora_optim_sched_kind kind;
	double lr;   /* base (peak) rate */
	long warmup; /* W >= 0 */
	long total;  /* T: number of optimizer steps in the run */
} lora_optim_schedule;

/* Learning rate at step s (from 0), by the formulas above. */
double lora_optim_lr_at(const lora_optim_schedule *s, long step);

/* State files, for bit-exact resume. All integers and floats little-endian:
 *     offset  size  field
 *          0     8  magic "LORAOPT\0"
 *          8     4  format version, 1
 *         12     4  kind: 0 AdamW, 1 SGD
 *         16     8  n, parameters
 *         24     8  step, steps taken
 *         32     4  k, buffers: 2 for AdamW (m then v), 1 for SGD with
 *                   momentum, 0 for plain SGD
 *         36     4  reserved, 0
 *         40  4*n*k the buffers, f32, each n values
 *   40+4*n*k     4  CRC-32 (the zlib/IEEE 802.3 polynomial) of every byte before it
 * Hyperparameters are not stored: they come from the run's configuration. */
#define LORA_OPTIM_MAGIC "LORAOPT\0"
#define LORA_OPTIM_VERSION 1

/* Write o's state to f; name is used in messages. 0 or LORA_EIO. */
int lora_optim_write(const lora_optim *o, FILE *f, const char *name, lora_err *e);
/* Read a state written by lora_optim_write into o, which must have been
 * made by lora_optim_init for the same kind, n and buffer count (otherwise
 * LORA_EINVAL, naming both). A bad magic, truncation or CRC mismatch is
 * LORA_EFORMAT naming the file. o is changed only on success. Reads exactly
 * the state's bytes, so the stream may hold more after it. */
int lora_optim_read(lora_optim *o, FILE *f, const char *name, lora_err *e);
/* Save to path atomically (replacing an existing file; "-" is standard
 * output, refused on a terminal). */
int lora_optim_save(const lora_optim *o, const char *path, lora_err *e);
/* Load from path; bytes after the state are an error. */
int lora_optim_load(lora_optim *o, const char *path, lora_err *e);

#endif
