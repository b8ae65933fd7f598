/* lora-diff: how two adapters, or a fine-tune and its base, differ. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "math/blas.h"
#include "math/linalg.h"
#include "ops/report.h"

enum { O_JSON = 256, O_TOL, O_SUBSPACE, O_TOP, O_TUNED, O_REGEX };

/* diff(1)'s convention: 0 same, 1 different, 2 trouble (usage included). */
enum { SAME = 0, DIFFERENT = 1, TROUBLE = 2 };

static const lora_opt opts[] = {
	{O_JSON, 0, "json", NULL, "print one JSON document (keys in lora-diff(1))", NULL},
	{O_TOL, 0, "tol", "T", "layers whose relative difference is at most T count as equal (default 1e-6)", NULL},
	{O_SUBSPACE, 0, "subspace", NULL, "add the subspace similarity phi(i, j) of A and of B per layer", NULL},
	{O_TOP, 0, "top", "K", "with --subspace: compare the top K directions of the deltas (default: min rank)", NULL},
	{'m', 'm', "model", "BASE", "base checkpoint: compare it with TUNED, or adapter A with their difference", "@file"},
	{O_TUNED, 0, "tuned", "TUNED", "the fine-tuned checkpoint (with -m)", "@file"},
	{'t', 't', "targets", "LIST", "checkpoints: only these modules' weights (suffixes or all-linear)", "q_proj,v_proj all-linear"},
	{O_REGEX, 0, "target-regex", "RE", "checkpoints: only modules whose whole name matches RE", NULL},
	{'j', 'j', "threads", "N", "threads for the factorisations (default: every core)", NULL},
	{'q', 'q', "quiet", NULL, "print nothing; the exit status tells", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-diff",
	"[options] A B | -m BASE --tuned TUNED [options] [A]",
	"Compare two adapters layer by layer, or measure how low-rank a fine-tune is.",
	"For adapters A and B (files, PEFT directories, or '-' for one of them) every\n"
	"common layer's update dW = s B A is compared from the small factors only:\n"
	"relative Frobenius difference ||dW_A - dW_B|| / max(||dW_A||, ||dW_B||) and\n"
	"cosine similarity. With -m and --tuned, each tensor's ||W_tuned - W_base||,\n"
	"relative change and the ranks keeping 50/90/99% of its energy; with an adapter\n"
	"A as well, each of its layers against W_tuned - W_base, and the changed weights\n"
	"it does not cover.\n"
	"Exit status: as diff(1), 0 when every difference is within --tol, 1 when some\n"
	"differ (or a layer is in one input only), 2 on trouble.\n\n"
	"Examples:\n"
	"  lora-diff run1.lora run2.lora\n"
	"  lora-diff --subspace r8.lora r64.lora\n"
	"  lora-diff -m base/ --tuned finetuned/ -t all-linear\n"
	"  lora-diff -m base/ --tuned finetuned/ extracted.lora\n",
	opts,
	"@file",
};

static void progress(void *ctx, size_t i, size_t n, const char *name)
{
	lora_cli_progress_update(ctx, "%zu/%zu %s", i + 1, n, name);
}

/* Usage errors exit 2 here as everywhere; lora_cli_usage_error does. */
int main(int argc, char **argv)
{
	lora_diff_job j = {.progress = progress};
	lora_report_diff_opts ro = {.tol = 1e-6};
	lora_diff_run r;
	lora_cli c;
	lora_cli_progress pr;
	lora_err e = {0};
	int id, rc, quiet = 0, have_top = 0, same;
	char nb[2048];

	lora_cli_signals();
	lora_cli_fault_exit(TROUBLE);
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_JSON: ro.json = 1; break;
		case O_TOL:
			if ((ro.tol = lora_cli_double(&tool, "--tol", c.arg)) < 0)
				lora_cli_usage_error(&tool, "--tol: '%s' is negative", c.arg);
			break;
		case O_SUBSPACE: j.subspace = ro.subspace = 1; break;
		case O_TOP: j.top = (size_t)lora_cli_int(&tool, "--top", c.arg, 1, 1 << 30), have_top = 1; break;
		case 'm': j.base = c.arg; break;
		case O_TUNED: j.tuned = c.arg; break;
		case 't': j.targets = c.arg; break;
		case O_REGEX: j.regex = c.arg; break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND:
			if (j.a && j.b)
				lora_cli_usage_error(&tool, "unexpected operand '%s': compare two adapters at a time", c.arg);
			*(j.a ? &j.b : &j.a) = c.arg;
			break;
		}
	}
	if (lora_diff_job_check(&j, have_top, &e))
		lora_cli_usage_error(&tool, "%s", e.msg);
	if (j.a)
		lora_cli_stdin(&tool, j.a);
	if (j.b)
		lora_cli_stdin(&tool, j.b);
	lora_cli_progress_start(&pr, &tool, quiet);
	j.ctx = &pr;
	rc = lora_diff_run_job(&r, &j, &e);
	lora_cli_progress_end(&pr);
	snprintf(nb, sizeof nb, "%s - %s", j.tuned, j.base);
	ro.a = j.a && strcmp(j.a, "-") ? j.a : "standard input";
	ro.b = j.base ? nb : strcmp(j.b, "-") ? j.b : "standard input";
	ro.base = j.base, ro.tuned = j.tuned;
	if (!rc && !quiet)
		rc = r.models ? lora_report_diff_models(stdout, &r.tensors, &ro, &e) : lora_report_diff(stdout, &r.layers, &ro, &e);
	if (!rc)
		r.models ? lora_diff_models_count(&r.tensors, ro.tol, &same) : lora_diff_count(&r.layers, ro.tol, &same);
	lora_diff_run_free(&r);
	if (rc) {
		lora_cli_fail(&tool, &e);
		return TROUBLE;
	}
	return lora_cli_flush(&tool) ? TROUBLE : same ? SAME : DIFFERENT;
}
