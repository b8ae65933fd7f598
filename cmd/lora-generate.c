/* lora-generate: sample tokens from a model with adapters applied at run time. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "math/blas.h"
#include "model/generate.h"
#include "text/chat.h"

enum {
	O_DATA_FORMAT = 256, O_START, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_OUTPUT_FORMAT, O_ROWS, O_COMPUTE,
	O_PROMPT, O_CHAT, O_STOP, O_TOKENIZER, O_CHAT_FORMAT, O_NO_THINKING
};

#define MAX_STOPS 16

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "model directory (config.json + safetensors)", "@file"},
	{O_PROMPT, 0, "prompt", "TEXT", "prompt text, encoded with the model's tokenizer (and its BOS); text out", NULL},
	{O_CHAT, 0, "chat", "TEXT", "one user message through the model's chat template; the reply out as text", NULL},
	{O_STOP, 0, "stop", "TEXT", "text stops where TEXT appears, TEXT left out (may repeat)", NULL},
	{O_TOKENIZER, 0, "tokenizer", "FILE", "a tokenizer.json (default: the model directory's)", "@file"},
	{O_CHAT_FORMAT, 0, "chat-format", "FORMAT", "chat template: llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, "
	 "mistral (default: recognised)", "llama3 llama3.1 llama3.2 chatml qwen2.5 qwen3 mistral"},
	{O_NO_THINKING, 0, "no-thinking", NULL, "--chat with enable_thinking=False (Qwen3: an empty think block)", NULL},
	{'d', 'd', "data", "FILE", "prompt tokens, fed before sampling (default: one --start token)", "@file"},
	{O_DATA_FORMAT, 0, "data-format", "FMT", "of the prompt: auto, u16, u32, llmc or bytes (default: as --output-format)", "auto u16 u32 llmc bytes"},
	{O_START, 0, "start", "TOKEN", "the token a row starts with when there is no prompt (default 0)", NULL},
	{'n', 'n', "tokens", "N", "tokens to sample per row (default 128)", NULL},
	{O_ROWS, 0, "rows", "R", "independent rows sampled side by side, written one after another (default 1)", NULL},
	{O_TEMP, 0, "temperature", "T", "softmax temperature; 0 is greedy (default 1)", NULL},
	{O_TOPK, 0, "top-k", "K", "sample among the K most likely tokens only (default 0: all)", NULL},
	{O_TOPP, 0, "top-p", "P", "sample among the most likely tokens whose mass reaches P (default 1)", NULL},
	{O_SEED, 0, "seed", "N", "random seed: same seed, same tokens (default 0)", NULL},
	{O_OUTPUT_FORMAT, 0, "output-format", "FMT",
	 "u16 (default), u32 or bytes (text for byte-level models); with --prompt or --chat, ids instead of text",
	 "u16 u32 bytes"},
	{'o', 'o', "output", "FILE", "write the tokens or text to FILE (default: standard output)", "@file"},
	{O_COMPUTE, 0, "compute", "TYPE",
	 "big products in bf16 or f32; auto (default): bf16 on a bf16 checkpoint where the CPU has AVX512-BF16 or AMX",
	 "auto f32 bf16"},
	{'j', 'j', "threads", "N", "threads for everything (default: every core)", NULL},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'q', 'q', "quiet", NULL, "no progress on standard error", NULL},
	LORA_OPT_ALIAS('d', 0, "prompt-file", "FILE"),
	LORA_OPT_ALIAS(O_DATA_FORMAT, 0, "prompt-format", "FMT"),
	LORA_OPT_ALIAS(O_OUTPUT_FORMAT, 0, "format", "FMT"),
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-generate",
	"-m MODEL [ADAPTER[:SCALE]...] [options] [-o OUT]",
	"Sample tokens or text from a Llama-family model, adapters applied at run time.",
	"Each row is its prompt (or the --start token) followed by N sampled tokens,\n"
	"decoded one position at a time with a key/value cache. Rows are written one\n"
	"after another in the output format, so the output is token data that\n"
	"lora-train and lora-eval read directly.\n\n"
	"With --prompt or --chat the prompt is text, encoded with the model's\n"
	"tokenizer.json, and the continuation is printed as text as it is sampled,\n"
	"until the tokenizer's EOS (or the chat template's end of turn), a --stop\n"
	"text or N tokens.\n\n"
	"Examples:\n"
	"  lora-generate -m Qwen3-0.6B/ run.lora --chat 'Name three primes.' -n 200\n"
	"  lora-generate -m base/ --prompt 'Once upon a time' --stop $'\\n\\n' -n 100\n"
	"  lora-generate -m base/ run.lora -n 64 -d prompt.u16 > out.u16\n"
	"  lora-generate -m bytes/ --output-format bytes --top-p 0.95 -n 200\n"
	"  lora-generate -m teacher/ --rows 64 -n 255 --seed 1 -o train.bin\n",
	opts,
	"@file",
};

static void progress(void *ctx, size_t done, size_t total)
{
	lora_cli_progress_update(ctx, "token %zu/%zu", done, total);
}

int main(int argc, char **argv)
{
	lora_generate_job j = {.adapters = argv, .n = 128, .rows = 1, .sampler = {1.0, 0, 1.0}, .format = LORA_DATA_U16,
	                       .progress = progress, .note = lora_cli_note};
	int pfmt_set = 0, ofmt_set = 0, quiet = 0, start_set = 0, id, rc;
	size_t n = 0;
	const char *stops[MAX_STOPS];
	lora_err e = {0};
	lora_cli c;
	lora_cli_progress pr;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': j.model = c.arg; break;
		case 'd': j.prompt = c.arg; break;
		case O_PROMPT: j.text = c.arg; break;
		case O_CHAT: j.chat = c.arg; break;
		case O_STOP:
			if (!*c.arg)
				lora_cli_usage_error(&tool, "--stop: the text is empty");
			if (j.nstops == MAX_STOPS)
				lora_cli_usage_error(&tool, "--stop: more than %d", MAX_STOPS);
			stops[j.nstops++] = c.arg;
			break;
		case O_TOKENIZER: j.tokenizer = c.arg; break;
		case O_CHAT_FORMAT: j.chat_format = c.arg; break;
		case O_NO_THINKING: j.chat_flags |= LORA_CHAT_NO_THINKING; break;
		case O_DATA_FORMAT:
			j.prompt_format = lora_cli_data_format(&tool, "--data-format", c.arg);
			pfmt_set = 1;
			break;
		case O_START:
			j.start = (uint32_t)lora_cli_int(&tool, "--start", c.arg, 0, UINT32_MAX);
			start_set = 1;
			break;
		case 'n': j.n = (size_t)lora_cli_int(&tool, "--tokens", c.arg, 0, 1 << 24); break;
		case O_ROWS: j.rows = (size_t)lora_cli_int(&tool, "--rows", c.arg, 1, 1 << 16); break;
		case O_TEMP:
			if ((j.sampler.temperature = lora_cli_double(&tool, "--temperature", c.arg)) < 0)
				lora_cli_usage_error(&tool, "--temperature: '%s' is negative", c.arg);
			break;
		case O_TOPK: j.sampler.top_k = (size_t)lora_cli_int(&tool, "--top-k", c.arg, 0, 1LL << 32); break;
		case O_TOPP:
			j.sampler.top_p = lora_cli_double(&tool, "--top-p", c.arg);
			if (!(j.sampler.top_p > 0 && j.sampler.top_p <= 1))
				lora_cli_usage_error(&tool, "--top-p: '%s' is not in (0, 1]", c.arg);
			break;
		case O_SEED: j.seed = (uint64_t)lora_cli_int(&tool, "--seed", c.arg, 0, INT64_MAX); break;
		case O_OUTPUT_FORMAT:
			if (lora_data_format_parse(c.arg, &j.format) ||
			    (j.format != LORA_DATA_U16 && j.format != LORA_DATA_U32 && j.format != LORA_DATA_BYTES))
				lora_cli_usage_error(&tool, "--output-format: '%s' is not u16, u32 or bytes", c.arg);
			ofmt_set = 1;
			break;
		case 'o': j.out = c.arg; break;
		case O_COMPUTE: j.compute = lora_cli_compute(&tool, c.arg); break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		case 'f': j.force = 1; break;
		case 'q': quiet = 1; break;
		/* specs stay in argv, each in an earlier slot: nothing to free */
		case LORA_OPT_OPERAND: argv[n++] = (char *)c.arg; break;
		}
	}
	if (!j.model)
		lora_cli_usage_error(&tool, "need -m MODEL");
	int text = j.text || j.chat;
	if (j.text && j.chat)
		lora_cli_usage_error(&tool, "--prompt and --chat: one or the other");
	if (text && (j.prompt || start_set))
		lora_cli_usage_error(&tool, "%s: the prompt is text, not -d or --start", j.chat ? "--chat" : "--prompt");
	if (!text && (j.tokenizer || j.nstops))
		lora_cli_usage_error(&tool, "%s: needs --prompt or --chat", j.tokenizer ? "--tokenizer" : "--stop");
	if (!j.chat && (j.chat_format || j.chat_flags))
		lora_cli_usage_error(&tool, "%s: needs --chat", j.chat_format ? "--chat-format" : "--no-thinking");
	j.ids = text && ofmt_set;
	if (j.ids && j.nstops)
		lora_cli_usage_error(&tool, "--stop: text only, not with --output-format");
	if (text && !j.ids && j.rows > 1)
		lora_cli_usage_error(&tool, "--rows: text is one row (--output-format writes rows of ids)");
	j.stops = stops;
	if (!pfmt_set) /* a prompt is usually what an earlier lora-generate wrote */
		j.prompt_format = j.format;
	j.nadapters = n;
	for (size_t i = 0; i < n; i++)
		lora_cli_stdin(&tool, argv[i]);
	lora_blas_threads();
	/* text on standard output would share the terminal with progress */
	if (text && !j.ids)
		j.progress = NULL;
	lora_cli_progress_start(&pr, &tool, quiet);
	j.ctx = &pr;
	rc = lora_generate_job_run(&j, &e);
	lora_cli_progress_end(&pr);
	return rc ? lora_cli_fail(&tool, &e) : LORA_EXIT_OK;
}
