/* lora-init: a new adapter for a model's target layers. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ops/init.h"
#include "io/lorafile.h"

enum { O_SHAPE = 256, O_LAYERS, O_REGEX, O_INIT, O_SEED, O_DTYPE, O_RSLORA };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "base model: safetensors file, sharded index or model directory", "@file"},
	{O_SHAPE, 0, "shape", "NAME=OUTxIN", "adapt a bare OUT x IN matrix called NAME (repeatable; no model)", NULL},
	{'r', 'r', "rank", "RANK", "rank r of every layer (default 8)", NULL},
	{'a', 'a', "alpha", "ALPHA", "alpha; scaling is alpha/r (default 8)", NULL},
	{'t', 't', "targets", "LIST", "module-name suffixes, or all-linear (default q_proj,v_proj)", "q_proj,v_proj all-linear"},
	{O_REGEX, 0, "target-regex", "RE", "adapt modules whose whole name matches RE (extended regex)", NULL},
	{O_LAYERS, 0, "layers", "LIST", "only blocks with these indices, e.g. 0-3,7", NULL},
	{O_INIT, 0, "init", "KIND", "kaiming (PEFT's default), gaussian or zeros", "kaiming gaussian zeros"},
	{O_SEED, 0, "seed", "N", "random seed (default 0): same seed, same bytes", NULL},
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
	"Only tensor names and shapes are read from MODEL, never its weights.\n\n"
	"Examples:\n"
	"  lora-init -m base/ -r 16 -a 32 -t q_proj,k_proj,v_proj,o_proj -o new.lora\n"
	"  lora-init -m base/ -t all-linear --layers 0-3 | lora-inspect -\n"
	"  lora-init --shape w=4096x4096 -r 8 -o w.lora\n",
	opts,
	NULL,
};

/* "NAME=OUTxIN" -> layer. */
static int add_shape(lora_adapter *a, const char *spec, size_t rank, double alpha, lora_err *e)
{
	const char *eq = strrchr(spec, '=');
	char *end;
	if (!eq || eq == spec)
		goto bad;
	errno = 0;
	unsigned long long out = strtoull(eq + 1, &end, 10), in;
	if (errno || end == eq + 1 || *end != 'x' || out == 0 || eq[1] == '-')
		goto bad;
	const char *p = end + 1;
	in = strtoull(p, &end, 10);
	if (errno || end == p || *end || in == 0 || *p == '-' || out > (1ull << 31) || in > (1ull << 31))
		goto bad;
	char name[1024];
	size_t n = (size_t)(eq - spec);
	if (n >= sizeof name)
		goto bad;
	memcpy(name, spec, n);
	name[n] = 0;
	if (n > 7 && strcmp(name + n - 7, ".weight") == 0)
		name[n - 7] = 0;
	if (lora_adapter_find(a, name))
		return lora_err_set(e, LORA_EUSAGE, "--shape '%s': layer '%s' given twice", spec, name);
	if (rank > (out < in ? out : in))
		return lora_err_set(e, LORA_EINVAL, "--shape '%s': rank %zu exceeds min(%llu, %llu)", spec,
		                    rank, out, in);
	return lora_adapter_add(a, name, (size_t)out, (size_t)in, rank, alpha, 0, e) ? 0 : e->code;
bad:
	return lora_err_set(e, LORA_EUSAGE, "--shape '%s': expected NAME=OUTxIN, e.g. w=4096x1024", spec);
}

static char *provenance(const char *model, lora_init_kind k, unsigned long long seed)
{
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "tool", "lora-init " LORA_VERSION);
	if (model)
		cJSON_AddStringToObject(p, "model", model);
	cJSON_AddStringToObject(p, "init", lora_init_name(k));
	cJSON_AddNumberToObject(p, "seed", (double)seed);
	char *s = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return s;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *targets = "q_proj,v_proj", *regex = NULL, *layers = NULL;
	const char *out = NULL;
	char **shapes = argv;
	size_t nshapes = 0, rank = 8;
	double alpha = 8;
	unsigned long long seed = 0;
	int force = 0, quiet = 0, rslora = 0, id, rc = LORA_EXIT_FAIL;
	lora_init_kind init = LORA_INIT_KAIMING;
	lora_dtype dtype = LORA_F32;
	lora_err e = {0};
	lora_cli c;
	lora_ckpt *m = NULL;
	lora_adapter *a = NULL;
	lora_targets t = {0};

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': model = c.arg; break;
		case O_SHAPE:
			/* kept in argv (an earlier slot), so usage errors leave nothing allocated */
			argv[nshapes++] = (char *)c.arg;
			break;
		case 'r': rank = (size_t)lora_cli_int(&tool, "--rank", c.arg, 1, 1 << 20); break;
		case 'a': alpha = lora_cli_double(&tool, "--alpha", c.arg); break;
		case 't': targets = c.arg; break;
		case O_REGEX: regex = c.arg; break;
		case O_LAYERS: layers = c.arg; break;
		case O_INIT:
			if (lora_init_parse(c.arg, &init))
				lora_cli_usage_error(&tool, "--init: '%s' is not kaiming, gaussian or zeros", c.arg);
			break;
		case O_SEED: seed = (unsigned long long)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case O_DTYPE:
			if (lora_dtype_parse(c.arg, &dtype))
				lora_cli_usage_error(&tool, "--dtype: '%s' is not f32, f16 or bf16", c.arg);
			break;
		case O_RSLORA: rslora = 1; break;
		case 'o': out = c.arg; break;
		case 'f': force = 1; break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND: lora_cli_usage_error(&tool, "unexpected operand '%s'", c.arg);
		}
	}
	if (!model == !nshapes)
		lora_cli_usage_error(&tool, model ? "-m and --shape are exclusive" : "need -m MODEL or --shape NAME=OUTxIN");
	if (!(a = lora_adapter_new()))
		goto fail_nomem;
	a->dtype = dtype;
	a->rslora = rslora;
	if (model) {
		if ((rc = lora_targets_init(&t, targets, regex, &e)) ||
		    (layers && (rc = lora_targets_set_layers(&t, layers, &e))))
			goto fail;
		if ((rc = lora_ckpt_open(&m, model, &e)) || (rc = lora_init_from_model(a, m, &t, rank, alpha, &e)))
			goto fail;
		if (regex)
			rc = lora_adapter_add_target(a, regex, &e);
		else
			for (size_t i = 0; i < t.nkeys && !rc; i++)
				rc = lora_adapter_add_target(a, t.keys[i], &e);
		if (!rc && t.all_linear)
			rc = lora_adapter_add_target(a, "all-linear", &e);
		if (rc)
			goto fail;
	} else {
		for (size_t i = 0; i < nshapes; i++)
			if ((rc = add_shape(a, shapes[i], rank, alpha, &e)))
				goto fail;
	}
	lora_init_weights(a, init, seed);
	if (!(a->provenance = provenance(model, init, seed)))
		goto fail_nomem;
	if ((rc = lora_lorafile_save(a, out, force, &e)))
		goto fail;
	if (lora_cli_progress_ok(quiet))
		fprintf(stderr, "lora-init: %zu layers, rank %zu, %llu parameters\n", a->nlayers, rank,
		        (unsigned long long)lora_adapter_params(a));
	rc = LORA_EXIT_OK;
	goto out;
fail_nomem:
	lora_err_set(&e, LORA_ENOMEM, "out of memory");
	rc = LORA_ENOMEM;
fail:
	rc = lora_cli_fail(&tool, &e);
out:
	lora_targets_free(&t);
	lora_ckpt_close(m);
	lora_adapter_free(a);
	return rc;
}
