/* dist: lora-train's data-parallel runs over MPI (Open MPI), and the one
 * gradient fold every run goes through, with or without it.
 *
 * A step's gradient is the sum of its micro-batches' gradients, added
 * left to right in the order one process visits them: ((g0 + g1) + g2)...
 * With N ranks of A micro-batches each (global accumulation G = N A), rank
 * r computes micro-batches r A .. r A + A - 1 of the step and keeps each
 * one's gradient; the fold then runs as a chain: rank 0 folds its own and
 * passes the partial sum to rank 1, which adds its gradients in order and
 * passes it on, a chunk at a time so that the links work at once; the last
 * rank broadcasts the sum. Float addition is not associative, so this
 * order, and no other, gives the bytes of one process with --accum G. The
 * losses (f64) and token counts travel the same way, with each rank's
 * stop request (a signal number) and failure, so every rank ends on the
 * same step with the same status.
 *
 * Without a launcher (no OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE in
 * the environment) MPI is never initialised: one rank, the same fold.
 * Built with MPI=0 (no Open MPI on the machine) only that remains, and a
 * launched process with more than one rank is refused. */
#ifndef LORA_DIST_H
#define LORA_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct lora_dist lora_dist;

/* What one step's fold carries besides the gradient. */
typedef struct {
	double loss;      /* sum of the micro-batch losses, in order */
	uint64_t tokens;  /* tokens trained on */
	int stop;         /* the largest stop request (signal number) of any rank, 0: none */
	int failed;       /* the lowest rank whose micro-batches failed, or -1 */
	double wait;      /* seconds this rank spent in the exchange */
} lora_dist_sums;

/* The rank and rank count the launcher gave, from the environment alone
 * (before any MPI call): 0 and 1 without a launcher. */
int lora_dist_env_rank(void);

/* With join, the job the launcher started (MPI_Init), or a run of one
 * without a launcher; without join, always a run of one. *d is freed by
 * lora_dist_close, which leaves MPI. */
int lora_dist_open(lora_dist **d, int join, lora_err *e);
void lora_dist_close(lora_dist *d);
int lora_dist_rank(const lora_dist *d);
int lora_dist_size(const lora_dist *d);
const char *lora_dist_host(const lora_dist *d);

/* Every rank's verdict on its set-up (rc, e): 0 when all succeeded. When
 * some failed, returns the lowest failing rank's code on every rank; that
 * rank's e is prefixed with "rank R (HOST)" unless every rank failed, the
 * others' e is emptied: one line for the whole job. */
int lora_dist_agree(lora_dist *d, int rc, lora_err *e);

/* Rank 0's text (a data identity, a model fingerprint) on every rank:
 * *root is a copy the caller frees; with one rank, a copy of mine. */
int lora_dist_root_text(lora_dist *d, const char *mine, char **root, lora_err *e);

/* Prepare the fold of steps with n parameters and local micro-batches per
 * rank. */
int lora_dist_plan(lora_dist *d, size_t n, size_t local, lora_err *e);

/* Where the gradient of local micro-batch m (0 .. local-1) goes, n floats,
 * overwritten whole; then lora_dist_add(d, m, ...) with its loss and
 * tokens once it is there. */
float *lora_dist_slot(lora_dist *d, size_t m);
void lora_dist_add(lora_dist *d, size_t m, double loss, size_t tokens);

/* End the step: fold every rank's micro-batches and write the summed
 * gradient times k into g (n floats) on every rank. s->stop (this rank's
 * stop request) and s->failed (this rank's number if its micro-batches
 * failed, with the error in e and its code in rc; else -1) go in; the
 * job's sums come out. Returns rc when this rank failed (e prefixed with
 * its rank and host), a failing peer's code with e emptied when another
 * rank failed, else 0 or an MPI error. */
int lora_dist_reduce(lora_dist *d, float *g, float k, lora_dist_sums *s, int rc, lora_err *e);

#endif
