/* lora-train: fine-tune an adapter on a base model and token data. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "math/blas.h"
#include "cli.h"
#include "ops/init.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "core/outfile.h"
#include "core/rng.h"
#include "train/train.h"

enum {
	O_SET = 256, O_DROPOUT, O_RSLORA, O_SEQ, O_BATCH, O_ACCUM, O_EPOCHS, O_STEPS, O_LR, O_SCHED, O_WARMUP,
	O_WD, O_CLIP, O_OPTIM, O_MOMENTUM, O_SEED, O_EVAL_STEPS, O_SAVE_STEPS, O_EVAL_DATA, O_EVAL_BATCHES,
	O_FORMAT, O_NO_SHUFFLE, O_CKPT, O_RESUME, O_LOG, O_DTYPE, O_RECOMPUTE,
};

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "base model directory (config.json + safetensors)", "@file"},
	{'d', 'd', "data", "DATA", "training tokens (.bin/.u16, .u32, llm.c file, or --data-format)", "@file"},
	{'c', 'c', "config", "FILE", "YAML configuration (axolotl key names); flags override it", "@file"},
	{'o', 'o', "output", "OUT", "trained adapter (default: standard output)", "@file"},
	{'r', 'r', "rank", "R", "lora_r of a new adapter (default 8)", NULL},
	{'a', 'a', "alpha", "A", "lora_alpha of a new adapter (default 16)", NULL},
	{'t', 't', "targets", "LIST", "lora_target_modules of a new adapter, or all-linear (default q_proj,v_proj)", "q_proj,v_proj all-linear"},
	{O_RSLORA, 0, "rslora", NULL, "new adapter scales by alpha/sqrt(r) (peft_use_rslora)", NULL},
	{O_DROPOUT, 0, "dropout", "P", "lora_dropout on the adapter input (default 0)", NULL},
	{O_SEQ, 0, "seq", "T", "sequence_len, tokens per row (default 256)", NULL},
	{O_BATCH, 0, "batch", "B", "micro_batch_size, rows per micro-batch (default 1)", NULL},
	{O_ACCUM, 0, "accum", "N", "gradient_accumulation_steps (default 1)", NULL},
	{O_EPOCHS, 0, "epochs", "E", "num_epochs, may be fractional (default 1)", NULL},
	{O_STEPS, 0, "steps", "N", "max_steps; overrides --epochs", NULL},
	{O_LR, 0, "lr", "LR", "learning_rate (default 2e-4)", NULL},
	{O_SCHED, 0, "scheduler", "KIND", "lr_scheduler: constant, linear or cosine (default)", "constant linear cosine"},
	{O_WARMUP, 0, "warmup", "N", "warmup_steps (default 0)", NULL},
	{O_WD, 0, "weight-decay", "WD", "weight_decay (default 0)", NULL},
	{O_CLIP, 0, "max-grad-norm", "N", "max_grad_norm, 0 disables clipping (default 1)", NULL},
	{O_OPTIM, 0, "optimizer", "KIND", "adamw (default) or sgd", "adamw sgd"},
	{O_MOMENTUM, 0, "momentum", "MU", "sgd_momentum (default 0)", NULL},
	{O_SEED, 0, "seed", "N", "seed for the new adapter, data order and dropout (default 42)", NULL},
	{O_SET, 0, "set", "KEY=VALUE", "set any configuration key (see lora-train(1)); repeatable", NULL},
	{O_EVAL_DATA, 0, "eval-data", "FILE", "held-out tokens: eval loss every eval_steps and at the end", "@file"},
	{O_EVAL_STEPS, 0, "eval-steps", "N", "eval_steps (default 0: only at the end)", NULL},
	{O_EVAL_BATCHES, 0, "eval-batches", "N", "evaluate on the first N batches only (default: all)", NULL},
	{O_SAVE_STEPS, 0, "save-steps", "N", "save_steps: checkpoint every N steps (default 0: off)", NULL},
	{O_CKPT, 0, "checkpoint-dir", "DIR", "where checkpoints go (default OUT.ckpt, or lora-train.ckpt)", "@file"},
	{O_RESUME, 0, "resume", "CKPT", "continue from a checkpoint directory, bit for bit", "@file"},
	{O_FORMAT, 0, "data-format", "FMT", "auto (default), u16, u32, llmc or bytes", "auto u16 u32 llmc bytes"},
	{O_NO_SHUFFLE, 0, "no-shuffle", NULL, "batches in file order (llm.c's rule) instead of shuffled windows", NULL},
	{O_LOG, 0, "log", "FILE", "append one JSON object per step and per eval to FILE", "@file"},
	{O_DTYPE, 0, "dtype", "TYPE", "output storage dtype: f32, f16 or bf16 (default: the input adapter's, else f32)", "f32 f16 bf16"},
	{O_RECOMPUTE, 0, "recompute", NULL, "keep only block inputs and recompute in backward (less memory)", NULL},
	{'j', 'j', "threads", "N", "threads for everything (default: every core)", NULL},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'q', 'q', "quiet", NULL, "no progress line", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-train",
	"-m MODEL -d DATA [ADAPTER|-] [-c CONFIG.yaml] [options] [-o OUT]",
	"Fine-tune a LoRA adapter on a Llama-family model and token data.",
	"ADAPTER (a .lora, '-' for standard input, or a PEFT directory) is the adapter to\n"
	"train; without it a new one is made from -r, -a, -t as lora-init would.\n"
	"SIGINT or SIGTERM finishes the current step, writes a checkpoint and the adapter\n"
	"so far, and exits with 128 + the signal.\n\n"
	"Examples:\n"
	"  lora-init -m base/ -r 16 | lora-train -m base/ -d train.bin -c run.yaml -o run.lora\n"
	"  lora-train -m base/ -d train.bin --eval-data val.bin --steps 500 --lr 1e-4 -o run.lora\n"
	"  lora-train -m base/ -d train.bin --resume run.lora.ckpt/checkpoint-200 -o run.lora\n",
	opts,
	"@file",
};

/* Flags that are configuration keys, applied after the YAML file. */
static const struct {
	int id;
	const char *key;
} keymap[] = {
	{'r', "lora_r"}, {'a', "lora_alpha"}, {'t', "lora_target_modules"}, {O_DROPOUT, "lora_dropout"},
	{O_SEQ, "sequence_len"}, {O_BATCH, "micro_batch_size"}, {O_ACCUM, "gradient_accumulation_steps"},
	{O_EPOCHS, "num_epochs"}, {O_STEPS, "max_steps"}, {O_LR, "learning_rate"}, {O_SCHED, "lr_scheduler"},
	{O_WARMUP, "warmup_steps"}, {O_WD, "weight_decay"}, {O_CLIP, "max_grad_norm"}, {O_OPTIM, "optimizer"},
	{O_MOMENTUM, "sgd_momentum"}, {O_SEED, "seed"}, {O_EVAL_STEPS, "eval_steps"}, {O_SAVE_STEPS, "save_steps"},
};

#define MAX_SETS 128
static const char *set_key[MAX_SETS], *set_val[MAX_SETS];
static char set_buf[MAX_SETS][64];
static size_t nsets;

static void add_set(const char *key, const char *val)
{
	if (nsets == MAX_SETS)
		lora_cli_usage_error(&tool, "too many configuration flags");
	set_key[nsets] = key;
	set_val[nsets++] = val;
}

static volatile sig_atomic_t stop_sig;

static void on_stop(int sig)
{
	if (stop_sig) { /* a second signal: give up now */
		lora_outfile_cleanup();
		signal(sig, SIG_DFL);
		raise(sig);
	}
	stop_sig = sig;
}

typedef struct {
	int tty;
} progress;

static void report(void *ctx, const lora_train_status *s)
{
	progress *p = ctx;
	if (!p->tty)
		return;
	if (s->eval) {
		fprintf(stderr, "\r\033[Klora-train: step %ld/%ld eval loss %.4f\n", s->step, s->total, s->eval_loss);
		return;
	}
	double eta = s->step ? s->elapsed / (double)s->step * (double)(s->total - s->step) : 0;
	fprintf(stderr, "\r\033[Klora-train: step %ld/%ld loss %.4f lr %.3g %.0f tok/s ETA %ldm%02lds", s->step,
	        s->total, s->loss, s->lr, s->tokens_per_s, (long)eta / 60, (long)eta % 60);
	if (s->step == s->total)
		fputc('\n', stderr);
}

/* name:bytes:fnv64 of a data file, for provenance and resume checks. */
static char *data_identity(const char *path, lora_err *e)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
		return NULL;
	}
	uint64_t h = LORA_FNV_INIT, n = 0;
	unsigned char buf[1 << 16];
	size_t k;
	while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
		h = lora_rng_fnv1a(h, buf, k);
		n += k;
	}
	fclose(f);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t len = strlen(base) + 64;
	char *s = malloc(len);
	if (s)
		snprintf(s, len, "%s:%llu:%016llx", base, (unsigned long long)n, (unsigned long long)h);
	return s;
}

/* Re-apply a recorded configuration (JSON object of key -> value). */
static int conf_from_json(lora_trainconf *c, const char *json, lora_err *e)
{
	cJSON *j = cJSON_Parse(json), *it;
	int rc = 0;
	cJSON_ArrayForEach(it, j) {
		char v[4096] = "";
		if (cJSON_IsString(it))
			snprintf(v, sizeof v, "%s", it->valuestring);
		else if (cJSON_IsBool(it))
			snprintf(v, sizeof v, "%s", cJSON_IsTrue(it) ? "true" : "false");
		else if (cJSON_IsNumber(it))
			snprintf(v, sizeof v, "%.17g", it->valuedouble);
		else if (cJSON_IsArray(it)) {
			cJSON *x;
			cJSON_ArrayForEach(x, it) if (cJSON_IsString(x))
				snprintf(v + strlen(v), sizeof v - strlen(v), "%s%s", *v ? "," : "", x->valuestring);
		}
		if ((rc = lora_trainconf_set(c, it->string, v, e)))
			break;
	}
	cJSON_Delete(j);
	return rc;
}

static char *provenance(const lora_trainconf *c, const lora_ckpt *ck, const char *data_id,
                        const char *eval_id, const lora_train_result *r)
{
	cJSON *p = cJSON_CreateObject();
	char *conf = lora_trainconf_json(c), *s;
	cJSON_AddStringToObject(p, "tool", "lora-train " LORA_VERSION);
	cJSON_AddStringToObject(p, "model", ck->name ? ck->name : ck->path);
	cJSON_AddStringToObject(p, "data", data_id);
	if (eval_id)
		cJSON_AddStringToObject(p, "eval_data", eval_id);
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

int main(int argc, char **argv)
{
	const char *model = NULL, *data = NULL, *config = NULL, *out = NULL, *adapter_path = NULL;
	const char *eval_data = NULL, *ckpt = NULL, *resume = NULL, *log_path = NULL;
	size_t eval_batches = 0;
	int shuffle = 1, force = 0, quiet = 0, threads = 0, recompute = 0, dtype = -1, id, rc;
	int training_flags = 0;
	lora_data_format fmt = LORA_DATA_AUTO;
	lora_err e = {0};
	lora_cli cl;
	lora_trainconf conf;
	lora_ckpt *ck = NULL;
	lora_llama *m = NULL;
	lora_adapter *a = NULL;
	lora_data *dtrain = NULL, *deval = NULL;
	lora_optim opt = {0};
	lora_train_result res = {0};
	char *data_id = NULL, *eval_id = NULL, *ckpt_conf = NULL, *ckpt_data = NULL, *ckpt_default = NULL;
	FILE *logf = NULL;
	long start = 0;
	progress pr = {0};

	lora_cli_init(&cl, &tool, argc, argv);
	while ((id = lora_cli_next(&cl)) != LORA_OPT_END) {
		int mapped = 0;
		for (size_t i = 0; i < sizeof keymap / sizeof *keymap; i++)
			if (keymap[i].id == id) {
				if (id == 't' && strcmp(cl.arg, "all-linear") == 0)
					add_set("lora_target_linear", "true");
				else
					add_set(keymap[i].key, cl.arg);
				mapped = training_flags = 1;
			}
		if (mapped)
			continue;
		switch (id) {
		case 'm': model = cl.arg; break;
		case 'd': data = cl.arg; break;
		case 'c': config = cl.arg; training_flags = 1; break;
		case 'o': out = cl.arg; break;
		case O_RSLORA: add_set("peft_use_rslora", "true"); training_flags = 1; break;
		case O_SET: {
			const char *eq = strchr(cl.arg, '=');
			if (!eq || eq == cl.arg || (size_t)(eq - cl.arg) >= sizeof set_buf[0])
				lora_cli_usage_error(&tool, "--set: expected KEY=VALUE, got '%s'", cl.arg);
			memcpy(set_buf[nsets], cl.arg, (size_t)(eq - cl.arg));
			set_buf[nsets][eq - cl.arg] = 0;
			add_set(set_buf[nsets], eq + 1);
			training_flags = 1;
			break;
		}
		case O_EVAL_DATA: eval_data = cl.arg; break;
		case O_EVAL_BATCHES: eval_batches = (size_t)lora_cli_int(&tool, "--eval-batches", cl.arg, 1, 1LL << 40); break;
		case O_FORMAT:
			if (lora_data_format_parse(cl.arg, &fmt))
				lora_cli_usage_error(&tool, "--data-format: '%s' is not auto, u16, u32, llmc or bytes", cl.arg);
			break;
		case O_NO_SHUFFLE: shuffle = 0; break;
		case O_CKPT: ckpt = cl.arg; break;
		case O_RESUME: resume = cl.arg; break;
		case O_LOG: log_path = cl.arg; break;
		case O_DTYPE: {
			lora_dtype t;
			if (lora_dtype_parse(cl.arg, &t))
				lora_cli_usage_error(&tool, "--dtype: '%s' is not f32, f16 or bf16", cl.arg);
			dtype = (int)t;
			break;
		}
		case O_RECOMPUTE: recompute = 1; break;
		case 'j': threads = (int)lora_cli_int(&tool, "-j", cl.arg, 1, 4096); break;
		case 'f': force = 1; break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND:
			if (adapter_path)
				lora_cli_usage_error(&tool, "one adapter at a time (got '%s' and '%s')", adapter_path, cl.arg);
			adapter_path = cl.arg;
			break;
		}
	}
	if (!model || !data)
		lora_cli_usage_error(&tool, "need -m MODEL and -d DATA");
	if (resume && (training_flags || adapter_path))
		lora_cli_usage_error(&tool, "--resume continues with the checkpoint's adapter and configuration; "
		                            "drop the other training options");
	if (lora_trainconf_init(&conf, &e))
		return lora_cli_fail(&tool, &e);
	if (resume) {
		if (lora_train_load_checkpoint(resume, &a, &ckpt_conf, &ckpt_data, &start, &e) ||
		    conf_from_json(&conf, ckpt_conf, &e))
			goto fail;
	} else {
		if (config && lora_trainconf_load(&conf, config, &e))
			goto fail;
		for (size_t i = 0; i < nsets; i++)
			if (lora_trainconf_set(&conf, set_key[i], set_val[i], &e)) {
				lora_trainconf_free(&conf);
				return lora_cli_fail(&tool, &e);
			}
	}
	/* Signals: finish the step, then checkpoint and write what we have. */
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGHUP, on_stop);
	signal(SIGXFSZ, SIG_IGN);
	lora_blas_set_threads(threads);
	if (lora_ckpt_open(&ck, model, &e) || lora_llama_open(&m, ck, &e))
		goto fail;
	if (!resume && adapter_path && lora_load_adapter(&a, adapter_path, &e))
		goto fail;
	if (!a) { /* a new adapter, as lora-init would make it */
		lora_targets t;
		char *list = lora_trainconf_targets(&conf);
		int r = list ? lora_targets_init(&t, list, NULL, &e) : lora_err_set(&e, LORA_ENOMEM, "out of memory");
		free(list);
		if (r || !(a = lora_adapter_new()))
			goto fail;
		a->rslora = conf.peft_use_rslora;
		r = lora_init_from_model(a, ck, &t, (size_t)conf.lora_r, conf.lora_alpha, &e);
		if (!r)
			for (size_t i = 0; i < conf.lora_target_modules.n && !r; i++)
				r = lora_adapter_add_target(a, conf.lora_target_modules.items[i], &e);
		lora_targets_free(&t);
		if (r)
			goto fail;
		lora_init_weights(a, LORA_INIT_KAIMING, (uint64_t)conf.seed);
	}
	if (dtype >= 0)
		a->dtype = (lora_dtype)dtype;
	const char *what = resume ? resume : adapter_path ? (strcmp(adapter_path, "-") ? adapter_path : "standard input") : "the new adapter";
	if (lora_llama_attach(m, a, 1.0, 1, what, &e) ||
	    lora_llama_plan(m, (size_t)conf.micro_batch_size, (size_t)conf.sequence_len,
	                    LORA_LLAMA_TRAIN | (recompute ? LORA_LLAMA_RECOMPUTE : 0), &e))
		goto fail;
	size_t vocab = lora_llama_get_config(m)->vocab_size;
	if (lora_data_open(&dtrain, data, fmt, vocab, &e) || (eval_data && lora_data_open(&deval, eval_data, fmt, vocab, &e)))
		goto fail;
	if (!(data_id = data_identity(data, &e)) || (eval_data && !(eval_id = data_identity(eval_data, &e))))
		goto fail;
	if (resume && strcmp(ckpt_data, data_id) != 0) {
		lora_err_set(&e, LORA_EINVAL, "%s: the checkpoint was trained on %s, not %s", resume, ckpt_data, data_id);
		goto fail;
	}
	lora_optim_conf oc;
	lora_trainconf_optim(&conf, &oc);
	if (lora_optim_init(&opt, &oc, lora_train_nparams(a), &e) || (resume && lora_train_load_optimizer(resume, &opt, &e)))
		goto fail;
	if (!ckpt) {
		const char *b = out && strcmp(out, "-") ? out : "lora-train";
		size_t len = strlen(b) + 6;
		if (!(ckpt_default = malloc(len))) {
			lora_err_set(&e, LORA_ENOMEM, "out of memory");
			goto fail;
		}
		snprintf(ckpt_default, len, "%s.ckpt", b);
		ckpt = ckpt_default;
	}
	/* Refuse an existing output before hours of work, not after. */
	struct stat sb;
	if (out && strcmp(out, "-") && !force && stat(out, &sb) == 0) {
		lora_err_set(&e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", out);
		goto fail;
	}
	if ((!out || !strcmp(out, "-")) && isatty(1)) {
		lora_err_set(&e, LORA_EUSAGE, "refusing to write binary data to a terminal; use -o FILE or a pipe");
		goto fail;
	}
	if (log_path && !(logf = fopen(log_path, "a"))) {
		lora_err_set(&e, LORA_EIO, "%s: %s", log_path, strerror(errno));
		goto fail;
	}
	pr.tty = lora_cli_progress_ok(quiet);
	lora_train_opts to = {
		.conf = &conf, .model = m, .adapter = a, .train = dtrain, .eval = deval, .eval_batches = eval_batches,
		.shuffle = shuffle, .ckpt_dir = ckpt, .data_id = data_id, .log = logf, .stop = &stop_sig,
		.report = report, .ctx = &pr,
	};
	if (lora_train_run(&to, &opt, start, &res, &e))
		goto fail;
	/* What the adapter is: the model it was trained for and how. */
	char fp[17];
	lora_ckpt_fingerprint(ck, fp);
	free(a->base_name), free(a->base_fingerprint), free(a->provenance);
	a->base_name = ck->name ? strdup(ck->name) : NULL;
	a->base_fingerprint = strdup(fp);
	a->provenance = provenance(&conf, ck, data_id, eval_id, &res);
	if (lora_lorafile_save(a, out, force, &e))
		goto fail;
	if (res.stopped) {
		lora_cli_error(&tool, "interrupted at step %ld; checkpoint in %s", res.step,
		               res.checkpoint ? res.checkpoint : "(none)");
		rc = 128 + stop_sig;
	} else {
		rc = LORA_EXIT_OK;
	}
	goto done;
fail:
	if (pr.tty)
		fputc('\n', stderr);
	rc = lora_cli_fail(&tool, &e);
	if (stop_sig && rc == LORA_EXIT_FAIL)
		rc = 128 + stop_sig;
done:
	if (logf)
		fclose(logf);
	free(res.checkpoint);
	free(data_id), free(eval_id), free(ckpt_conf), free(ckpt_data), free(ckpt_default);
	lora_optim_free(&opt);
	lora_data_close(dtrain);
	lora_data_close(deval);
	lora_llama_free(m);
	lora_adapter_free(a);
	lora_ckpt_close(ck);
	lora_trainconf_free(&conf);
	return rc;
}
