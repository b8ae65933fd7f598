#include "train/train.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/outdir.h"
#include "core/outfile.h"
#include "core/path.h"
#include "io/lorafile.h"
#include "model/eval.h"

size_t lora_train_nparams(const lora_adapter *a)
{
	size_t n = 0;
	for (size_t i = 0; i < a->nlayers; i++)
		n += a->layers[i].rank * (a->layers[i].in + a->layers[i].out);
	return n;
}

long lora_train_total_steps(const lora_trainconf *c, size_t batches)
{
	if (c->max_steps > 0)
		return (long)c->max_steps;
	size_t per_epoch = batches / (size_t)c->gradient_accumulation_steps;
	return (long)ceil(c->num_epochs * (double)per_epoch);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Flat copies between the adapter's factors and the optimizer's vector,
 * in layer order, A then B. */
static void gather(float *dst, const lora_adapter *a)
{
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		memcpy(dst, l->A, l->rank * l->in * sizeof *dst);
		dst += l->rank * l->in;
		memcpy(dst, l->B, l->out * l->rank * sizeof *dst);
		dst += l->out * l->rank;
	}
}

static void scatter(lora_adapter *a, const float *src)
{
	for (size_t i = 0; i < a->nlayers; i++) {
		lora_layer *l = &a->layers[i];
		memcpy(l->A, src, l->rank * l->in * sizeof *src);
		src += l->rank * l->in;
		memcpy(l->B, src, l->out * l->rank * sizeof *src);
		src += l->out * l->rank;
	}
}

static void gather_grads(float *dst, const lora_llama *m, const lora_adapter *a)
{
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		float *dA, *dB;
		lora_llama_grad(m, i, &dA, &dB);
		memcpy(dst, dA, l->rank * l->in * sizeof *dst);
		dst += l->rank * l->in;
		memcpy(dst, dB, l->out * l->rank * sizeof *dst);
		dst += l->out * l->rank;
	}
}

/* ---- checkpoints ---- */


static int write_text(const char *path, const char *text, lora_err *e)
{
	lora_outfile o;
	int rc = lora_outfile_open(&o, path, LORA_OUT_FORCE, e);
	if (rc)
		return rc;
	fputs(text, o.fp);
	fputc('\n', o.fp);
	return lora_outfile_commit(&o, e);
}

/* What a checkpoint directory holds; an older one of the same step (a
 * resumed run) is replaced whole. */
static const char *const ckpt_files[] = {"adapter.lora", "optimizer.bin", "state.json", NULL};

/* DIR/checkpoint-STEP, assembled in a temporary directory beside it. */
static int save_checkpoint(const lora_train_opts *o, const lora_optim *opt, long step, double loss,
                           char **where, lora_err *e)
{
	char name[64], *final = NULL, *text = NULL;
	const char *pa, *po, *ps;
	cJSON *st = NULL, *cj = NULL;
	lora_outdir d;
	int rc = 0, made = mkdir(o->ckpt_dir, 0777) == 0;
	if (!made && errno != EEXIST)
		return lora_err_set(e, LORA_EIO, "%s: cannot create: %s", o->ckpt_dir, strerror(errno));
	snprintf(name, sizeof name, "checkpoint-%ld", step);
	if (!(final = lora_path_join(o->ckpt_dir, name)))
		return lora_err_nomem(e);
	if ((rc = lora_outdir_open(&d, final, 1, ckpt_files, e)))
		goto out;
	pa = lora_outdir_file(&d, ckpt_files[0]);
	po = lora_outdir_file(&d, ckpt_files[1]);
	ps = lora_outdir_file(&d, ckpt_files[2]);
	st = cJSON_CreateObject();
	char *conf = lora_trainconf_json(o->conf);
	cj = conf ? cJSON_Parse(conf) : NULL;
	free(conf);
	if (!pa || !po || !ps || !st || !cj) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	cJSON_AddNumberToObject(st, "step", (double)step);
	cJSON_AddNumberToObject(st, "train_loss", isfinite(loss) ? loss : 0);
	cJSON_AddStringToObject(st, "data", o->data_id ? o->data_id : "");
	cJSON_AddItemToObject(st, "config", cj);
	cj = NULL;
	text = cJSON_Print(st);
	/* The master weights are saved in f32 whatever the output dtype, so a
	 * resumed run continues from exactly these values. */
	lora_dtype keep = o->adapter->dtype;
	o->adapter->dtype = LORA_F32;
	rc = lora_lorafile_save(o->adapter, pa, 1, e);
	o->adapter->dtype = keep;
	if (rc || (rc = lora_optim_save(opt, po, e)) || (rc = write_text(ps, text ? text : "{}", e)))
		goto fail;
	if ((rc = lora_outdir_commit(&d, e)))
		goto out;
	free(*where);
	*where = final;
	final = NULL;
	goto out;
fail:
	lora_outdir_abort(&d, e);
out:
	/* a first checkpoint that failed leaves no empty directory for it */
	if (rc && made)
		rmdir(o->ckpt_dir);
	free(final);
	cJSON_free(text);
	cJSON_Delete(st);
	cJSON_Delete(cj);
	return rc;
}

int lora_train_load_checkpoint(const char *dir, lora_adapter **a, char **conf_json, char **data_id,
                               long *step, lora_err *e)
{
	char *pa = lora_path_join(dir, "adapter.lora"), *ps = lora_path_join(dir, "state.json");
	cJSON *st = NULL;
	int rc = 0;
	*a = NULL, *conf_json = NULL, *data_id = NULL;
	if (!pa || !ps) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if ((rc = lora_json_read_file(&st, ps, 1 << 20, e)))
		goto out;
	const cJSON *js = cJSON_GetObjectItemCaseSensitive(st, "step");
	const cJSON *jc = cJSON_GetObjectItemCaseSensitive(st, "config");
	const cJSON *jd = cJSON_GetObjectItemCaseSensitive(st, "data");
	if (!cJSON_IsNumber(js) || js->valuedouble < 0 || js->valuedouble > 1e9 ||
	    js->valuedouble != floor(js->valuedouble) || !cJSON_IsObject(jc) || !cJSON_IsString(jd)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: not a lora-train checkpoint state (step, config, data)", ps);
		goto out;
	}
	*step = (long)js->valuedouble;
	if (!(*conf_json = cJSON_PrintUnformatted(jc)) || !(*data_id = strdup(jd->valuestring))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	rc = lora_lorafile_read(a, pa, LORA_READ_ALL, e);
out:
	if (rc) {
		free(*conf_json), free(*data_id);
		*conf_json = *data_id = NULL;
	}
	cJSON_Delete(st);
	free(pa), free(ps);
	return rc;
}

int lora_train_load_optimizer(const char *dir, lora_optim *opt, lora_err *e)
{
	char *po = lora_path_join(dir, "optimizer.bin");
	if (!po)
		return lora_err_nomem(e);
	int rc = lora_optim_load(opt, po, e);
	free(po);
	return rc;
}

/* ---- the loop ---- */

/* A line of the log; a write error (a full disk) stops the run. */
static int log_line(const lora_train_opts *o, const lora_train_status *s, lora_err *e)
{
	FILE *f = o->log;
	if (!f)
		return 0;
	if (s->eval)
		fprintf(f, "{\"step\":%ld,\"eval_loss\":%.9g,\"elapsed\":%.3f}\n", s->step, s->eval_loss, s->elapsed);
	else if (s->ranks > 1)
		fprintf(f,
		        "{\"step\":%ld,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,\"tokens_per_s\":%.1f,\"elapsed\":%.3f,"
		        "\"reduce_s\":%.6f}\n",
		        s->step, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->elapsed, s->wait);
	else
		fprintf(f,
		        "{\"step\":%ld,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,\"tokens_per_s\":%.1f,\"elapsed\":%.3f}\n",
		        s->step, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->elapsed);
	if (fflush(f) != 0 || ferror(f))
		return lora_err_set(e, LORA_EIO, "%s: write error: %s", o->log_name ? o->log_name : "log", strerror(errno));
	return 0;
}

int lora_train_run(const lora_train_opts *o, lora_optim *opt, long start, lora_train_result *r,
                   lora_err *e)
{
	const lora_trainconf *c = o->conf;
	size_t B = (size_t)c->micro_batch_size, T = (size_t)c->sequence_len;
	size_t accum = (size_t)c->gradient_accumulation_steps, n = lora_train_nparams(o->adapter);
	lora_data_batches b = {0};
	lora_dist *one = NULL, *d = o->dist;
	long epoch = -1;
	int32_t *in = malloc(B * T * sizeof *in), *tg = malloc(B * T * sizeof *tg);
	unsigned flags = c->sample_packing ? 0 : LORA_DATA_UNPACKED;
	float *p = malloc((n ? n : 1) * sizeof *p), *g = malloc((n ? n : 1) * sizeof *g);
	int rc = 0;
	lora_optim_schedule sched;
	lora_train_status s = {.eval_loss = NAN};
	memset(r, 0, sizeof *r);
	r->loss = r->eval_loss = NAN;
	r->step = start;
	if (!in || !tg || !p || !g) {
		rc = lora_err_nomem(e);
		goto out;
	}
	if (!d && (rc = lora_dist_open(&one, 0, e)))
		goto out;
	d = d ? d : one;
	/* Rank r runs micro-batches r L .. r L + L - 1 of each step. */
	size_t ranks = (size_t)lora_dist_size(d), local = accum / ranks, first = (size_t)lora_dist_rank(d) * local;
	if (accum % ranks) {
		rc = lora_err_set(e, LORA_EINVAL, "gradient_accumulation_steps %zu does not divide among %zu ranks", accum, ranks);
		goto out;
	}
	if ((rc = lora_dist_plan(d, n, local, e)))
		goto out;
	s.ranks = (int)ranks;
	/* The planned length, from the data, fixes the schedule. */
	if ((rc = lora_data_batches_init(&b, o->train, B, T, flags, 0, e)))
		goto out;
	size_t nb = b.nbatches;
	lora_data_batches_free(&b);
	memset(&b, 0, sizeof b);
	s.total = lora_train_total_steps(c, nb);
	lora_trainconf_schedule(c, s.total, &sched);
	double t0 = now();
	size_t tokens = 0;
	for (long step = start; step < s.total; step++) {
		lora_llama_set_dropout(o->model, (float)c->lora_dropout, (uint64_t)c->seed * 0x9e3779b97f4a7c15ull + (uint64_t)step);
		/* Hugging Face's rule for labels of -100: a step's loss and gradient
		 * are means over every target with loss in any micro-batch of any
		 * rank. Each micro-batch's gradient sums its targets', the sums fold
		 * in one process's order (dist.h), then divide by the count. */
		lora_llama_set_loss_norm(o->model, 1);
		for (size_t micro = 0; micro < local && !rc; micro++) {
			size_t j = (size_t)step * accum + first + micro;
			long ep = (long)(j / nb);
			if (ep != epoch) { /* each epoch its own order */
				lora_data_batches_free(&b);
				if ((rc = lora_data_batches_init(&b, o->train, B, T, flags | (o->shuffle ? LORA_DATA_SHUFFLE : 0),
				                                 (uint64_t)c->seed + (uint64_t)ep * 0x632be59bd9b4e019ull, e)))
					break;
				epoch = ep;
			}
			double l;
			size_t cnt = lora_data_batches_get(&b, j % nb, in, tg);
			lora_llama_zero_grad(o->model);
			if ((rc = lora_llama_forward(o->model, in, tg, &l, NULL, e)) || (rc = lora_llama_backward(o->model, e)))
				break;
			gather_grads(lora_dist_slot(d, micro), o->model, o->adapter);
			lora_dist_add(d, micro, l * (double)cnt, cnt);
		}
		lora_llama_set_loss_norm(o->model, 0);
		lora_dist_sums sum = {.stop = o->stop ? *o->stop : 0, .failed = rc ? lora_dist_rank(d) : -1};
		if ((rc = lora_dist_reduce(d, g, 1.0f, &sum, rc, e)))
			goto out;
		double loss = sum.loss / (double)sum.tokens;
		for (size_t i = 0; i < n; i++)
			g[i] = (float)(g[i] / (double)sum.tokens);
		if (!isfinite(loss)) {
			rc = lora_err_set(e, LORA_EINVAL, "step %ld: the loss is %s; stopping (the last checkpoint is kept)",
			                  step + 1, isnan(loss) ? "NaN" : "infinite");
			goto out;
		}
		double norm = lora_optim_clip_grad_norm(g, n, c->max_grad_norm);
		if (!isfinite(norm)) {
			rc = lora_err_set(e, LORA_EINVAL,
			                  "step %ld: the gradient is not finite; stopping (the last checkpoint is kept)", step + 1);
			goto out;
		}
		double lr = lora_optim_lr_at(&sched, step);
		gather(p, o->adapter);
		if ((rc = lora_optim_step(opt, p, g, n, lr))) {
			rc = lora_err_set(e, rc, "step %ld: optimizer state does not fit the adapter", step + 1);
			goto out;
		}
		size_t bad = lora_dtype_find_nonfinite(p, n);
		if (bad < n) {
			rc = lora_err_set(e, LORA_EINVAL,
			                  "step %ld: a parameter became non-finite; stopping (the last checkpoint is kept)", step + 1);
			goto out;
		}
		scatter(o->adapter, p);
		tokens += sum.tokens;
		s.wait = sum.wait;
		r->wait += sum.wait;
		r->wait_max = sum.wait > r->wait_max ? sum.wait : r->wait_max;
		s.step = step + 1;
		s.loss = loss;
		s.lr = lr;
		s.grad_norm = norm;
		s.elapsed = now() - t0;
		s.tokens_per_s = s.elapsed > 0 ? (double)tokens / s.elapsed : 0;
		s.eval = 0;
		r->step = s.step;
		r->loss = loss;
		if ((rc = log_line(o, &s, e)))
			goto out;
		if (o->report)
			o->report(o->ctx, &s);
		int last = s.step == s.total;
		if (o->eval && ((c->eval_steps > 0 && s.step % c->eval_steps == 0) || last)) {
			lora_llama_set_dropout(o->model, 0, 0);
			lora_eval_opts eo = {.B = B, .T = T, .max_batches = o->eval_batches, .packed = c->sample_packing};
			lora_eval_result er;
			if ((rc = lora_eval_run(o->model, o->eval, &eo, &er, e)))
				goto out;
			s.eval_loss = er.loss;
			r->eval_loss = s.eval_loss;
			s.eval = 1;
			s.elapsed = now() - t0;
			if ((rc = log_line(o, &s, e)))
				goto out;
			if (o->report)
				o->report(o->ctx, &s);
		}
		/* Every rank stops after the same step: the one whose exchange
		 * carried the first request. */
		int stop = sum.stop != 0;
		if (o->ckpt_dir && ((c->save_steps > 0 && s.step % c->save_steps == 0) || stop))
			if ((rc = save_checkpoint(o, opt, s.step, loss, &r->checkpoint, e)))
				goto out;
		if (stop) {
			r->stopped = sum.stop;
			break;
		}
	}
out:
	lora_data_batches_free(&b);
	lora_dist_close(one);
	free(in), free(tg), free(p), free(g);
	return rc;
}
