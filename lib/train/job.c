#include "train/job.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/outfile.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "math/blas.h"
#include "ops/init.h"
#include "text/tokenize.h"

static char *provenance(const lora_trainconf *c, const lora_ckpt *ck, const lora_llama *m, const char *data_id,
                        const char *eval_id, const lora_train_result *r)
{
	cJSON *p = cJSON_CreateObject();
	char *conf = lora_trainconf_json(c), *s;
	cJSON_AddStringToObject(p, "tool", "lora-train " LORA_VERSION);
	cJSON_AddStringToObject(p, "model", ck->name ? ck->name : ck->path);
	cJSON_AddStringToObject(p, "data", data_id);
	if (eval_id)
		cJSON_AddStringToObject(p, "eval_data", eval_id);
	cJSON_AddStringToObject(p, "compute", lora_dtype_name(lora_llama_compute_dtype(m)));
	cJSON_AddNumberToObject(p, "steps", (double)r->step);
	if (isfinite(r->loss))
		cJSON_AddNumberToObject(p, "train_loss", r->loss);
	if (isfinite(r->eval_loss))
		cJSON_AddNumberToObject(p, "eval_loss", r->eval_loss);
	if (r->stopped)
		cJSON_AddTrueToObject(p, "interrupted");
	cJSON_AddItemToObject(p, "config", conf ? cJSON_Parse(conf) : cJSON_CreateNull());
	free(conf);
	s = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return s;
}

/* What a run holds open; freed by release. */
typedef struct {
	lora_ckpt *ck;
	lora_llama *m;
	lora_adapter *a;
	lora_data *train, *eval;
	lora_optim opt;
	char *data_id, *eval_id, *ckpt_data, *ckpt_default;
	FILE *log;
	long start;
} state;

static void release(state *s)
{
	if (s->log)
		fclose(s->log);
	free(s->data_id), free(s->eval_id), free(s->ckpt_data), free(s->ckpt_default);
	lora_optim_free(&s->opt);
	lora_data_close(s->train);
	lora_data_close(s->eval);
	lora_llama_free(s->m);
	lora_adapter_free(s->a);
	lora_ckpt_close(s->ck);
}

/* The adapter to train: a checkpoint's (its configuration applied over
 * conf), the one given, or a new one as lora-init makes it. */
static int adapter(const lora_job *j, lora_trainconf *conf, state *s, lora_err *e)
{
	if (j->resume) {
		char *json = NULL;
		int rc = lora_train_load_checkpoint(j->resume, &s->a, &json, &s->ckpt_data, &s->start, e);
		if (!rc)
			rc = lora_trainconf_set_json(conf, json, e);
		free(json);
		return rc;
	}
	if (j->adapter)
		return lora_load_adapter(&s->a, j->adapter, e);
	lora_init_opts o;
	lora_init_defaults(&o);
	char *list = lora_trainconf_targets(conf);
	if (!list)
		return lora_err_nomem(e);
	o.rank = (size_t)conf->lora_r;
	o.alpha = conf->lora_alpha;
	o.targets = list;
	o.seed = (uint64_t)conf->seed;
	o.rslora = conf->peft_use_rslora;
	int rc = lora_init_new(&s->a, s->ck, NULL, 0, &o, e);
	free(list);
	return rc;
}

/* Model, adapter, data, optimizer: everything before the first step. */
static int open_all(const lora_job *j, lora_trainconf *conf, state *s, lora_err *e)
{
	int rc;
	if ((rc = lora_ckpt_open(&s->ck, j->model, e)) || (rc = lora_llama_open(&s->m, s->ck, e)) ||
	    (rc = adapter(j, conf, s, e)) || (rc = lora_llama_set_compute(s->m, (lora_llama_compute)conf->compute, e)))
		return rc;
	if (j->dtype >= 0)
		s->a->dtype = (lora_dtype)j->dtype;
	const char *what = j->resume ? j->resume : !j->adapter ? "the new adapter"
	                   : strcmp(j->adapter, "-") ? j->adapter : "standard input";
	if ((rc = lora_llama_attach(s->m, s->a, 1.0, 1, what, e)) ||
	    (rc = lora_llama_plan(s->m, (size_t)conf->micro_batch_size, (size_t)conf->sequence_len,
	                          LORA_LLAMA_TRAIN | (j->recompute ? LORA_LLAMA_RECOMPUTE : 0), e)))
		return rc;
	size_t vocab = lora_llama_get_config(s->m)->vocab_size;
	int nt = lora_blas_threads();
	if ((rc = lora_tokenize_open_data(&s->train, j->model, j->data, j->format, vocab, nt, e)) ||
	    (j->eval_data && (rc = lora_tokenize_open_data(&s->eval, j->model, j->eval_data, j->format, vocab, nt, e))))
		return rc;
	if (!(s->data_id = lora_data_id(s->train)) || (s->eval && !(s->eval_id = lora_data_id(s->eval))))
		return lora_err_nomem(e);
	if (j->resume && strcmp(s->ckpt_data, s->data_id) != 0)
		return lora_err_set(e, LORA_EINVAL, "%s: the checkpoint was trained on %s, not %s", j->resume, s->ckpt_data,
		                    s->data_id);
	lora_optim_conf oc;
	lora_trainconf_optim(conf, &oc);
	if ((rc = lora_optim_init(&s->opt, &oc, lora_train_nparams(s->a), e)) ||
	    (j->resume && (rc = lora_train_load_optimizer(j->resume, &s->opt, e))))
		return rc;
	return 0;
}

/* Refuse an output that would fail at the end before hours of work, not
 * after; open the log. */
static int check_outputs(const lora_job *j, state *s, lora_err *e)
{
	int rc = lora_outfile_check(j->out, LORA_OUT_BINARY | (j->force ? LORA_OUT_FORCE : 0), e);
	if (rc)
		return rc;
	if (j->log && !(s->log = fopen(j->log, "a")))
		return lora_err_set(e, LORA_EIO, "%s: %s", j->log, strerror(errno));
	if (s->log) {
		fprintf(s->log, "{\"compute\":\"%s\",\"weight_bytes\":%zu,\"activation_bytes\":%zu}\n",
		        lora_dtype_name(lora_llama_compute_dtype(s->m)), lora_llama_weight_bytes(s->m),
		        lora_llama_activation_bytes(s->m));
		fflush(s->log);
	}
	if (j->note) {
		char line[256];
		lora_llama_describe(s->m, line, sizeof line);
		j->note(j->ctx, line);
	}
	return 0;
}

int lora_job_run(const lora_job *j, lora_trainconf *conf, lora_train_result *r, lora_err *e)
{
	state s = {0};
	int rc;
	memset(r, 0, sizeof *r);
	if ((rc = open_all(j, conf, &s, e)) || (rc = check_outputs(j, &s, e)))
		goto out;
	const char *ckpt = j->ckpt_dir;
	if (!ckpt) {
		const char *b = j->out && strcmp(j->out, "-") ? j->out : "lora-train";
		size_t len = strlen(b) + 6;
		if (!(s.ckpt_default = malloc(len))) {
			rc = lora_err_nomem(e);
			goto out;
		}
		snprintf(s.ckpt_default, len, "%s.ckpt", b);
		ckpt = s.ckpt_default;
	}
	lora_train_opts to = {
		.conf = conf, .model = s.m, .adapter = s.a, .train = s.train, .eval = s.eval,
		.eval_batches = j->eval_batches, .shuffle = j->shuffle, .ckpt_dir = ckpt, .data_id = s.data_id,
		.log = s.log, .stop = j->stop, .report = j->report, .ctx = j->ctx,
	};
	if ((rc = lora_train_run(&to, &s.opt, s.start, r, e)))
		goto out;
	/* What the adapter is: the model it was trained for and how. */
	char fp[17];
	lora_ckpt_fingerprint(s.ck, fp);
	free(s.a->base_name), free(s.a->base_fingerprint), free(s.a->provenance);
	s.a->base_name = s.ck->name ? strdup(s.ck->name) : NULL;
	s.a->base_fingerprint = strdup(fp);
	s.a->provenance = provenance(conf, s.ck, s.m, s.data_id, s.eval_id, r);
	rc = lora_lorafile_save(s.a, j->out, j->force, e);
out:
	release(&s);
	return rc;
}
