/* linalg: the one module that talks to OpenBLAS and LAPACKE. */
#ifndef LORA_LINALG_H
#define LORA_LINALG_H

#include <stddef.h>

#include "err.h"

/* Singular values of the product B A, where B is (m x r) and A is (r x n),
 * both row-major, without forming the m x n matrix: QR of B and of A^T,
 * then the SVD of the small product of their R factors, in double
 * precision. Writes min(m, n, r) values in descending order to sv. */
int lora_lowrank_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                       lora_err *e);

/* Naive twin for the tests: singular values of the dense product, via
 * LAPACK gesdd on the full m x n matrix. Same output as above. */
int lora_dense_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                     lora_err *e);

#endif
