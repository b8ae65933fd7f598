#include "model/eval.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>

#include "math/blas.h"
#include "model/session.h"
#include "text/tokenize.h"

int lora_eval_run(lora_llama *m, const lora_data *d, const lora_eval_opts *o, lora_eval_result *r, lora_err *e)
{
	lora_data_batches b;
	size_t B = o->B, T = o->T;
	int32_t *in = malloc(B * T * sizeof *in), *tg = malloc(B * T * sizeof *tg);
	double sum = 0;
	int rc = 0;
	*r = (lora_eval_result){0, 0, NAN};
	if (!in || !tg) {
		free(in), free(tg);
		return lora_err_nomem(e);
	}
	unsigned flags = (o->shuffle ? LORA_DATA_SHUFFLE : 0) | (o->packed ? 0 : LORA_DATA_UNPACKED);
	if ((rc = lora_data_batches_init(&b, d, B, T, flags, o->seed, e))) {
		free(in), free(tg);
		return rc;
	}
	size_t n = o->max_batches && o->max_batches < b.nbatches ? o->max_batches : b.nbatches;
	for (size_t k = 0; k < n && !rc; k++) {
		double l;
		size_t nt;
		lora_data_batches_get(&b, k, in, tg);
		if ((rc = lora_llama_forward(m, in, tg, &l, &nt, e)))
			break;
		sum += l * (double)nt;
		r->tokens += nt;
		r->batches = k + 1;
		if (o->progress)
			o->progress(o->ctx, k + 1, n, sum / (double)r->tokens, r->tokens);
	}
	if (r->tokens)
		r->loss = sum / (double)r->tokens;
	lora_data_batches_free(&b);
	free(in), free(tg);
	return rc;
}

static int report_json(FILE *out, const lora_eval_job *j, const lora_session *s, const lora_data *d,
                       const lora_eval_opts *o, const lora_eval_result *r, lora_err *e)
{
	cJSON *js = cJSON_CreateObject(), *arr;
	cJSON_AddStringToObject(js, "model", j->model);
	if (s->model_name)
		cJSON_AddStringToObject(js, "model_name", s->model_name);
	arr = cJSON_AddArrayToObject(js, "adapters");
	for (size_t i = 0; i < s->n; i++) {
		cJSON *a = cJSON_CreateObject();
		cJSON_AddStringToObject(a, "path", s->paths[i]);
		cJSON_AddNumberToObject(a, "scale", s->scales[i]);
		cJSON_AddNumberToObject(a, "layers", (double)s->adapters[i]->nlayers);
		cJSON_AddItemToArray(arr, a);
	}
	cJSON_AddStringToObject(js, "data", j->data);
	cJSON_AddStringToObject(js, "data_format", lora_data_format_name(d->format));
	cJSON_AddNumberToObject(js, "data_tokens", (double)d->ntokens);
	cJSON_AddNumberToObject(js, "data_documents", (double)d->ndocs);
	cJSON_AddBoolToObject(js, "sample_packing", o->packed);
	cJSON_AddNumberToObject(js, "batch", (double)o->B);
	cJSON_AddNumberToObject(js, "seq", (double)o->T);
	cJSON_AddStringToObject(js, "compute", lora_dtype_name(lora_llama_compute_dtype(s->m)));
	cJSON_AddNumberToObject(js, "batches", (double)r->batches);
	cJSON_AddBoolToObject(js, "shuffle", o->shuffle);
	cJSON_AddItemToObject(js, "seed", o->shuffle ? cJSON_CreateNumber((double)o->seed) : cJSON_CreateNull());
	cJSON_AddNumberToObject(js, "tokens", (double)r->tokens);
	cJSON_AddNumberToObject(js, "loss", r->loss);
	cJSON_AddNumberToObject(js, "perplexity", exp(r->loss));
	cJSON_AddNumberToObject(js, "threads", lora_blas_threads());
	char *txt = cJSON_Print(js);
	cJSON_Delete(js);
	if (!txt)
		return lora_err_nomem(e);
	fprintf(out, "%s\n", txt);
	cJSON_free(txt);
	return 0;
}

static void report_text(FILE *out, const lora_eval_job *j, const lora_session *s, const lora_data *d,
                        const lora_eval_opts *o, const lora_eval_result *r)
{
	const lora_config *cfg = lora_llama_get_config(s->m);
	fprintf(out, "%-12s %s (%s, %zu layers, vocab %zu)\n", "model", j->model, s->model_name ? s->model_name : "-",
	        cfg->n_layers, cfg->vocab_size);
	fprintf(out, "%-12s ", "adapters");
	for (size_t i = 0; i < s->n; i++)
		fprintf(out, "%s%s (scale %g)", i ? ", " : "", s->paths[i], s->scales[i]);
	fprintf(out, "%s\n", s->n ? "" : "none");
	fprintf(out, "%-12s %s (%s, %zu tokens", "data", j->data, lora_data_format_name(d->format), d->ntokens);
	if (d->ndocs)
		fprintf(out, ", %zu documents", d->ndocs);
	fprintf(out, ")\n");
	fprintf(out, "%-12s %zu of %zu x %zu, ", "batches", r->batches, o->B, o->T);
	if (o->shuffle)
		fprintf(out, "shuffled (seed %llu)\n", (unsigned long long)o->seed);
	else
		fprintf(out, "in order\n");
	fprintf(out, "%-12s %zu\n", "tokens", r->tokens);
	fprintf(out, "%-12s %.6f\n", "loss", r->loss);
	fprintf(out, "%-12s %.4f\n", "perplexity", exp(r->loss));
}

int lora_eval_job_run(const lora_eval_job *j, FILE *out, lora_err *e)
{
	lora_session s;
	lora_data *d = NULL;
	lora_eval_opts o = j->o;
	lora_eval_result r;
	int rc;
	if ((rc = lora_session_open(&s, j->model, j->adapters, j->nadapters, j->compute, e)))
		return rc;
	const lora_config *cfg = lora_llama_get_config(s.m);
	if (!o.T)
		o.T = cfg->max_pos && cfg->max_pos < 1024 ? cfg->max_pos : 1024;
	if ((rc = lora_tokenize_open_data(&d, j->model, j->tokenizer, j->data, j->format, cfg->vocab_size, lora_blas_threads(), e)) ||
	    (rc = lora_llama_plan(s.m, o.B, o.T, 0, e)))
		goto out;
	if (j->note) {
		char line[256];
		lora_llama_describe(s.m, line, sizeof line);
		j->note(o.ctx, line);
	}
	if ((rc = lora_eval_run(s.m, d, &o, &r, e)))
		goto out;
	if (j->json)
		rc = report_json(out, j, &s, d, &o, &r, e);
	else
		report_text(out, j, &s, d, &o, &r);
out:
	lora_data_close(d);
	lora_session_close(&s);
	return rc;
}
