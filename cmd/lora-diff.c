/* lora-diff: how two adapters, or a fine-tune and its base, differ. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ops/diff.h"
#include "io/load.h"

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
	{'q', 'q', "quiet", NULL, "print nothing; the exit status tells", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-diff",
	"[options] A B | -m BASE --tuned TUNED [options] [A]",
	"Compare two adapters layer by layer, or measure how low-rank a fine-tune is.",
	"For adapters A and B (files, PEFT directories, or '-' for one of them) every common\n"
	"layer's update dW = s B A is compared from the small factors only: relative\n"
	"Frobenius difference ||dW_A - dW_B|| / max(||dW_A||, ||dW_B||) and cosine\n"
	"similarity. With -m and --tuned, each tensor's ||W_tuned - W_base||, relative change\n"
	"and the ranks keeping 50/90/99% of its energy; with an adapter A as well, each of\n"
	"its layers against W_tuned - W_base, and the changed weights it does not cover.\n"
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

typedef struct {
	const char *a, *b, *base, *tuned, *targets, *regex;
	int json, subspace, quiet, have_top;
	size_t top;
	double tol;
} settings;

static void progress(void *ctx, size_t i, size_t n, const char *name)
{
	(void)ctx;
	fprintf(stderr, "\r\033[K%s: %zu/%zu %s", tool.name, i + 1, n, name);
	fflush(stderr);
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* "-" for NaN, "inf", else v with %.*g (exp: %.*e). */
static void fmt_num(char *buf, size_t n, double v, int exp, int prec)
{
	if (isnan(v))
		snprintf(buf, n, "-");
	else if (isinf(v))
		snprintf(buf, n, "inf");
	else if (exp)
		snprintf(buf, n, "%.*e", prec, v);
	else
		snprintf(buf, n, "%.*g", prec, v);
}

static cJSON *matrix_json(const double *m, size_t rows, size_t cols)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t i = 0; i < rows; i++) {
		cJSON *r = cJSON_CreateArray();
		for (size_t j = 0; j < cols; j++)
			cJSON_AddItemToArray(r, cJSON_CreateNumber(m[i * cols + j]));
		cJSON_AddItemToArray(a, r);
	}
	return a;
}

static cJSON *names_json(const char *const *names, size_t n)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t i = 0; i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(names[i]));
	return a;
}

/* Grid indices shown in the text table: 1, 2, 4, ... and the last. */
static size_t grid(size_t *idx, size_t k)
{
	size_t n = 0;
	for (size_t v = 1; v < k; v *= 2)
		idx[n++] = v;
	idx[n++] = k;
	return n;
}

static void print_phi(const char *label, const double *phi, size_t rows, size_t cols)
{
	size_t ri[70], ci[70], nr = grid(ri, rows), nc = grid(ci, cols);
	char lab[32];
	printf("  phi(i, j) of %-18s", label);
	for (size_t j = 0; j < nc; j++) {
		snprintf(lab, sizeof lab, "j=%zu", ci[j]);
		printf(" %7s", lab);
	}
	printf("\n");
	for (size_t i = 0; i < nr; i++) {
		snprintf(lab, sizeof lab, "i=%zu", ri[i]);
		printf("  %31s", lab);
		for (size_t j = 0; j < nc; j++)
			printf(" %7.4f", phi[(ri[i] - 1) * cols + ci[j] - 1]);
		printf("\n");
	}
}

static int differs_layer(const lora_diff_layer *d, double tol)
{
	return !(d->rel_diff <= tol) || (!isnan(d->vec_diff) && !(d->vec_diff <= tol));
}

/* Print a layer comparison (adapter against adapter, or against a
 * checkpoint difference named nb); return SAME or DIFFERENT. */
static int report_layers(const settings *s, const lora_diff_result *r, const char *na, const char *nb)
{
	size_t ndiff = 0;
	for (size_t i = 0; i < r->nlayers; i++)
		ndiff += differs_layer(&r->layers[i], s->tol);
	int same = !ndiff && !r->n_only_a && !r->n_only_b, ckpt = s->base != NULL;
	if (s->quiet) {
	} else if (s->json) {
		cJSON *j = cJSON_CreateObject(), *ls;
		cJSON_AddStringToObject(j, "a", na);
		cJSON_AddStringToObject(j, "b", nb);
		if (ckpt) {
			cJSON_AddStringToObject(j, "base", s->base);
			cJSON_AddStringToObject(j, "tuned", s->tuned);
		}
		cJSON_AddNumberToObject(j, "tolerance", s->tol);
		cJSON_AddBoolToObject(j, "same", same);
		cJSON_AddNumberToObject(j, "differing", (double)ndiff);
		ls = cJSON_AddArrayToObject(j, "layers");
		for (size_t i = 0; i < r->nlayers; i++) {
			const lora_diff_layer *d = &r->layers[i];
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "name", d->name);
			cJSON_AddNumberToObject(o, "out", (double)d->out);
			cJSON_AddNumberToObject(o, "in", (double)d->in);
			cJSON_AddNumberToObject(o, "rank_a", (double)d->rank_a);
			if (ckpt)
				cJSON_AddNullToObject(o, "rank_b");
			else
				cJSON_AddNumberToObject(o, "rank_b", (double)d->rank_b);
			cJSON_AddNumberToObject(o, "norm_a", d->norm_a);
			cJSON_AddNumberToObject(o, "norm_b", d->norm_b);
			cJSON_AddNumberToObject(o, "rel_diff", d->rel_diff);
			cJSON_AddItemToObject(o, "cosine", num_or_null(d->cosine));
			cJSON_AddItemToObject(o, "vectors_diff", num_or_null(d->vec_diff));
			cJSON_AddBoolToObject(o, "differs", differs_layer(d, s->tol));
			if (s->subspace) {
				cJSON *sub = cJSON_AddObjectToObject(o, "subspace");
				cJSON_AddItemToObject(sub, "phi_A", matrix_json(d->phi_A, d->phiA_rows, d->phiA_cols));
				cJSON_AddItemToObject(sub, "phi_B", matrix_json(d->phi_B, d->phiB_rows, d->phiB_cols));
				cJSON_AddNumberToObject(sub, "top", (double)d->top);
				cJSON_AddNumberToObject(sub, "top_out", d->top_out);
				cJSON_AddNumberToObject(sub, "top_in", d->top_in);
			}
			cJSON_AddItemToArray(ls, o);
		}
		cJSON_AddItemToObject(j, "only_in_a", names_json(r->only_a, r->n_only_a));
		cJSON_AddItemToObject(j, "only_in_b", names_json(r->only_b, r->n_only_b));
		char *txt = cJSON_Print(j);
		if (txt)
			puts(txt);
		cJSON_free(txt);
		cJSON_Delete(j);
	} else {
		size_t w = 5;
		for (size_t i = 0; i < r->nlayers; i++)
			if (strlen(r->layers[i].name) > w)
				w = strlen(r->layers[i].name);
		printf("%-*s %11s %9s %11s %11s %10s %9s\n", (int)w, "layer", "out x in", "rank a/b", "||dW_a||",
		       ckpt ? "||dW_ckpt||" : "||dW_b||", "rel.diff", "cosine");
		for (size_t i = 0; i < r->nlayers; i++) {
			const lora_diff_layer *d = &r->layers[i];
			char shp[48], rk[48], cs[32];
			snprintf(shp, sizeof shp, "%zux%zu", d->out, d->in);
			if (ckpt)
				snprintf(rk, sizeof rk, "%zu/-", d->rank_a);
			else
				snprintf(rk, sizeof rk, "%zu/%zu", d->rank_a, d->rank_b);
			fmt_num(cs, sizeof cs, d->cosine, 0, 6);
			printf("%-*s %11s %9s %11.5g %11.5g %10.3e %9s%s\n", (int)w, d->name, shp, rk, d->norm_a, d->norm_b,
			       d->rel_diff, cs, differs_layer(d, s->tol) ? " *" : "");
			if (!isnan(d->vec_diff) && !(d->vec_diff <= s->tol))
				printf("  DoRA magnitudes / lora_B biases differ: %.3e\n", d->vec_diff);
			if (s->subspace) {
				print_phi("A (input space)", d->phi_A, d->phiA_rows, d->phiA_cols);
				print_phi("B (output space)", d->phi_B, d->phiB_rows, d->phiB_cols);
				printf("  top-%zu directions of dW: output space %.4f, input space %.4f\n", d->top, d->top_out,
				       d->top_in);
			}
		}
		for (size_t i = 0; i < r->n_only_a; i++)
			printf("only in %s: %s\n", na, r->only_a[i]);
		for (size_t i = 0; i < r->n_only_b; i++) {
			if (ckpt)
				printf("changed in %s, not in %s: %s\n", s->tuned, na, r->only_b[i]);
			else
				printf("only in %s: %s\n", nb, r->only_b[i]);
		}
		if (ckpt)
			printf("%zu layers, %zu differ (*, tolerance %g), %zu changed tensors not in %s\n", r->nlayers, ndiff,
			       s->tol, r->n_only_b, na);
		else
			printf("%zu common layers, %zu differ (*, tolerance %g), %zu only in %s, %zu only in %s\n", r->nlayers,
			       ndiff, s->tol, r->n_only_a, na, r->n_only_b, nb);
	}
	return same ? SAME : DIFFERENT;
}

static const char *display(const char *path) { return strcmp(path, "-") ? path : "standard input"; }

static int run_adapters(const settings *s, lora_err *e)
{
	lora_adapter *a = NULL, *b = NULL;
	lora_diff_result r = {0};
	int rc;
	if (strcmp(s->a, "-") == 0 && strcmp(s->b, "-") == 0)
		return lora_err_set(e, LORA_EUSAGE, "only one of A and B can be standard input");
	if ((rc = lora_load_adapter(&a, s->a, e)) || (rc = lora_load_adapter(&b, s->b, e)) ||
	    (rc = lora_diff_adapters(&r, a, display(s->a), b, display(s->b), s->subspace, s->top, e)))
		goto out;
	rc = report_layers(s, &r, display(s->a), display(s->b));
out:
	lora_diff_result_free(&r);
	lora_adapter_free(a);
	lora_adapter_free(b);
	return rc;
}

/* One adapter against the checkpoint difference TUNED - BASE. */
static int run_adapter_model(const settings *s, lora_err *e)
{
	lora_adapter *a = NULL;
	lora_ckpt *base = NULL, *tuned = NULL;
	lora_targets t = {0}, *tp = NULL;
	lora_diff_result r = {0};
	char nb[2048];
	int rc;
	if (s->targets || s->regex) {
		if ((rc = lora_targets_init(&t, s->targets, s->regex, e)))
			goto out;
		tp = &t;
	}
	if ((rc = lora_load_adapter(&a, s->a, e)) || (rc = lora_ckpt_open(&base, s->base, e)) ||
	    (rc = lora_ckpt_open(&tuned, s->tuned, e)))
		goto out;
	int prog = lora_cli_progress_ok(s->quiet);
	rc = lora_diff_adapter_model(&r, a, display(s->a), base, tuned, tp, prog ? progress : NULL, NULL, e);
	if (prog)
		fprintf(stderr, "\r\033[K");
	if (rc)
		goto out;
	snprintf(nb, sizeof nb, "%s - %s", s->tuned, s->base);
	rc = report_layers(s, &r, display(s->a), nb);
out:
	lora_diff_result_free(&r);
	lora_targets_free(&t);
	lora_adapter_free(a);
	lora_ckpt_close(base);
	lora_ckpt_close(tuned);
	return rc;
}

static int differs_tensor(const lora_diff_tensor *d, double tol) { return !(d->relative <= tol); }

static void rank_str(char *buf, size_t n, long r)
{
	if (r < 0)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%ld", r);
}

static int run_models(const settings *s, lora_err *e)
{
	lora_ckpt *base = NULL, *tuned = NULL;
	lora_targets t = {0}, *tp = NULL;
	lora_diff_models_result r = {0};
	int rc;
	if (s->targets || s->regex) {
		if ((rc = lora_targets_init(&t, s->targets, s->regex, e)))
			goto out;
		tp = &t;
	}
	if ((rc = lora_ckpt_open(&base, s->base, e)) || (rc = lora_ckpt_open(&tuned, s->tuned, e)))
		goto out;
	int prog = lora_cli_progress_ok(s->quiet);
	rc = lora_diff_models(&r, base, tuned, tp, prog ? progress : NULL, NULL, e);
	if (prog)
		fprintf(stderr, "\r\033[K");
	if (rc)
		goto out;
	size_t ndiff = 0;
	for (size_t i = 0; i < r.ntensors; i++)
		ndiff += differs_tensor(&r.tensors[i], s->tol);
	int same = !ndiff && !r.n_only_base && !r.n_only_tuned;
	if (s->quiet) {
	} else if (s->json) {
		cJSON *j = cJSON_CreateObject(), *ls;
		cJSON_AddStringToObject(j, "base", s->base);
		cJSON_AddStringToObject(j, "tuned", s->tuned);
		cJSON_AddNumberToObject(j, "tolerance", s->tol);
		cJSON_AddBoolToObject(j, "same", same);
		cJSON_AddNumberToObject(j, "differing", (double)ndiff);
		ls = cJSON_AddArrayToObject(j, "tensors");
		for (size_t i = 0; i < r.ntensors; i++) {
			const lora_diff_tensor *d = &r.tensors[i];
			cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
			cJSON_AddStringToObject(o, "name", d->name);
			for (size_t k = 0; k < d->ndim; k++)
				cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)d->shape[k]));
			cJSON_AddItemToObject(o, "shape", sh);
			cJSON_AddItemToObject(o, "norm", num_or_null(d->norm));
			cJSON_AddItemToObject(o, "base_norm", num_or_null(d->base_norm));
			cJSON_AddItemToObject(o, "relative", num_or_null(d->relative));
			long rk[3] = {d->rank50, d->rank90, d->rank99};
			const char *key[3] = {"rank_50", "rank_90", "rank_99"};
			for (int k = 0; k < 3; k++)
				cJSON_AddItemToObject(o, key[k], rk[k] < 0 ? cJSON_CreateNull() : cJSON_CreateNumber((double)rk[k]));
			cJSON_AddBoolToObject(o, "differs", differs_tensor(d, s->tol));
			cJSON_AddItemToArray(ls, o);
		}
		cJSON_AddItemToObject(j, "only_in_base", names_json(r.only_base, r.n_only_base));
		cJSON_AddItemToObject(j, "only_in_tuned", names_json(r.only_tuned, r.n_only_tuned));
		char *txt = cJSON_Print(j);
		if (txt)
			puts(txt);
		cJSON_free(txt);
		cJSON_Delete(j);
	} else {
		size_t w = 6;
		for (size_t i = 0; i < r.ntensors; i++)
			if (strlen(r.tensors[i].name) > w)
				w = strlen(r.tensors[i].name);
		printf("%-*s %13s %11s %10s %5s %5s %5s\n", (int)w, "tensor", "shape", "||dW||", "relative", "r50", "r90",
		       "r99");
		for (size_t i = 0; i < r.ntensors; i++) {
			const lora_diff_tensor *d = &r.tensors[i];
			char shp[64] = "", nm[32], rel[32], r1[24], r2[24], r3[24];
			size_t used = 0;
			for (size_t k = 0; k < d->ndim && used < sizeof shp; k++)
				used += (size_t)snprintf(shp + used, sizeof shp - used, "%s%zu", k ? "x" : "", d->shape[k]);
			if (!d->ndim)
				snprintf(shp, sizeof shp, "scalar");
			fmt_num(nm, sizeof nm, d->norm, 0, 5);
			fmt_num(rel, sizeof rel, d->relative, 1, 3);
			rank_str(r1, sizeof r1, d->rank50);
			rank_str(r2, sizeof r2, d->rank90);
			rank_str(r3, sizeof r3, d->rank99);
			printf("%-*s %13s %11s %10s %5s %5s %5s\n", (int)w, d->name, shp, nm, rel, r1, r2, r3);
		}
		for (size_t i = 0; i < r.n_only_base; i++)
			printf("only in %s: %s\n", s->base, r.only_base[i]);
		for (size_t i = 0; i < r.n_only_tuned; i++)
			printf("only in %s: %s\n", s->tuned, r.only_tuned[i]);
		printf("%zu common tensors, %zu differ (tolerance %g), %zu only in %s, %zu only in %s\n", r.ntensors,
		       ndiff, s->tol, r.n_only_base, s->base, r.n_only_tuned, s->tuned);
	}
	rc = same ? SAME : DIFFERENT;
out:
	lora_diff_models_free(&r);
	lora_targets_free(&t);
	lora_ckpt_close(base);
	lora_ckpt_close(tuned);
	return rc;
}

/* Usage errors exit 2 here as everywhere; lora_cli_usage_error does. */
int main(int argc, char **argv)
{
	settings s = {.tol = 1e-6};
	lora_cli c;
	lora_err e = {0};
	int id, rc;
	lora_cli_signals();
	lora_cli_fault_exit(TROUBLE);
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_JSON: s.json = 1; break;
		case O_TOL:
			s.tol = lora_cli_double(&tool, "--tol", c.arg);
			if (s.tol < 0)
				lora_cli_usage_error(&tool, "--tol: '%s' is negative", c.arg);
			break;
		case O_SUBSPACE: s.subspace = 1; break;
		case O_TOP:
			s.top = (size_t)lora_cli_int(&tool, "--top", c.arg, 1, 1 << 30);
			s.have_top = 1;
			break;
		case 'm': s.base = c.arg; break;
		case O_TUNED: s.tuned = c.arg; break;
		case 't': s.targets = c.arg; break;
		case O_REGEX: s.regex = c.arg; break;
		case 'q': s.quiet = 1; break;
		case LORA_OPT_OPERAND:
			if (!s.a)
				s.a = c.arg;
			else if (!s.b)
				s.b = c.arg;
			else
				lora_cli_usage_error(&tool, "unexpected operand '%s': compare two adapters at a time", c.arg);
			break;
		}
	}
	if (s.base || s.tuned) {
		if (!s.base || !s.tuned)
			lora_cli_usage_error(&tool, s.base ? "-m BASE needs --tuned TUNED" : "--tuned TUNED needs -m BASE");
		if (s.b)
			lora_cli_usage_error(&tool, "unexpected operand '%s': -m and --tuned take one adapter at most", s.b);
		if (s.subspace || s.have_top)
			lora_cli_usage_error(&tool, "%s compares adapters, not checkpoints", s.subspace ? "--subspace" : "--top");
		if (s.targets && s.regex)
			lora_cli_usage_error(&tool, "-t and --target-regex are exclusive");
		rc = s.a ? run_adapter_model(&s, &e) : run_models(&s, &e);
	} else {
		if (!s.b)
			lora_cli_usage_error(&tool, s.a ? "need a second adapter B" : "need two adapters A and B, or -m and --tuned");
		if (s.targets || s.regex)
			lora_cli_usage_error(&tool, "%s goes with -m and --tuned", s.targets ? "-t" : "--target-regex");
		if (s.have_top && !s.subspace)
			lora_cli_usage_error(&tool, "--top goes with --subspace");
		rc = run_adapters(&s, &e);
	}
	if (rc < 0) {
		lora_cli_fail(&tool, &e);
		return TROUBLE;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		lora_cli_error(&tool, "standard output: write error: %s", strerror(errno));
		return TROUBLE;
	}
	return rc;
}
