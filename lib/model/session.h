/* session: a model with adapters applied at run time, opened from the
 * paths lora-eval and lora-generate take: a model directory (or its
 * safetensors file or index) and "ADAPTER[:SCALE]" specs, each adapter a
 * .lora, "-" for standard input, or a PEFT adapter (lora_load_adapter).
 * Nothing is merged: each adapted layer computes W x + SCALE s B A x. */
#ifndef LORA_SESSION_H
#define LORA_SESSION_H

#include <stddef.h>

#include "core/adapter.h"
#include "core/err.h"
#include "model/llama.h"

typedef struct {
	lora_ckpt *ck;            /* the checkpoint the model reads its weights from */
	lora_llama *m;
	char *model_name;         /* the checkpoint's name, or NULL */
	lora_adapter **adapters;  /* n of them, attached to m with their scales */
	char **paths;             /* as given, without the scale */
	double *scales;
	size_t n;
} lora_session;

/* Open model computing in compute (lora_llama_set_compute) and attach the
 * adapters of specs in order; an adapter that
 * does not fit the model is an error naming it ("standard input" for "-").
 * On error s holds nothing. */
int lora_session_open(lora_session *s, const char *model, char *const *specs, size_t n, lora_llama_compute compute,
                      lora_err *e);
void lora_session_close(lora_session *s);

#endif
