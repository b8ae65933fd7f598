#include "train/job.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* lora-train --json: what the run did, one object. */
static int report(FILE *f, const lora_trainconf *c, const lora_train_result *r, int ranks, lora_err *e)
{
	cJSON *o = cJSON_CreateObject();
	long steps = r->step;
	cJSON_AddNumberToObject(o, "steps", (double)steps);
	if (isfinite(r->loss))
		cJSON_AddNumberToObject(o, "train_loss", r->loss);
	if (isfinite(r->eval_loss))
		cJSON_AddNumberToObject(o, "eval_loss", r->eval_loss);
	cJSON_AddBoolToObject(o, "interrupted", r->stopped != 0);
	if (r->checkpoint)
		cJSON_AddStringToObject(o, "checkpoint", r->checkpoint);
	cJSON_AddNumberToObject(o, "ranks", ranks);
	cJSON_AddNumberToObject(o, "global_batch", (double)(c->micro_batch_size * c->gradient_accumulation_steps));
	cJSON_AddNumberToObject(o, "reduce_s", r->wait);
	cJSON_AddNumberToObject(o, "reduce_s_max", r->wait_max);
	char *text = cJSON_Print(o);
	cJSON_Delete(o);
	if (!text)
		return lora_err_nomem(e);
	fprintf(f, "%s\n", text);
	cJSON_free(text);
	return 0;
}

/* What a run holds open; freed by release. */
typedef struct {
	lora_ckpt *ck;
	lora_llama *m;
	lora_adapter *a;
	lora_data *train, *eval;
	lora_optim opt;
	lora_dist *dist;
	char *data_id, *eval_id, *ckpt_data, *ckpt_default;
	FILE *log;
	char *log_made; /* the log, when this run created it */
	long start;
	int rank, ranks;
} state;

static void release(state *s)
{
	if (s->log)
		fclose(s->log);
	free(s->log_made);
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
	if (j->adapter && s->ranks > 1 && !strcmp(j->adapter, "-"))
		return lora_err_set(e, LORA_EUSAGE, "with %d ranks the adapter must be a file: standard input reaches rank 0 only",
		                    s->ranks);
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

/* Over ranks, the configuration says the global accumulation: what one
 * process would use for the same result, so that the adapter and the
 * checkpoints are the same bytes at any rank count and a checkpoint
 * resumes under any count that divides it. */
static int share_steps(const lora_job *j, lora_trainconf *conf, state *s, lora_err *e)
{
	long long *g = &conf->gradient_accumulation_steps;
	if (s->ranks == 1)
		return 0;
	if (j->resume) {
		if (*g % s->ranks)
			return lora_err_set(e, LORA_EUSAGE,
			                    "%s: gradient_accumulation_steps %lld (the global count) does not divide among %d ranks",
			                    j->resume, *g, s->ranks);
		return 0;
	}
	if (*g > (1LL << 20) / s->ranks)
		return lora_err_set(e, LORA_EUSAGE, "gradient_accumulation_steps %lld x %d ranks is too many", *g, s->ranks);
	*g *= s->ranks;
	return 0;
}

/* Model, adapter, data, optimizer: everything before the first step. */
static int open_all(const lora_job *j, lora_trainconf *conf, state *s, lora_err *e)
{
	int rc;
	if ((rc = lora_ckpt_open(&s->ck, j->model, e)) || (rc = lora_llama_open(&s->m, s->ck, e)) ||
	    (rc = adapter(j, conf, s, e)) || (rc = lora_llama_set_compute(s->m, (lora_llama_compute)conf->compute, e)))
		return rc;
	if ((rc = share_steps(j, conf, s, e)))
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
	if ((rc = lora_tokenize_open_data(&s->train, j->model, j->tokenizer, j->data, j->format, vocab, nt, e)) ||
	    (j->eval_data && s->rank == 0 &&
	     (rc = lora_tokenize_open_data(&s->eval, j->model, j->tokenizer, j->eval_data, j->format, vocab, nt, e))))
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

/* The first bytes of every log lora-train writes (check_outputs). */
#define LOG_HEAD "{\"compute\":\""

/* 1 if the file starts as a lora-train log does. */
static int is_log(const char *path)
{
	char buf[sizeof LOG_HEAD];
	FILE *f = fopen(path, "rb");
	int yes = f && fread(buf, 1, sizeof buf - 1, f) == sizeof buf - 1 && memcmp(buf, LOG_HEAD, sizeof buf - 1) == 0;
	if (f)
		fclose(f);
	return yes;
}

/* The log: a new file; one that already is a lora-train log (appended
 * to); another file only with -f (replaced), and never an input; a device
 * or FIFO as it is. A log this run creates is noted, so that a run refused
 * afterwards removes it. */
static int open_log(const lora_job *j, state *s, lora_err *e)
{
	struct stat sb;
	int exists, rc = 0, fd;
	const char *mode = "a";
	char *target = lora_outfile_resolve(j->log, &sb, &exists);
	if (!target)
		return lora_err_set(e, LORA_EIO, "%s: %s", j->log, strerror(errno));
	if (exists && S_ISDIR(sb.st_mode))
		rc = lora_err_set(e, LORA_EINVAL, "%s: is a directory", j->log);
	else if (exists && !S_ISREG(sb.st_mode) && !S_ISCHR(sb.st_mode) && !S_ISFIFO(sb.st_mode))
		rc = lora_err_set(e, LORA_EINVAL, "%s: is not a regular file, character device or FIFO", j->log);
	else if ((!exists || S_ISREG(sb.st_mode)) && (rc = lora_outfile_guard(j->log, target, 0, e)))
		; /* an input */
	else if (exists && S_ISREG(sb.st_mode) && !is_log(target) && !j->force)
		rc = lora_err_set(e, LORA_EINVAL, "%s: exists and is not a lora-train log; not appending to it (use -f to replace it)",
		                  j->log);
	else if (exists && S_ISREG(sb.st_mode) && !is_log(target))
		mode = "w";
	if (!rc && !exists) {
		if ((fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666)) < 0)
			rc = lora_err_set(e, LORA_EIO, "%s: cannot create: %s", j->log, strerror(errno));
		else if (!(s->log = fdopen(fd, "a")))
			close(fd), unlink(target), rc = lora_err_nomem(e);
		else
			s->log_made = target, target = NULL;
	} else if (!rc && !(s->log = fopen(target, mode))) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", j->log, strerror(errno));
	}
	free(target);
	return rc;
}

/* 1 if a and b name one existing file. */
static int same_file(const char *a, const FILE *f)
{
	struct stat x, y;
	return f && stat(a, &x) == 0 && fstat(fileno((FILE *)f), &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* Refuse an output that would fail at the end before hours of work, not
 * after, and a checkpoint directory that is or lies in an input. */
static int check_outputs(const lora_job *j, state *s, const char *ckpt, lora_err *e)
{
	struct stat sb;
	int exists, rc;
	if (s->ranks > 1 && (!j->out || !strcmp(j->out, "-")))
		return lora_err_set(e, LORA_EUSAGE, "with %d ranks the adapter needs a file (-o FILE): standard output "
		                    "passes through the launcher", s->ranks);
	if (s->rank > 0)
		return 0;
	rc = lora_outfile_check(j->out, LORA_OUT_BINARY | (j->force ? LORA_OUT_FORCE : 0), e);
	char *target = rc ? NULL : lora_outfile_resolve(ckpt, &sb, &exists);
	if (!rc && !target)
		rc = lora_err_set(e, LORA_EIO, "%s: %s", ckpt, strerror(errno));
	if (!rc && exists && !S_ISDIR(sb.st_mode))
		rc = lora_err_set(e, LORA_EINVAL, "%s: exists and is not a directory", ckpt);
	if (!rc)
		rc = lora_outfile_guard(ckpt, target, 0, e);
	free(target);
	return rc;
}

/* Rank 0's log, once every rank is ready: nothing is written for a job
 * that does not start, and a refused run removes a log it created. */
static int start_log(const lora_job *j, const lora_trainconf *conf, state *s, lora_err *e)
{
	int rc = 0;
	if (s->rank > 0 || !j->log)
		goto note;
	if ((rc = open_log(j, s, e)))
		return rc;
	if (j->out && strcmp(j->out, "-") && same_file(j->out, s->log))
		rc = lora_err_set(e, LORA_EUSAGE, "%s: -o and --log name the same file", j->out);
	if (!rc) {
		fprintf(s->log, LOG_HEAD "%s\",\"weight_bytes\":%zu,\"activation_bytes\":%zu,\"ranks\":%d,\"global_batch\":%lld}\n",
		        lora_dtype_name(lora_llama_compute_dtype(s->m)), lora_llama_weight_bytes(s->m),
		        lora_llama_activation_bytes(s->m), s->ranks, conf->micro_batch_size * conf->gradient_accumulation_steps);
		if (fflush(s->log) != 0 || ferror(s->log))
			rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", j->log, strerror(errno));
	}
	if (rc) {
		if (s->log_made)
			unlink(s->log_made);
		return rc;
	}
note:
	if (j->note) {
		char line[256];
		lora_llama_describe(s->m, line, sizeof line);
		j->note(j->ctx, line);
	}
	return 0;
}

/* Every rank has the model and the data rank 0 has: a different copy on
 * one host would train on other numbers without a word. */
static int same_inputs(const lora_job *j, state *s, lora_err *e)
{
	char fp[17], *mine = NULL, *root = NULL;
	size_t len = strlen(s->data_id) + sizeof fp + 2;
	int rc = 0;
	lora_ckpt_fingerprint(s->ck, fp);
	if (!(mine = malloc(len)))
		return lora_err_nomem(e);
	snprintf(mine, len, "%s %s", s->data_id, fp);
	rc = lora_dist_root_text(s->dist, mine, &root, e);
	if (!rc && strcmp(mine, root)) {
		char *sp = strrchr(root, ' ');
		rc = sp && strcmp(sp + 1, fp) ? lora_err_set(e, LORA_EINVAL, "%s: not rank 0's model (fingerprint %s, rank 0 has %s)",
		                                            s->ck->path, fp, sp + 1)
		                                : lora_err_set(e, LORA_EINVAL, "%s: not rank 0's data (%s; rank 0 has %.*s)", j->data,
		                                               s->data_id, sp ? (int)(sp - root) : (int)strlen(root), root);
	}
	free(mine), free(root);
	return rc;
}

/* The default checkpoint directory: OUT.ckpt beside a file output, else
 * (standard output, a device, a FIFO) lora-train.ckpt. */
static int ckpt_default(const lora_job *j, char **out, lora_err *e)
{
	struct stat sb;
	int file = j->out && strcmp(j->out, "-") && !(stat(j->out, &sb) == 0 && !S_ISREG(sb.st_mode));
	const char *b = file ? j->out : "lora-train";
	size_t len = strlen(b) + 6;
	if (!(*out = malloc(len)))
		return lora_err_nomem(e);
	snprintf(*out, len, "%s.ckpt", b);
	return 0;
}

int lora_job_run(const lora_job *j, lora_trainconf *conf, lora_train_result *r, lora_err *e)
{
	state s = {.dist = j->dist, .ranks = 1};
	int rc;
	memset(r, 0, sizeof *r);
	if (s.dist)
		s.rank = lora_dist_rank(s.dist), s.ranks = lora_dist_size(s.dist);
	rc = open_all(j, conf, &s, e);
	if (!rc && !j->ckpt_dir)
		rc = ckpt_default(j, &s.ckpt_default, e);
	const char *ckpt = j->ckpt_dir ? j->ckpt_dir : s.ckpt_default;
	if (!rc)
		rc = check_outputs(j, &s, ckpt, e);
	/* A failure on one rank ends every rank, with one line. */
	if ((rc = s.dist ? lora_dist_agree(s.dist, rc, e) : rc))
		goto out;
	if (s.ranks > 1 && (rc = lora_dist_agree(s.dist, same_inputs(j, &s, e), e)))
		goto out;
	rc = start_log(j, conf, &s, e);
	if ((rc = s.ranks > 1 ? lora_dist_agree(s.dist, rc, e) : rc))
		goto out;
	lora_train_opts to = {
		.conf = conf, .model = s.m, .adapter = s.a, .train = s.train, .eval = s.eval,
		.eval_batches = j->eval_batches, .shuffle = j->shuffle, .ckpt_dir = ckpt, .data_id = s.data_id,
		.log = s.log, .log_name = j->log, .stop = j->stop, .report = j->report, .ctx = j->ctx, .dist = s.dist,
	};
	if (s.rank > 0) /* rank 0 alone writes and evaluates */
		to.ckpt_dir = NULL, to.eval = NULL, to.report = NULL;
	if ((rc = lora_train_run(&to, &s.opt, s.start, r, e)))
		goto out;
	/* What the adapter is: the model it was trained for and how. */
	char fp[17];
	lora_ckpt_fingerprint(s.ck, fp);
	free(s.a->base_name), free(s.a->base_fingerprint), free(s.a->provenance);
	s.a->base_name = s.ck->name ? strdup(s.ck->name) : NULL;
	s.a->base_fingerprint = strdup(fp);
	s.a->provenance = provenance(conf, s.ck, s.m, s.data_id, s.eval_id, r);
	if (s.rank == 0 && !(rc = lora_lorafile_save(s.a, j->out, j->force, e)) && j->json)
		rc = report(j->json, conf, r, s.ranks, e);
	/* The others wait for rank 0's write: a launcher ends the whole job
	 * when its first process exits with a signal's status. */
	if (s.ranks > 1)
		rc = lora_dist_agree(s.dist, rc, e);
out:
	release(&s);
	return rc;
}
