/* lora-merge: fold adapters into a checkpoint offline, streaming. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/path.h"
#include "io/lorafile.h"
#include "math/blas.h"
#include "math/linalg.h"
#include "model/ggufmeta.h"
#include "ops/combine.h"

enum { O_SUBTRACT = 256, O_DTYPE, O_IGNORE, O_COMBINE, O_ENERGY };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "checkpoint: safetensors file, sharded index or model directory", "@file"},
	{'o', 'o', "output", "OUT", "output file (for a file model, or OUT.gguf for llama.cpp) or directory", "@file"},
	{O_SUBTRACT, 0, "subtract", NULL, "subtract the adapters instead: W - k*s*B*A (task switch)", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "output dtype: keep (default: each tensor's own), f32, f16, bf16, q8_0 (GGUF)",
	 "keep f32 f16 bf16 q8_0"},
	{O_IGNORE, 0, "ignore-unknown", NULL, "skip adapter tensors that are not linear LoRA factors", NULL},
	{O_COMBINE, 0, "combine", "MODE", "without -m: combine the adapters into one, cat (exact) or svd", "cat svd"},
	{'r', 'r', "rank", "R", "--combine svd: rank of the result", NULL},
	{O_ENERGY, 0, "energy", "E", "--combine svd: per layer the smallest rank keeping fraction E of ||dW||^2", NULL},
	{'j', 'j', "threads", "N", "threads: one writes, the others compute (default: every core)", NULL},
	{'f', 'f', "force", NULL, "replace an existing output", NULL},
	{'q', 'q', "quiet", NULL, "no progress on standard error", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-merge",
	"-m MODEL ADAPTER[:SCALE]... -o OUT [options]\n--combine cat|svd ADAPTER[:SCALE]... [-o OUT] [options]",
	"Merge LoRA adapters into a checkpoint: W' = W + sum SCALE * (alpha/r) * B A.",
	"ADAPTER is a .lora file, '-' for standard input, or a PEFT adapter directory;\n"
	"SCALE (default 1) multiplies its update. Tensors are processed one at a time\n"
	"from a memory map, so memory stays bounded by the largest tensor whatever the\n"
	"model size. Every adapter layer is matched and shape-checked before anything\n"
	"is written, and the output appears only when complete.\n"
	"-o OUT.gguf writes one GGUF model that llama.cpp and Ollama run: llama.cpp's\n"
	"tensor names and q/k row order, the hyperparameters of config.json and the\n"
	"tokenizer of tokenizer.json and tokenizer_config.json (both beside MODEL's\n"
	"weights); vectors and norms stay f32, --dtype q8_0 quantizes the matrices.\n"
	"Without -m, --combine writes one adapter whose update is the weighted sum of\n"
	"the inputs': cat exactly (ranks add up), svd re-ranked to -r R or --energy E.\n\n"
	"Examples:\n"
	"  lora-merge -m base/ run.lora -o merged/\n"
	"  lora-merge -m base/ style.lora:0.7 task.lora:1.2 -o merged/\n"
	"  lora-merge -m base/ run.lora --dtype q8_0 -o merged.gguf\n"
	"  lora-merge -m merged/ run.lora --subtract -o base-again/\n"
	"  lora-merge --combine svd -r 16 a.lora:0.5 b.lora:0.5 -o mix.lora\n",
	opts,
	"@file",
};

static void progress(void *ctx, size_t done, size_t total, uint64_t bytes, uint64_t total_bytes)
{
	lora_cli_progress *p = ctx;
	double dt = lora_cli_progress_elapsed(p);
	lora_cli_progress_update(p, "%zu/%zu tensors, %.2f/%.2f GB, %.0f MB/s", done, total, bytes / 1e9,
	                         total_bytes / 1e9, dt > 0 ? bytes / 1e6 / dt : 0.0);
}

int main(int argc, char **argv)
{
	const char *model = NULL, *out = NULL;
	lora_merge_opts mo = {.dtype = -1, .progress = progress};
	lora_merge_input *in = NULL;
	lora_adapter *res = NULL;
	lora_ckpt *m = NULL;
	lora_ggufmeta *gm = NULL;
	lora_merge_gguf mg = {.type = -1};
	lora_config cfg;
	lora_dtype dt;
	size_t n = 0, merged = 0, rank = 0;
	int quiet = 0, id, rc, combine = 0, q8 = 0;
	double energy = 0;
	lora_err e = {0};
	lora_cli c;
	lora_cli_progress pr;

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
		case O_COMBINE:
			if (!(combine = !strcmp(c.arg, "cat") ? 1 : !strcmp(c.arg, "svd") ? 2 : 0))
				lora_cli_usage_error(&tool, "--combine: '%s' is not cat or svd", c.arg);
			break;
		case 'r': rank = (size_t)lora_cli_int(&tool, "--rank", c.arg, 1, 1 << 24); break;
		case O_ENERGY:
			energy = lora_cli_double(&tool, "--energy", c.arg);
			if (!(energy > 0 && energy <= 1))
				lora_cli_usage_error(&tool, "--energy: '%s' is not in (0, 1]", c.arg);
			break;
		case O_DTYPE:
			mo.dtype = -1;
			if (!(q8 = !strcmp(c.arg, "q8_0")) && strcmp(c.arg, "keep")) {
				if (lora_dtype_parse(c.arg, &dt))
					lora_cli_usage_error(&tool, "--dtype: '%s' is not keep, f32, f16, bf16 or q8_0", c.arg);
				mo.dtype = (int)dt;
			}
			break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		/* Operands are kept in argv itself (each took an argv slot at or
		 * after this one), so a usage error exits with nothing allocated. */
		case LORA_OPT_OPERAND: argv[n++] = (char *)c.arg; break;
		}
	}
	if (!model == !combine)
		lora_cli_usage_error(&tool, model ? "--combine makes an adapter; it does not take -m"
		                                  : "need -m MODEL (or --combine cat|svd)");
	if (!n)
		lora_cli_usage_error(&tool, "need at least one ADAPTER");
	if (model && !out)
		lora_cli_usage_error(&tool, "need -o OUT");
	if (combine == 2 && !rank == !energy)
		lora_cli_usage_error(&tool, "--combine svd needs one of -r R or --energy E");
	if ((rank || energy) && combine != 2)
		lora_cli_usage_error(&tool, "-r and --energy go with --combine svd");
	if (combine && (mo.subtract || mo.ignore_unknown))
		lora_cli_usage_error(&tool, "--subtract and --ignore-unknown go with -m");
	int gguf = model && lora_path_has_suffix(out, ".gguf");
	if (q8 && !gguf)
		lora_cli_usage_error(&tool, "--dtype q8_0 is for a GGUF model (-o OUT.gguf)");
	for (size_t i = 0; i < n; i++)
		lora_cli_stdin(&tool, argv[i]);
	lora_cli_progress_start(&pr, &tool, quiet);
	mo.ctx = &pr;
	if (!(rc = lora_merge_inputs_load(&in, argv, n, &e)) && combine) {
		if (!(rc = lora_combine_inputs(&res, in, n, combine == 2, rank, energy, &e))) {
			if (mo.dtype >= 0)
				res->dtype = (lora_dtype)mo.dtype;
			rc = lora_lorafile_save(res, out, mo.force, &e);
		}
	} else if (!rc && !(rc = lora_ckpt_open(&m, model, &e)) && gguf) {
		mg.type = q8 ? LORA_GGML_Q8_0 : mo.dtype >= 0 ? lora_gguf_ggml_of((lora_dtype)mo.dtype) : -1;
		if (!m->config_path)
			rc = lora_err_set(&e, LORA_EINVAL, "%s: no config.json beside the weights: a GGUF model needs it", model);
		else if (!(rc = lora_config_read(&cfg, m->config_path, &e)) &&
		         !(rc = lora_ggufmeta_build(&gm, &cfg, m, mg.type, &e))) {
			mg.kv = lora_ggufmeta_kv(gm, &mg.nkv);
			mg.arch = lora_ggufmeta_arch(gm);
			if ((mg.extra_data = lora_ggufmeta_rope_freqs(gm, &mg.extra_n)))
				mg.extra = "rope_freqs.weight";
			mg.n_heads = cfg.n_heads;
			mg.n_kv_heads = cfg.n_kv_heads;
			mo.gguf = &mg;
		}
	}
	if (!rc && model && !(rc = lora_merge_checkpoint(m, in, n, out, &mo, &merged, &e))) {
		lora_cli_progress_note(&pr, "%zu tensors merged into %s", merged, out);
	}
	lora_cli_progress_end(&pr);
	if (rc)
		rc = lora_cli_fail(&tool, &e);
	lora_adapter_free(res);
	lora_merge_inputs_free(in, n);
	lora_ggufmeta_free(gm);
	lora_ckpt_close(m);
	return rc;
}
