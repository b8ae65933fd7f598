/* lora-train: fine-tune an adapter on a base model and token data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "math/blas.h"
#include "train/job.h"

enum {
	O_SET = 256, O_EVAL_DATA, O_EVAL_BATCHES, O_FORMAT, O_NO_SHUFFLE, O_CKPT, O_RESUME, O_LOG, O_DTYPE,
	O_RECOMPUTE, O_JSON, O_TOKENIZER, O_KEY = 1000, /* O_KEY + i: the flag of configuration key i */
};

/* The options that are not configuration keys; those come from the key
 * table (lora_trainconf_keys), defaults and all, after the first FIXED_HEAD. */
enum { FIXED_HEAD = 5 };
static const lora_opt fixed[] = {
	{'m', 'm', "model", "MODEL", "base model directory (config.json + safetensors)", "@file"},
	{'d', 'd', "data", "FILE",
	 "training tokens (.bin/.u16, .u32, llm.c file, .tok), or .jsonl/.txt tokenized with the model's tokenizer",
	 "@file"},
	{'c', 'c', "config", "FILE", "YAML configuration (axolotl key names); flags override it", "@file"},
	{'o', 'o', "output", "FILE", "trained adapter (default: standard output)", "@file"},
	{O_SET, 0, "set", "KEY=VALUE", "set any configuration key (see lora-train(1)); repeatable", NULL},
	{O_EVAL_DATA, 0, "eval-data", "FILE", "held-out tokens: eval loss every eval_steps and at the end", "@file"},
	{O_TOKENIZER, 0, "tokenizer", "FILE", "a tokenizer.json for .jsonl/.txt data (default: the model directory's)",
	 "@file"},
	{O_EVAL_BATCHES, 0, "eval-batches", "N", "evaluate on the first N batches only (default: all)", NULL},
	{O_CKPT, 0, "checkpoint-dir", "DIR", "where checkpoints go (default OUT.ckpt, or lora-train.ckpt)", "@file"},
	{O_RESUME, 0, "resume", "CKPT", "continue from a checkpoint directory, bit for bit", "@file"},
	{O_FORMAT, 0, "data-format", "FMT", "auto (default), u16, u32, llmc, tok or bytes", "auto u16 u32 llmc tok bytes"},
	{O_NO_SHUFFLE, 0, "no-shuffle", NULL, "batches in file order (llm.c's rule) instead of shuffled windows", NULL},
	{O_LOG, 0, "log", "FILE", "append one JSON object per step and per eval to FILE", "@file"},
	{O_DTYPE, 0, "dtype", "TYPE", "output storage dtype: f32, f16 or bf16 (default: the input adapter's, else f32)", "f32 f16 bf16"},
	{O_RECOMPUTE, 0, "recompute", NULL, "keep only block inputs and recompute in backward (less memory)", NULL},
	{O_JSON, 0, "json", NULL, "print a JSON report of the run (keys in lora-train(1)); needs -o", NULL},
	{'j', 'j', "threads", "N", "threads for everything (default: every core)", NULL},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'q', 'q', "quiet", NULL, "no progress line", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};
#define NFIXED (sizeof fixed / sizeof *fixed)

static lora_opt opts[NFIXED + 32];
static char helps[32][256];
static const lora_tool tool = {
	"lora-train",
	"-m MODEL -d DATA [ADAPTER|-] [-c CONFIG] [options] [-o OUT]",
	"Fine-tune a LoRA adapter on a Llama-family model and token data.",
	"ADAPTER (a .lora, '-' for standard input, or a PEFT directory) is the adapter\n"
	"to train; without it a new one is made from -r, -a, -t as lora-init would.\n"
	"SIGINT or SIGTERM finishes the current step, writes a checkpoint and the\n"
	"adapter so far, and exits with 128 + the signal.\n\n"
	"Examples:\n"
	"  lora-init -m base/ -r 16 | lora-train -m base/ -d train.bin -o run.lora\n"
	"  lora-train -m base/ -d train.bin -c run.yaml --steps 500 -o run.lora\n"
	"  lora-train -m base/ -d train.bin --resume run.lora.ckpt/checkpoint-200\n"
	"  mpirun --hostfile hosts -np 2 lora-train -m base/ -d train.bin -o run.lora\n",
	opts,
	"@file",
};

/* A row per key that has a flag, its help ending with the key's name and
 * default, among the fixed options. */
static void build_options(void)
{
	size_t n, k = FIXED_HEAD, h = 0;
	const lora_trainconf_key *keys = lora_trainconf_keys(&n);
	memcpy(opts, fixed, FIXED_HEAD * sizeof *fixed);
	for (size_t i = 0; i < n; i++)
		if (keys[i].flag && h < sizeof helps / sizeof *helps) {
			snprintf(helps[h], sizeof helps[h], "%s (%s; default %s)", keys[i].help, keys[i].key, keys[i].def);
			opts[k++] = (lora_opt){O_KEY + (int)i, keys[i].shortopt, keys[i].flag, keys[i].metavar, helps[h++],
			                       keys[i].choices};
		}
	memcpy(opts + k, fixed + FIXED_HEAD, (NFIXED - FIXED_HEAD) * sizeof *fixed);
}

static void report(void *ctx, const lora_train_status *s)
{
	lora_cli_progress *p = ctx;
	if (s->eval) {
		lora_cli_progress_note(p, "step %ld/%ld eval loss %.4f", s->step, s->total, s->eval_loss);
		return;
	}
	long eta = s->step ? (long)(s->elapsed / (double)s->step * (double)(s->total - s->step)) : 0;
	lora_cli_progress_update(p, "step %ld/%ld loss %.4f lr %.3g %.0f tok/s ETA %ldm%02lds", s->step, s->total,
	                         s->loss, s->lr, s->tokens_per_s, eta / 60, eta % 60);
}

/* Configuration flags are applied in a second pass over the command line,
 * once the file is read, so that they win whatever their order. */
static int apply_flags(lora_trainconf *conf, int argc, char **argv, lora_err *e)
{
	lora_cli cl;
	int id, rc = 0;
	lora_cli_init(&cl, &tool, argc, argv);
	while (!rc && (id = lora_cli_next(&cl)) != LORA_OPT_END)
		if (id == O_SET)
			rc = lora_trainconf_set_pair(conf, cl.arg, e);
		else if (id >= O_KEY)
			rc = lora_trainconf_set_flag(conf, (size_t)(id - O_KEY), cl.arg, e);
	return rc;
}

int main(int argc, char **argv)
{
	lora_job j = {.shuffle = 1, .dtype = -1, .report = report, .note = lora_cli_note};
	const char *config = NULL;
	int quiet = 0, flags = 0, id, rc;
	lora_err e = {0};
	lora_cli cl;
	lora_cli_progress pr;
	lora_trainconf conf;
	lora_train_result res = {0};
	lora_dist *dist = NULL;

	/* Under a launcher every rank parses the same line: rank 0 alone
	 * says what is wrong with it. */
	int rank = lora_dist_env_rank(), err_fd = -1;
	if (rank > 0 && (err_fd = dup(2)) >= 0 && !freopen("/dev/null", "w", stderr))
		return LORA_EXIT_FAIL;
	build_options();
	lora_cli_init(&cl, &tool, argc, argv);
	while ((id = lora_cli_next(&cl)) != LORA_OPT_END) {
		flags |= id >= O_KEY || id == O_SET;
		switch (id) {
		case 'm': j.model = cl.arg; break;
		case 'd': j.data = cl.arg; break;
		case 'c': config = cl.arg; break;
		case 'o': j.out = cl.arg; break;
		case O_EVAL_DATA: j.eval_data = cl.arg; break;
		case O_TOKENIZER: j.tokenizer = cl.arg; break;
		case O_EVAL_BATCHES: j.eval_batches = (size_t)lora_cli_int(&tool, "--eval-batches", cl.arg, 1, 1LL << 40); break;
		case O_FORMAT: j.format = lora_cli_data_format(&tool, "--data-format", cl.arg); break;
		case O_NO_SHUFFLE: j.shuffle = 0; break;
		case O_CKPT: j.ckpt_dir = cl.arg; break;
		case O_RESUME: j.resume = cl.arg; break;
		case O_LOG: j.log = cl.arg; break;
		case O_DTYPE: j.dtype = lora_cli_dtype(&tool, "--dtype", cl.arg, 0); break;
		case O_RECOMPUTE: j.recompute = 1; break;
		case O_JSON: j.json = stdout; break;
		case 'j': lora_cli_threads(&tool, cl.arg); break;
		case 'f': j.force = 1; break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND:
			if (j.adapter)
				lora_cli_usage_error(&tool, "one adapter at a time (got '%s' and '%s')", j.adapter, cl.arg);
			j.adapter = cl.arg;
			break;
		}
	}
	if (!j.model || !j.data)
		lora_cli_usage_error(&tool, "need -m MODEL and -d DATA");
	if (j.json && (!j.out || !strcmp(j.out, "-")))
		lora_cli_usage_error(&tool, "--json needs -o FILE: the adapter would share standard output");
	if (j.resume && (config || flags || j.adapter))
		lora_cli_usage_error(&tool, "--resume continues with the checkpoint's adapter and configuration; "
		                            "drop the other training options");
	if (j.adapter)
		lora_cli_stdin(&tool, j.adapter);
	if (lora_trainconf_init(&conf, &e) || (config && lora_trainconf_load(&conf, config, &e)) ||
	    apply_flags(&conf, argc, argv, &e) || lora_dist_open(&dist, 1, &e)) {
		lora_trainconf_free(&conf);
		return lora_cli_fail(&tool, &e);
	}
	if (err_fd >= 0 && (dup2(err_fd, 2) < 0 || close(err_fd) < 0))
		return LORA_EXIT_FAIL;
	/* A signal finishes the step, then a checkpoint and the adapter so far are written. */
	j.stop = lora_cli_stop_signals();
	j.dist = dist;
	lora_blas_threads(); /* the default, when -j did not set it */
	lora_cli_progress_start(&pr, &tool, quiet || rank > 0);
	j.ctx = &pr;
	rc = lora_job_run(&j, &conf, &res, &e) ? lora_cli_fail(&tool, &e) : LORA_EXIT_OK;
	if (res.stopped && rank == 0)
		lora_cli_error(&tool, "interrupted at step %ld; checkpoint in %s", res.step,
		               res.checkpoint ? res.checkpoint : "(none)");
	if (res.stopped || (*j.stop && rc == LORA_EXIT_FAIL))
		rc = 128 + (res.stopped ? res.stopped : *j.stop);
	lora_cli_progress_end(&pr);
	if (j.json && (rc == LORA_EXIT_OK || res.stopped) && lora_cli_flush(&tool))
		rc = LORA_EXIT_FAIL;
	free(res.checkpoint);
	lora_trainconf_free(&conf);
	lora_dist_close(dist);
	/* Another rank's failure, said by that rank: the launcher ends the
	 * job at the first exit with a failing status, and may drop what it
	 * has not yet passed on, so the quiet ranks leave a moment later. */
	if (rc != LORA_EXIT_OK && !res.stopped && !e.msg[0])
		usleep(500000);
	return rc;
}
