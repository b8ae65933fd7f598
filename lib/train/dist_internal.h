/* dist_internal: benchmark hooks of train/dist. */
#ifndef LORA_DIST_INTERNAL_H
#define LORA_DIST_INTERNAL_H

#include "train/dist.h"

/* Seconds of one MPI_Allreduce (sum) of the n floats at g on every rank:
 * the MPI library's own exchange, the baseline lora_dist_reduce's chain
 * is measured against (which adds in no fixed order). Negative on an MPI
 * error or without MPI. */
double lora_dist_bench_allreduce(lora_dist *d, float *g, size_t n);

#endif
