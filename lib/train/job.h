/* job: one lora-train run, everything between parsing the flags and the
 * exit status. The model and the data are opened; the adapter is the one
 * given, a checkpoint's (resume) or a new one made by lora_init_new from
 * the configuration's lora_* keys; the output is checked before the first
 * step (an existing file without force, binary data to a terminal), the
 * loop runs (lora_train_run), and the adapter is written with the base
 * model's identity and a provenance record: the data's identity, the
 * steps, the losses and the whole configuration. */
#ifndef LORA_JOB_H
#define LORA_JOB_H

#include <signal.h>
#include <stddef.h>

#include "core/err.h"
#include "io/data.h"
#include "train/dist.h"
#include "train/train.h"
#include "train/trainconf.h"

typedef struct {
	const char *model, *data;
	const char *eval_data;   /* held-out tokens, or NULL */
	const char *tokenizer;   /* tokenizer.json for text data, or NULL: the model directory's */
	const char *adapter;     /* the adapter to train ("-": standard input), or NULL: a new one */
	const char *resume;      /* a checkpoint directory to continue from, or NULL */
	const char *ckpt_dir;    /* NULL: OUT.ckpt, or lora-train.ckpt when OUT is standard output */
	const char *out;         /* NULL or "-": standard output */
	const char *log;         /* JSON lines appended here, or NULL */
	lora_data_format format; /* of data and eval_data */
	size_t eval_batches;     /* 0: all */
	int shuffle, recompute, force;
	int dtype;               /* storage dtype of the output, or -1: the adapter's (a new one: f32) */
	volatile sig_atomic_t *stop;
	void (*report)(void *ctx, const lora_train_status *s);
	void (*note)(void *ctx, const char *line); /* lora_llama_describe's line, before the first step; may be NULL */
	void *ctx;
	/* The ranks of a data-parallel run (lora_dist_open), or NULL: one
	 * process. gradient_accumulation_steps is then per rank (a resumed
	 * checkpoint's, recorded global, is divided among the ranks); rank 0
	 * alone checks and writes the output, the checkpoints and the log and
	 * evaluates; every rank must hold the same model and data. */
	lora_dist *dist;
	/* Where rank 0 writes the run's JSON report (lora-train --json), or
	 * NULL: steps, losses, interruption, the last checkpoint, ranks, the
	 * global batch and the seconds spent in the gradient exchange. */
	FILE *json;
} lora_job;

/* Run j with configuration conf (the file and flags applied; with resume
 * the checkpoint's recorded configuration is applied over it, and the
 * checkpoint must have been trained on the same data). r says how the run
 * ended: r->stopped when *stop interrupted it, after a checkpoint and the
 * adapter so far were written. Returns 0 or the first error. */
int lora_job_run(const lora_job *j, lora_trainconf *conf, lora_train_result *r, lora_err *e);


#endif
