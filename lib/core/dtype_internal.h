/* dtype: test hooks. */
#ifndef LORA_DTYPE_INTERNAL_H
#define LORA_DTYPE_INTERNAL_H

#include "core/dtype.h"

/* Let the array conversions and the non-finite scan use at most variant
 * cap (0 the baseline, 1 AVX2, 2 AVX-512) from now on; returns the variant
 * in effect on this CPU, so that tests can run each one there is. */
int lora_dtype_kernels(int cap);

#endif
