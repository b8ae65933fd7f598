/* lora-convert: .lora <-> PEFT adapter directory. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io/load.h"
#include "io/lorafile.h"
#include "io/peft.h"

enum { O_TO = 256, O_DTYPE };

static const lora_opt opts[] = {
	{'o', 'o', "output", "OUT", "output .lora file (default: standard output) or PEFT directory", "@file"},
	{O_TO, 0, "to", "FORMAT", "lora or peft (default: the format IN is not in)", "lora peft"},
	{O_DTYPE, 0, "dtype", "TYPE", "storage dtype of the output: f32, f16 or bf16 (default: IN's)", "f32 f16 bf16"},
	{'f', 'f', "force", NULL, "replace an existing output", NULL},
	{'q', 'q', "quiet", NULL, "print nothing on standard error but errors", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-convert",
	"[options] [IN] [-o OUT]",
	"Convert a LoRA adapter between .lora and a PEFT directory.",
	"IN is a .lora file, '-' (or nothing) for a .lora on standard input, a PEFT\n"
	"adapter directory (adapter_config.json + adapter_model.safetensors), or the\n"
	"adapter_model.safetensors of one. PEFT -> .lora -> PEFT at the same dtype gives\n"
	"the same tensor keys and bytes and an equivalent adapter_config.json.\n\n"
	"Examples:\n"
	"  lora-convert peft_dir/ -o adapter.lora\n"
	"  lora-convert adapter.lora -o peft_dir\n"
	"  lora-convert --dtype bf16 --to peft run.lora -o run_bf16/\n",
	opts,
	"@file",
};

static char *provenance(const char *in)
{
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "tool", "lora-convert " LORA_VERSION);
	cJSON_AddStringToObject(p, "from", "peft");
	cJSON_AddStringToObject(p, "source", in);
	char *s = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return s;
}

int main(int argc, char **argv)
{
	const char *in = NULL, *out = NULL;
	int force = 0, quiet = 0, id, rc, to = -1, set_dtype = 0; /* to: 0 lora, 1 peft */
	lora_dtype dtype = LORA_F32;
	lora_err e = {0};
	lora_cli c;
	lora_adapter *a = NULL;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'o': out = c.arg; break;
		case O_TO:
			if (strcmp(c.arg, "lora") == 0)
				to = 0;
			else if (strcmp(c.arg, "peft") == 0)
				to = 1;
			else
				lora_cli_usage_error(&tool, "--to: '%s' is not lora or peft", c.arg);
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
	if (to == 1 && (!out || strcmp(out, "-") == 0))
		lora_cli_usage_error(&tool, "a PEFT adapter is a directory: give -o DIR");
	if ((rc = lora_load_adapter(&a, in, &e)))
		goto fail;
	int from_peft = a->version == 0;
	if (to < 0)
		to = !from_peft;
	if (to == 1 && (!out || strcmp(out, "-") == 0)) {
		lora_adapter_free(a);
		lora_cli_usage_error(&tool, "a PEFT adapter is a directory: give -o DIR (or --to lora)");
	}
	if (set_dtype)
		a->dtype = dtype;
	if (to == 0 && from_peft && !a->provenance && !(a->provenance = provenance(in))) {
		rc = lora_err_set(&e, LORA_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = to ? lora_peft_write(a, out, force, &e) : lora_lorafile_save(a, out, force, &e)))
		goto fail;
	if (lora_cli_progress_ok(quiet))
		fprintf(stderr, "lora-convert: %zu layers, %s -> %s, %s\n", a->nlayers, from_peft ? "PEFT" : ".lora",
		        to ? "PEFT" : ".lora", lora_dtype_name(a->dtype));
	lora_adapter_free(a);
	return LORA_EXIT_OK;
fail:
	lora_adapter_free(a);
	return lora_cli_fail(&tool, &e);
}
