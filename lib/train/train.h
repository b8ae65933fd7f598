/* train: the fine-tuning loop behind lora-train.
 *
 * One optimizer step = gradient_accumulation_steps micro-batches of
 * micro_batch_size rows of sequence_len tokens; the gradient is their mean,
 * clipped by global norm, then AdamW or SGD at the scheduled rate. Batch j
 * of the run (j = step * accumulation + micro) is batch j mod N of epoch
 * j / N of the data, N its batch count; with shuffling each epoch has its
 * own order, drawn from the seed and the epoch. Dropout masks are drawn
 * from the seed and the step. So the run is a pure function of the
 * configuration, the model, the data and the starting adapter: a run
 * resumed from a checkpoint continues bit for bit as if never stopped.
 *
 * A checkpoint is a directory DIR/checkpoint-STEP holding adapter.lora (f32
 * master weights), optimizer.bin (moments) and state.json (step, effective
 * configuration, data identity, losses); it is written beside its final
 * name and renamed into place. */
#ifndef LORA_TRAIN_H
#define LORA_TRAIN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "core/adapter.h"
#include "io/data.h"
#include "model/llama.h"
#include "train/dist.h"
#include "train/optim.h"
#include "train/trainconf.h"

typedef struct {
	long step, total;      /* optimizer steps done, and planned */
	double loss;           /* mean train loss of the last step */
	double lr, grad_norm;  /* of the last step (norm before clipping) */
	double eval_loss;      /* last evaluation, NAN if none yet */
	double tokens_per_s;   /* training tokens per second so far */
	double elapsed;        /* seconds */
	int eval;              /* 1 when this report is an evaluation */
	int ranks;             /* processes sharing each step (lora_dist) */
	double wait;           /* seconds of the last step spent in the gradient exchange */
} lora_train_status;

typedef struct {
	const lora_trainconf *conf;
	lora_llama *model;       /* with adapter attached as trainable and a TRAIN plan */
	lora_adapter *adapter;   /* the trainable adapter, updated in place */
	const lora_data *train;
	const lora_data *eval;   /* or NULL */
	size_t eval_batches;     /* 0: every batch of the eval data */
	int shuffle;
	const char *ckpt_dir;    /* where checkpoints go; NULL: none */
	const char *data_id;     /* provenance of the data, recorded in checkpoints */
	FILE *log;               /* JSON lines, or NULL */
	const char *log_name;    /* its name in a write error */
	volatile sig_atomic_t *stop; /* set asynchronously: finish the step, checkpoint, stop */
	void (*report)(void *ctx, const lora_train_status *s);
	void *ctx;
	/* The ranks that share each step, or NULL: one process. The
	 * configuration's gradient_accumulation_steps is the global count,
	 * a multiple of the rank count; each rank runs its share (dist.h). */
	lora_dist *dist;
} lora_train_opts;

typedef struct {
	long step;              /* steps completed */
	double loss, eval_loss; /* final train loss, final eval loss (NAN if no eval data) */
	int stopped;            /* the signal that ended the run early (*stop; over ranks, the first
	                         * any rank saw, the same on every rank), or 0 */
	char *checkpoint;       /* path of the last checkpoint written, or NULL; caller frees */
	double wait, wait_max;  /* seconds in the gradient exchange: in all, and the longest step's */
} lora_train_result;

/* Planned optimizer steps: max_steps if set, else
 * ceil(num_epochs * floor(batches / accumulation)) (Hugging Face's rule). */
long lora_train_total_steps(const lora_trainconf *c, size_t batches);

/* Run from start_step (0, or a checkpoint's) with optimizer state opt
 * (freshly initialised, or loaded) until the planned total. A non-finite
 * loss or gradient stops with an error naming the step. */
int lora_train_run(const lora_train_opts *o, lora_optim *opt, long start_step, lora_train_result *r,
                   lora_err *e);

/* Read a checkpoint: the adapter, the optimizer moments (into opt, which
 * must be initialised for the adapter's parameter count), the step, and the
 * recorded configuration as JSON text (caller frees) and data identity. */
int lora_train_load_checkpoint(const char *dir, lora_adapter **a, char **conf_json, char **data_id,
                               long *step, lora_err *e);
int lora_train_load_optimizer(const char *dir, lora_optim *opt, lora_err *e);

/* Parameter count of an adapter's factors (the optimizer's n). */
size_t lora_train_nparams(const lora_adapter *a);

#endif
