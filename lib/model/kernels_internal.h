/* kernels_internal: benchmark hooks of model/kernels, kept out of its
 * contract: a clock that splits a step's time by kernel. */
#ifndef LORA_MODEL_KERNELS_INTERNAL_H
#define LORA_MODEL_KERNELS_INTERNAL_H

#include "model/kernels.h"

enum {
	LORA_KCLOCK_EMBEDDING,
	LORA_KCLOCK_RMSNORM_FORWARD,
	LORA_KCLOCK_RMSNORM_RECOMPUTE,
	LORA_KCLOCK_RMSNORM_BACKWARD,
	LORA_KCLOCK_ROPE,
	LORA_KCLOCK_ATTENTION_FORWARD,
	LORA_KCLOCK_ATTENTION_BACKWARD,
	LORA_KCLOCK_ATTENTION_DECODE,
	LORA_KCLOCK_SWIGLU_FORWARD,
	LORA_KCLOCK_SWIGLU_BACKWARD,
	LORA_KCLOCK_CROSSENTROPY,
	LORA_KCLOCK_BIAS,
	LORA_KCLOCK_DROPOUT,
	LORA_KCLOCK_N
};

/* Kernel clock: while on, the wall-clock seconds of every call of the
 * kernels above (the LoRA kernels are products, timed by math/blas) are
 * summed per kernel, attention's own products included. Start from zero;
 * stop and fill sec (LORA_KCLOCK_N). Not for concurrent callers. */
void lora_kernels_clock_begin(void);
void lora_kernels_clock_end(double *sec);
/* The kernel's name: "rmsnorm_forward", "attention_backward", ... */
const char *lora_kernels_clock_name(int k);

#endif
