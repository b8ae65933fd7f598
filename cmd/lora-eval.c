/* lora-eval: loss and perplexity of a model, with adapters applied at run
 * time, over token data. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "math/blas.h"
#include "model/eval.h"

enum { O_FORMAT = 256, O_NOSHUFFLE, O_SEED, O_JSON, O_BATCHES, O_COMPUTE, O_PACK, O_TOKENIZER };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "base model: directory with config.json, its safetensors file or index", "@file"},
	{'d', 'd', "data", "FILE",
	 "token file (.bin/.u16, .u32, llm.c's, .tok), or .jsonl/.txt tokenized with the model's tokenizer.json",
	 "@file"},
	{O_TOKENIZER, 0, "tokenizer", "FILE", "a tokenizer.json for .jsonl/.txt data (default: the model directory's)",
	 "@file"},
	{O_FORMAT, 0, "data-format", "FMT", "auto (default), u16, u32, llmc, tok or bytes (every byte a token)",
	 "auto u16 u32 llmc tok bytes"},
	{'b', 'b', "batch", "B", "rows per batch (default 4)", NULL},
	{'T', 'T', "seq", "T", "tokens per row (default 1024, or max_position_embeddings if smaller)", NULL},
	{O_BATCHES, 0, "batches", "N", "evaluate only the first N batches (default: all)", NULL},
	{O_PACK, 0, "sample-packing", NULL, "tok data: rows of whole examples (default: one example per row)", NULL},
	{O_NOSHUFFLE, 0, "no-shuffle", NULL, "consecutive batches from the start, as llm.c cuts them", NULL},
	{O_SEED, 0, "seed", "N", "seed of the shuffled row order (default 0)", NULL},
	{O_COMPUTE, 0, "compute", "TYPE",
	 "big products in bf16 or f32; auto (default): bf16 on a bf16 checkpoint where the CPU has AVX512-BF16 or AMX",
	 "auto f32 bf16"},
	{'j', 'j', "threads", "N", "threads for everything (default: every core)", NULL},
	{O_JSON, 0, "json", NULL, "print one JSON document (keys in lora-eval(1))", NULL},
	{'q', 'q', "quiet", NULL, "no progress on standard error", NULL},
	LORA_OPT_ALIAS(O_BATCHES, 'n', NULL, "N"),
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-eval",
	"-m MODEL [ADAPTER[:SCALE]...] -d DATA [options]",
	"Mean loss and perplexity of a model, with adapters applied at run time, over\n"
	"token data.",
	"ADAPTER is a .lora file, '-' for standard input, or a PEFT adapter directory;\n"
	"SCALE (default 1) multiplies its update, as lora-merge would. Nothing is\n"
	"merged: each adapted layer computes W x + SCALE * (alpha/r) * B A x.\n"
	"Rows are windows of T+1 tokens starting every T tokens, in an order shuffled\n"
	"with --seed; --no-shuffle takes consecutive batches from the start of the\n"
	"file, llm.c's rule. A tok file (lora-tokenize's, with documents and a loss\n"
	"mask) gives a row per example, or with --sample-packing rows of whole\n"
	"examples; only targets with loss count in the loss and the tokens. See\n"
	"lora-eval(1) and lora-data(5).\n\n"
	"Examples:\n"
	"  lora-eval -m TinyLlama/ -d val.bin\n"
	"  lora-eval -m base/ tuned.lora -d val.bin -b 8 -T 512 --batches 20\n"
	"  lora-eval -m base/ a.lora:0.5 b.lora:0.5 -d val.bin --json | jq .perplexity\n",
	opts,
	"@file",
};

static void progress(void *ctx, size_t done, size_t total, double loss, size_t tokens)
{
	lora_cli_progress *p = ctx;
	lora_cli_progress_update(p, "batch %zu/%zu, loss %.4f, %.0f tokens/s", done, total, loss,
	                         (double)tokens / lora_cli_progress_elapsed(p));
}

int main(int argc, char **argv)
{
	lora_eval_job j = {.o = {.B = 4, .shuffle = 1, .progress = progress}, .adapters = argv, .note = lora_cli_note};
	size_t n = 0;
	int quiet = 0, id, rc;
	lora_err e = {0};
	lora_cli c;
	lora_cli_progress pr;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': j.model = c.arg; break;
		case 'd': j.data = c.arg; break;
		case O_FORMAT: j.format = lora_cli_data_format(&tool, "--data-format", c.arg); break;
		case 'b': j.o.B = (size_t)lora_cli_int(&tool, "--batch", c.arg, 1, 1 << 20); break;
		case 'T': j.o.T = (size_t)lora_cli_int(&tool, "--seq", c.arg, 1, 1 << 24); break;
		case O_BATCHES: j.o.max_batches = (size_t)lora_cli_int(&tool, "--batches", c.arg, 1, INT64_MAX); break;
		case O_NOSHUFFLE: j.o.shuffle = 0; break;
		case O_PACK: j.o.packed = 1; break;
		case O_TOKENIZER: j.tokenizer = c.arg; break;
		case O_SEED: j.o.seed = (uint64_t)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case O_COMPUTE: j.compute = lora_cli_compute(&tool, c.arg); break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		case O_JSON: j.json = 1; break;
		case 'q': quiet = 1; break;
		/* specs stay in argv, each in an earlier slot: nothing to free */
		case LORA_OPT_OPERAND: argv[n++] = (char *)c.arg; break;
		}
	}
	if (!j.model)
		lora_cli_usage_error(&tool, "need -m MODEL");
	if (!j.data)
		lora_cli_usage_error(&tool, "need -d DATA");
	j.nadapters = n;
	for (size_t i = 0; i < n; i++)
		lora_cli_stdin(&tool, argv[i]);
	lora_blas_threads(); /* the default, when -j did not set it */
	lora_cli_progress_start(&pr, &tool, quiet);
	j.o.ctx = &pr;
	rc = lora_eval_job_run(&j, stdout, &e);
	lora_cli_progress_end(&pr);
	if (rc)
		return lora_cli_fail(&tool, &e);
	return lora_cli_flush(&tool);
}
