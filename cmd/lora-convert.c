/* lora-convert: .lora <-> PEFT adapter directory <-> GGUF adapter (llama.cpp). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/path.h"
#include "io/gguflora.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "io/peft.h"
#include "model/config.h"

enum { O_TO = 256, O_DTYPE };
enum { TO_LORA, TO_PEFT, TO_GGUF };
static const char *const format_names[] = {".lora", "PEFT", "GGUF"}, *const to_names[] = {"lora", "peft", "gguf"};

static const lora_opt opts[] = {
	{'o', 'o', "output", "OUT", "output .lora or .gguf file (default: standard output) or PEFT directory", "@file"},
	{O_TO, 0, "to", "FORMAT", "lora, peft or gguf (default: gguf for -o *.gguf, else the format IN is not in)",
	 "lora peft gguf"},
	{'m', 'm', "model", "MODEL", "base model (config.json) of a GGUF adapter: architecture and head counts", "@file"},
	{O_DTYPE, 0, "dtype", "TYPE", "storage dtype of the output: f32, f16 or bf16 (default: IN's)", "f32 f16 bf16"},
	{'f', 'f', "force", NULL, "replace an existing output", NULL},
	{'q', 'q', "quiet", NULL, "print nothing on standard error but errors", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-convert",
	"[options] [IN] [-o OUT]",
	"Convert a LoRA adapter between .lora, a PEFT directory and a GGUF adapter.",
	"IN is a .lora file, '-' (or nothing) for a .lora on standard input, a PEFT\n"
	"adapter directory (adapter_config.json + adapter_model.safetensors), the\n"
	"adapter_model.safetensors of one, or a GGUF adapter. PEFT -> .lora -> PEFT at\n"
	"the same dtype gives the same tensor keys and bytes and an equivalent\n"
	"adapter_config.json; .lora -> GGUF -> .lora gives the same factors.\n"
	"A GGUF adapter is what llama.cpp loads with --lora on the GGUF of the same\n"
	"base model (Llama, Mistral, Qwen2); its architecture and head counts come\n"
	"from -m MODEL, or else from the base model the adapter records.\n\n"
	"Examples:\n"
	"  lora-convert peft_dir/ -o adapter.lora\n"
	"  lora-convert adapter.lora -o peft_dir\n"
	"  lora-convert -m base/ run.lora -o run.gguf\n"
	"  lora-convert --dtype bf16 --to peft run.lora -o run_bf16/\n",
	opts,
	"@file",
};

static char *provenance(const char *in, const char *from)
{
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "tool", "lora-convert " LORA_VERSION);
	cJSON_AddStringToObject(p, "from", from);
	cJSON_AddStringToObject(p, "source", in);
	char *s = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return s;
}

/* The base model of a GGUF adapter: -m MODEL, else the one the adapter
 * records. */
static int gguf_base(lora_config *c, lora_gguflora_base *b, const char *model, const char *recorded, const char *in,
                     lora_err *e)
{
	char *path = NULL;
	int rc;
	if (!model && !recorded)
		return lora_err_set(e, LORA_EUSAGE,
		                    "%s: the adapter records no base model: give -m MODEL (its config.json has the architecture and head counts)",
		                    in);
	if (lora_config_locate(&path, model ? model : recorded, e))
		return model ? lora_err_set(e, LORA_EUSAGE, "-m %s: no config.json there", model)
		             : lora_err_set(e, LORA_EUSAGE,
		                            "%s: base model '%s' not found (no config.json there or in the Hugging Face cache): give -m MODEL",
		                            in, recorded);
	rc = lora_config_read(c, path, e);
	free(path);
	if (rc)
		return rc;
	b->arch = lora_gguflora_arch(c->model_type);
	b->n_heads = c->n_heads;
	b->n_kv_heads = c->n_kv_heads;
	return 0;
}

int main(int argc, char **argv)
{
	const char *in = NULL, *out = NULL, *model = NULL;
	int force = 0, quiet = 0, id, rc, to = -1, set_dtype = 0, from;
	lora_dtype dtype = LORA_F32;
	lora_err e = {0};
	lora_cli c;
	lora_adapter *a = NULL;
	lora_load_kind k;
	lora_config cfg;
	lora_gguflora_base base = {0};

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'o': out = c.arg; break;
		case 'm': model = c.arg; break;
		case O_TO:
			for (to = TO_GGUF; to >= 0 && strcmp(c.arg, to_names[to]); to--)
				;
			if (to < 0)
				lora_cli_usage_error(&tool, "--to: '%s' is not lora, peft or gguf", c.arg);
			break;
		case O_DTYPE: dtype = (lora_dtype)lora_cli_dtype(&tool, "--dtype", c.arg, 0), set_dtype = 1; break;
		case 'f': force = 1; break;
		case 'q': quiet = 1; break;
		case LORA_OPT_OPERAND:
			if (in)
				lora_cli_usage_error(&tool, "one input at a time (got '%s' and '%s')", in, c.arg);
			in = c.arg;
			break;
		}
	}
	if (!in)
		in = "-";
	lora_cli_stdin(&tool, in);
	if (to < 0 && out && lora_path_has_suffix(out, ".gguf"))
		to = TO_GGUF;
	if (to == TO_PEFT && (!out || strcmp(out, "-") == 0))
		lora_cli_usage_error(&tool, "a PEFT adapter is a directory: give -o DIR");
	if ((rc = lora_load_kind_of(in, &k, &e)))
		goto fail;
	from = k == LORA_LOAD_PEFT ? TO_PEFT : k == LORA_LOAD_GGUF ? TO_GGUF : TO_LORA;
	/* A GGUF input needs -m only when it does not record its head counts. */
	if (from == TO_GGUF && model && (rc = gguf_base(&cfg, &base, model, NULL, in, &e)))
		goto fail;
	rc = from == TO_GGUF ? lora_gguflora_read(&a, in, model ? &base : NULL, 0, &e) : lora_load_adapter(&a, in, &e);
	if (rc)
		goto fail;
	if (to < 0)
		to = from == TO_LORA ? TO_PEFT : TO_LORA;
	if (to == TO_PEFT && (!out || strcmp(out, "-") == 0)) {
		lora_adapter_free(a);
		lora_cli_usage_error(&tool, "a PEFT adapter is a directory: give -o DIR (or --to lora)");
	}
	if (set_dtype)
		a->dtype = dtype;
	if (to == TO_LORA && from != TO_LORA && !a->provenance && !(a->provenance = provenance(in, from == TO_PEFT ? "peft" : "gguf"))) {
		rc = lora_err_nomem(&e);
		goto fail;
	}
	if (to == TO_GGUF && !base.arch && (rc = gguf_base(&cfg, &base, model, a->base_name, in, &e)))
		goto fail;
	if (to == TO_GGUF && !base.arch) {
		rc = lora_err_set(&e, LORA_EINVAL, "%s: model_type '%s' has no GGUF adapter form (llama, mistral, qwen2)", in,
		                  cfg.model_type);
		goto fail;
	}
	/* What a GGUF adapter cannot say is the input's fault: name it. */
	if (to == TO_GGUF && (rc = lora_gguflora_check(a, &base, &e))) {
		lora_err_prefix(&e, "%s", strcmp(in, "-") ? in : "standard input");
		goto fail;
	}
	rc = to == TO_PEFT ? lora_peft_write(a, out, force, &e)
	   : to == TO_GGUF ? lora_gguflora_write(a, out ? out : "-", &base, force, &e)
	                   : lora_lorafile_save(a, out, force, &e);
	if (rc)
		goto fail;
	if (lora_cli_progress_ok(quiet))
		fprintf(stderr, "lora-convert: %zu layers, %s -> %s, %s\n", a->nlayers, format_names[from], format_names[to],
		        lora_dtype_name(a->dtype));
	lora_adapter_free(a);
	return LORA_EXIT_OK;
fail:
	lora_adapter_free(a);
	return lora_cli_fail(&tool, &e);
}
