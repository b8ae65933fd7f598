/* report: what lora-inspect, lora-svd and lora-diff print, as text tables
 * or one JSON document, written to a stream the caller gives (lib/ never
 * picks standard output or standard error itself). The numbers come from
 * the structs the other modules fill; nothing is computed here but counts,
 * so a report can only disagree with its tool's exit status if the same
 * predicate (lora_diff_*_differs) disagreed with itself.
 *
 * Each function returns 0, or LORA_ENOMEM when the JSON document cannot be
 * built; write errors are left on the stream for the caller's ferror. */
#ifndef LORA_REPORT_H
#define LORA_REPORT_H

#include <stdio.h>

#include "core/adapter.h"
#include "core/err.h"
#include "io/ckpt.h"
#include "io/gguf.h"
#include "ops/diff.h"
#include "ops/svd.h"

#define LORA_REPORT_GGUF 2

typedef struct {
	int json;          /* one JSON document instead of the text report */
	int per_layer;     /* text: a row per layer (per tensor of a checkpoint);
	                      JSON of a checkpoint: its tensors */
	size_t top;        /* text: singular values shown per layer with stats */
} lora_report_opts;

/* lora-inspect of an adapter read from path: a .lora (peft 0), a PEFT
 * adapter (1) or a GGUF adapter (LORA_REPORT_GGUF). spectra (NULL, or one per layer from lora_svd_spectra) adds
 * norms and singular values; in text they imply per_layer. */
int lora_report_adapter(FILE *f, const char *path, const lora_adapter *a, int peft,
                        const lora_svd_spectrum *spectra, const lora_report_opts *o, lora_err *e);
/* lora-inspect of a checkpoint: tensors, parameters and bytes by dtype. */
int lora_report_ckpt(FILE *f, const char *path, const lora_ckpt *m, const lora_report_opts *o, lora_err *e);

/* lora-inspect of a GGUF model: architecture, name, the hyperparameters
 * and tokenizer llama.cpp reads, tensors, parameters and bytes by ggml
 * type (per_layer: each tensor, shape in Hugging Face's order). */
int lora_report_gguf_model(FILE *f, const char *path, const lora_gguf *g, const lora_report_opts *o, lora_err *e);

/* lora-svd: what happened to each layer of a (extract: from two
 * checkpoints with so's method, else re-ranked). */
int lora_report_svd(FILE *f, const lora_svd_report *r, const lora_adapter *a, int extract,
                    const lora_svd_opts *so, int json, lora_err *e);

typedef struct {
	const char *a, *b;        /* names of the two sides */
	const char *base, *tuned; /* the checkpoints when b is their difference, else NULL */
	double tol;               /* what counts as equal (lora_diff_*_differs) */
	int subspace;             /* the phi tables and top-k similarities */
	int json;
} lora_report_diff_opts;

/* lora-diff of two adapters, or of an adapter with a checkpoint difference. */
int lora_report_diff(FILE *f, const lora_diff_result *r, const lora_report_diff_opts *o, lora_err *e);
/* lora-diff of two checkpoints. */
int lora_report_diff_models(FILE *f, const lora_diff_models_result *r, const lora_report_diff_opts *o,
                            lora_err *e);

#endif
