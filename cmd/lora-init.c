/* lora-init: a new adapter for a model's target layers. */
#include <stdio.h>

#include "cli.h"
#include "io/lorafile.h"
#include "ops/init.h"

enum { O_SHAPE = 256, O_LAYERS, O_REGEX, O_INIT, O_SEED, O_DTYPE, O_RSLORA };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "base model: safetensors file, sharded index or model directory", "@file"},
	{O_SHAPE, 0, "shape", "NAME=OUTxIN", "adapt a bare OUT x IN matrix called NAME (repeatable; no model)", NULL},
	{'r', 'r', "rank", "R", "rank r of every layer (default 8)", NULL},
	{'a', 'a', "alpha", "A", "alpha; scaling is alpha/r (default 8)", NULL},
	{'t', 't', "targets", "LIST", "module-name suffixes, or all-linear (default q_proj,v_proj)", "q_proj,v_proj all-linear"},
	{O_REGEX, 0, "target-regex", "RE", "adapt modules whose whole name matches RE (extended regex)", NULL},
	{O_LAYERS, 0, "layers", "LIST", "only blocks with these indices, e.g. 0-3,7", NULL},
	{O_INIT, 0, "init", "KIND", "kaiming (PEFT's default), gaussian or zeros", "kaiming gaussian zeros"},
	{O_SEED, 0, "seed", "N", "random seed (default 42): same seed, same bytes", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "storage dtype: f32 (default), f16 or bf16", "f32 f16 bf16"},
	{O_RSLORA, 0, "rslora", NULL, "scale by alpha/sqrt(r) (rank-stabilised LoRA)", NULL},
	{'o', 'o', "output", "FILE", "write the adapter to FILE (default: standard output)", "@file"},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'q', 'q', "quiet", NULL, "print nothing on standard error but errors", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-init",
	"(-m MODEL | --shape NAME=OUTxIN...) [options] [-o OUT]",
	"Create a new LoRA adapter (.lora) for the target layers of a model.",
	"A starts random and B at zero, so the adapted model starts equal to the base.\n"
	"Only tensor names and shapes are read from MODEL, never its weights. The\n"
	"defaults are lora-train's: the same options make the same adapter.\n\n"
	"Examples:\n"
	"  lora-init -m base/ -r 16 -a 32 -t q_proj,k_proj,v_proj,o_proj -o new.lora\n"
	"  lora-init -m base/ -t all-linear --layers 0-3 | lora-inspect -\n"
	"  lora-init --shape w=4096x4096 -r 8 -o w.lora\n",
	opts,
	NULL,
};

int main(int argc, char **argv)
{
	const char *model = NULL, *out = NULL;
	char **shapes = argv;
	size_t nshapes = 0;
	int force = 0, quiet = 0, id, rc;
	lora_init_opts o;
	lora_err e = {0};
	lora_cli c;
	lora_ckpt *m = NULL;
	lora_adapter *a = NULL;

	lora_init_defaults(&o);
	o.tool = "lora-init " LORA_VERSION;
	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': model = c.arg; break;
		case O_SHAPE:
			/* kept in argv (an earlier slot), so usage errors leave nothing allocated */
			shapes[nshapes++] = (char *)c.arg;
			break;
		case 'r': o.rank = (size_t)lora_cli_int(&tool, "--rank", c.arg, 1, 1 << 20); break;
		case 'a': o.alpha = lora_cli_double(&tool, "--alpha", c.arg); break;
		case 't': o.targets = c.arg; break;
		case O_REGEX: o.regex = c.arg; break;
		case O_LAYERS: o.layers = c.arg; break;
		case O_INIT:
			if (lora_init_parse(c.arg, &o.kind))
				lora_cli_usage_error(&tool, "--init: '%s' is not kaiming, gaussian or zeros", c.arg);
			break;
		case O_SEED: o.seed = (uint64_t)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case O_DTYPE: o.dtype = (lora_dtype)lora_cli_dtype(&tool, "--dtype", c.arg, 0); break;
		case O_RSLORA: o.rslora = 1; break;
		case 'o': out = c.arg; break;
		case 'f': force = 1; break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND: lora_cli_usage_error(&tool, "unexpected operand '%s'", c.arg);
		}
	}
	if (!model == !nshapes)
		lora_cli_usage_error(&tool, model ? "-m and --shape are exclusive" : "need -m MODEL or --shape NAME=OUTxIN");
	if ((rc = (model && lora_ckpt_open(&m, model, &e)) || lora_init_new(&a, m, shapes, nshapes, &o, &e) ||
	          lora_lorafile_save(a, out, force, &e)))
		rc = lora_cli_fail(&tool, &e);
	else if (lora_cli_progress_ok(quiet))
		fprintf(stderr, "lora-init: %zu layers, rank %zu, %llu parameters\n", a->nlayers, o.rank,
		        (unsigned long long)lora_adapter_params(a));
	lora_ckpt_close(m);
	lora_adapter_free(a);
	return rc;
}
