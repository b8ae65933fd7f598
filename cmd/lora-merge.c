/* lora-merge: fold adapters into a checkpoint offline, streaming. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "load.h"
#include "merge.h"

enum { O_SUBTRACT = 256, O_DTYPE, O_IGNORE };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "checkpoint: safetensors file, sharded index or model directory", "@file"},
	{'o', 'o', "output", "OUT", "output file (for a file model) or directory (otherwise)", "@file"},
	{O_SUBTRACT, 0, "subtract", NULL, "subtract the adapters instead: W - k*s*B*A (task switch)", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "output dtype: keep (default: each tensor's own), f32, f16 or bf16", "keep f32 f16 bf16"},
	{O_IGNORE, 0, "ignore-unknown", NULL, "skip adapter tensors that are not linear LoRA factors", NULL},
	{'f', 'f', "force", NULL, "replace an existing output", NULL},
	{'q', 'q', "quiet", NULL, "no progress on standard error", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-merge",
	"-m MODEL ADAPTER[:SCALE]... -o OUT [options]",
	"Merge LoRA adapters into a checkpoint: W' = W + sum SCALE * (alpha/r) * B A.",
	"ADAPTER is a .lora file, '-' for standard input, or a PEFT adapter directory;\n"
	"SCALE (default 1) multiplies its update. Tensors are processed one at a time\n"
	"from a memory map, so memory stays bounded by the largest tensor whatever the\n"
	"model size. Every adapter layer is matched and shape-checked before anything\n"
	"is written, and the output appears only when complete.\n\n"
	"Examples:\n"
	"  lora-merge -m base/ run.lora -o merged/\n"
	"  lora-merge -m base/ style.lora:0.7 task.lora:1.2 -o merged/\n"
	"  lora-merge -m merged/ run.lora --subtract -o base-again/\n",
	opts,
	"@file",
};

typedef struct {
	struct timespec t0;
	int shown;
} progress;

static void show(void *ctx, size_t done, size_t total, uint64_t bytes, uint64_t total_bytes)
{
	progress *p = ctx;
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	double dt = (double)(t.tv_sec - p->t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - p->t0.tv_nsec);
	fprintf(stderr, "\rlora-merge: %zu/%zu tensors, %.2f/%.2f GB, %.0f MB/s   ", done, total, bytes / 1e9,
	        total_bytes / 1e9, dt > 0 ? bytes / 1e6 / dt : 0.0);
	p->shown = 1;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *out = NULL;
	lora_merge_opts mo = {.dtype = -1};
	lora_merge_input *in = NULL;
	lora_adapter **loaded = NULL;
	char **paths = NULL;
	size_t n = 0, merged = 0;
	int quiet = 0, id, rc = LORA_EXIT_OK;
	lora_err e = {0};
	lora_model *m = NULL;
	lora_cli c;
	progress pr = {0};

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': model = c.arg; break;
		case 'o': out = c.arg; break;
		case O_SUBTRACT: mo.subtract = 1; break;
		case O_IGNORE: mo.ignore_unknown = 1; break;
		case 'f': mo.force = 1; break;
		case 'q': quiet = 1; break;
		case O_DTYPE: {
			lora_dtype t;
			if (strcmp(c.arg, "keep") == 0)
				mo.dtype = -1;
			else if (lora_dtype_parse(c.arg, &t) == 0)
				mo.dtype = (int)t;
			else
				lora_cli_usage_error(&tool, "--dtype: '%s' is not keep, f32, f16 or bf16", c.arg);
			break;
		}
		case LORA_OPT_OPERAND:
			/* Operands are kept in argv itself (each took an argv slot at or
			 * after this one), so a usage error exits with nothing allocated. */
			argv[n++] = (char *)c.arg;
			break;
		}
	}
	if (!model)
		lora_cli_usage_error(&tool, "need -m MODEL");
	if (!n)
		lora_cli_usage_error(&tool, "need at least one ADAPTER");
	if (!out)
		lora_cli_usage_error(&tool, "need -o OUT");
	loaded = calloc(n, sizeof *loaded);
	paths = calloc(n, sizeof *paths);
	in = calloc(n, sizeof *in);
	if (!loaded || !paths || !in) {
		lora_err_set(&e, LORA_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		if (lora_load_spec(argv[i], &paths[i], &in[i].scale, &e))
			goto fail;
	for (size_t i = 0; i < n; i++) {
		if (lora_load_adapter(&loaded[i], paths[i], &e))
			goto fail;
		in[i].a = loaded[i];
		in[i].path = strcmp(paths[i], "-") ? paths[i] : "standard input";
	}
	if (lora_model_open(&m, model, &e))
		goto fail;
	if (lora_cli_progress_ok(quiet)) {
		clock_gettime(CLOCK_MONOTONIC, &pr.t0);
		mo.progress = show;
		mo.ctx = &pr;
	}
	if (lora_merge(m, in, n, out, &mo, &merged, &e))
		goto fail;
	if (pr.shown)
		fprintf(stderr, "\rlora-merge: %zu tensors merged into %s\033[K\n", merged, out);
	goto done;
fail:
	if (pr.shown)
		fputc('\n', stderr);
	rc = lora_cli_fail(&tool, &e);
done:
	for (size_t i = 0; i < n; i++) {
		if (loaded)
			lora_adapter_free(loaded[i]);
		if (paths)
			free(paths[i]);
	}
	free(loaded);
	free(paths);
	free(in);
	lora_model_close(m);
	return rc;
}
