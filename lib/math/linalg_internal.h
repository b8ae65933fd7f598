/* linalg_internal: the naive twin of math/linalg the tests compare with. */
#ifndef LORA_LINALG_INTERNAL_H
#define LORA_LINALG_INTERNAL_H

#include "math/linalg.h"

/* Naive twin for the tests: singular values of the dense product, via
 * LAPACK gesdd on the full m x n matrix. Same output as
 * lora_linalg_lowrank_svals. */
int lora_linalg_dense_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                     lora_err *e);

#endif
