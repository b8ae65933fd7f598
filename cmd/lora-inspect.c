/* lora-inspect: what an adapter or checkpoint holds, from the terminal. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "io/ckpt.h"
#include "io/gguflora.h"
#include "io/peft.h"
#include "math/blas.h"
#include "math/linalg.h"
#include "ops/report.h"

enum { O_JSON = 256, O_PER_LAYER, O_STATS, O_CHECK, O_TOP };

static const lora_opt opts[] = {
	{O_JSON, 0, "json", NULL, "print one JSON document (keys in lora-inspect(1))", NULL},
	{O_PER_LAYER, 0, "per-layer", NULL, "one row per layer (per tensor for checkpoints)", NULL},
	{O_STATS, 0, "stats", NULL, "add ||scale*B*A||_F and top singular values per layer (reads payloads)", NULL},
	{O_TOP, 0, "top", "K", "singular values shown per layer with --stats (default 4)", NULL},
	{O_CHECK, 0, "check", NULL, "read and verify every payload CRC, like gzip -t", NULL},
	{'j', 'j', "threads", "N", "threads for --stats (default: every core)", NULL},
	LORA_OPT_ALIAS(O_PER_LAYER, 0, "layers", NULL),
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-inspect",
	"[options] [FILE|DIR|-]",
	"Show format, ranks, alpha, targets, parameters and size of an adapter or\n"
	"checkpoint.",
	"FILE is a .lora adapter, a GGUF adapter or model (llama.cpp's), a\n"
	".safetensors checkpoint or a sharded index; DIR a model directory. A PEFT\n"
	"adapter directory (adapter_config.json + adapter_model.safetensors) or its\n"
	"adapter_model.safetensors is shown like a .lora. '-' (or no operand) reads a\n"
	".lora from standard input. Without --stats or --check only the .lora header\n"
	"(the GGUF tensor infos) is read, so inspecting a large adapter is\n"
	"instant.\n\n"
	"Examples:\n"
	"  lora-inspect run.lora\n"
	"  lora-inspect --json run.lora | jq .parameters\n"
	"  lora-init --shape w=64x64 | lora-inspect --stats -\n",
	opts,
	"@file",
};

/* A .lora: the header only unless payloads are wanted; a pipe is drained
 * (and verified) all the same, or its writer would get SIGPIPE. */
static int read_lora(lora_adapter **a, const char *path, int stats, int check, lora_err *e)
{
	struct stat sb;
	int regular = (strcmp(path, "-") ? stat(path, &sb) : fstat(0, &sb)) == 0 && S_ISREG(sb.st_mode);
	int mode = stats ? LORA_READ_ALL : check || !regular ? LORA_READ_VERIFY : LORA_READ_HEADER;
	return lora_lorafile_read(a, path, mode, e);
}

static int inspect(const char *path, int stats, int check, const lora_report_opts *o, lora_err *e)
{
	const char *name = strcmp(path, "-") ? path : "standard input";
	lora_load_kind k;
	lora_adapter *a = NULL;
	lora_svd_spectrum *st = NULL;
	lora_ckpt *m = NULL;
	int rc = lora_load_kind_of(path, &k, e);
	if (rc)
		return rc;
	if (k == LORA_LOAD_CKPT) {
		if (!(rc = lora_ckpt_open(&m, path, e)))
			rc = lora_report_ckpt(stdout, name, m, o, e);
		lora_ckpt_close(m);
		return rc;
	}
	if (k == LORA_LOAD_GGUF) { /* a model, unless it says it is an adapter */
		lora_gguf *g = NULL;
		const char *ty = NULL;
		size_t n = 0;
		if ((rc = lora_gguf_open(&g, path, e)))
			return rc;
		const lora_gguf_kv *kv = lora_gguf_kv_find(g, "general.type");
		int model = !(kv && !lora_gguf_kv_str(kv, 0, &ty, &n) && n == 7 && !memcmp(ty, "adapter", 7)) &&
		            !lora_gguf_kv_find(g, "adapter.type");
		if (model)
			rc = lora_report_gguf_model(stdout, name, g, o, e);
		lora_gguf_close(g);
		if (model)
			return rc;
	}
	/* A PEFT adapter is small and its safetensors header is validated as a
	 * whole, so it is simply loaded. */
	if (k == LORA_LOAD_GGUF)
		rc = lora_gguflora_read(&a, path, NULL, !stats && !check, e);
	else
		rc = k == LORA_LOAD_PEFT ? lora_load_adapter(&a, path, e) : read_lora(&a, path, stats, check, e);
	if (!rc && stats)
		rc = lora_svd_spectra(&st, a, e);
	if (!rc)
		rc = lora_report_adapter(stdout, name, a, k == LORA_LOAD_GGUF ? LORA_REPORT_GGUF : k == LORA_LOAD_PEFT, st, o, e);
	lora_svd_spectra_free(st, a ? a->nlayers : 0);
	lora_adapter_free(a);
	return rc;
}

int main(int argc, char **argv)
{
	lora_report_opts o = {.top = 4};
	const char *path = NULL;
	int id, stats = 0, check = 0;
	lora_err e = {0};
	lora_cli c;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_JSON: o.json = 1; break;
		case O_PER_LAYER: o.per_layer = 1; break;
		case O_STATS: stats = 1; break;
		case O_CHECK: check = 1; break;
		case O_TOP: o.top = (size_t)lora_cli_int(&tool, "--top", c.arg, 0, 1 << 20); break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		case LORA_OPT_OPERAND:
			if (path)
				lora_cli_usage_error(&tool, "one input at a time (got '%s' and '%s')", path, c.arg);
			path = c.arg;
			break;
		}
	}
	if (!path)
		path = "-";
	lora_cli_stdin(&tool, path);
	if (inspect(path, stats, check, &o, &e))
		return lora_cli_fail(&tool, &e);
	return lora_cli_flush(&tool);
}
