/* lora-tokenize: text to token ids with a model's tokenizer.json, and back. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "math/blas.h"
#include "text/tokenize.h"

enum { O_TOKENIZER = 256, O_LINES, O_JSONL, O_TRAIN_ON_INPUTS, O_CHAT_FORMAT, O_LITERAL, O_NO_SPECIAL, O_DECODE, O_FORMAT, O_DATA_FORMAT };

static const lora_opt opts[] = {
	{'m', 'm', "model", "MODEL", "model directory: its tokenizer.json is used", "@file"},
	{O_TOKENIZER, 0, "tokenizer", "FILE", "a tokenizer.json (instead of -m)", "@file"},
	{O_LINES, 0, "lines", NULL, "each line is a document (default: each file is one)", NULL},
	{O_JSONL, 0, "jsonl", NULL, "inputs are JSONL examples (default: files named *.jsonl)", NULL},
	{O_TRAIN_ON_INPUTS, 0, "train-on-inputs", NULL, "JSONL: prompt tokens get loss too (default: answers only)",
	 NULL},
	{O_CHAT_FORMAT, 0, "chat-format", "FORMAT",
	 "JSONL chats: the template family (llama3 llama3.1 llama3.2 chatml qwen2.5 qwen3 mistral); "
	 "default: recognised in tokenizer_config.json",
	 "llama3 llama3.1 llama3.2 chatml qwen2.5 qwen3 mistral"},
	{O_LITERAL, 0, "literal-content", NULL,
	 "JSONL chats: message text that spells a special token stays text (default: it is the token, as in "
	 "Hugging Face)",
	 NULL},
	{O_NO_SPECIAL, 0, "no-special", NULL, "no BOS/EOS per document; with --decode, special tokens left out", NULL},
	{O_FORMAT, 0, "output-format", "FMT",
	 "tok (ids, documents, loss mask), u16 or u32 (bare ids); default by -o's name (.tok .u32 .bin .u16), "
	 "else tok for JSONL, u16 for text",
	 "tok u16 u32"},
	LORA_OPT_ALIAS(O_FORMAT, 0, "format", "FMT"),
	{O_DECODE, 0, "decode", NULL, "token data in, text out", NULL},
	{O_DATA_FORMAT, 0, "data-format", "FMT", "of --decode's input: auto (default), u16, u32, llmc, tok or bytes",
	 "auto u16 u32 llmc tok bytes"},
	{'o', 'o', "output", "FILE", "write to FILE, complete or not at all (default: standard output)", "@file"},
	{'f', 'f', "force", NULL, "overwrite an existing output file", NULL},
	{'j', 'j', "threads", "N", "encode documents on N threads (default: every core)", NULL},
	{'q', 'q', "quiet", NULL, "no progress on standard error", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"lora-tokenize",
	"-m MODEL [options] [FILE...] [-o OUT]\n"
	"-m MODEL --decode [options] [IDS...] [-o OUT]",
	"Encode text files and JSONL datasets into token data with a model's\n"
	"tokenizer.json, exactly as Hugging Face's tokenizers library does, or decode\n"
	"token data into text.",
	"FILE is a UTF-8 text file, or '-' (the default) for standard input. Each\n"
	"file is one document (--lines: each line is one, empty lines skipped) and\n"
	"gets the tokenizer's BOS/EOS, as the model's post-processor adds them.\n"
	"A JSONL file (*.jsonl, or any input with --jsonl) holds an example a line:\n"
	"{\"text\"}, {\"prompt\", \"completion\"}, alpaca's {\"instruction\", \"input\",\n"
	"\"output\"}, or {\"messages\": [{\"role\", \"content\"}...]}, a chat rendered with\n"
	"the model's chat template. Prompts, system and user turns get no loss unless\n"
	"--train-on-inputs; the assistant's turns and their end-of-turn token do. Text\n"
	"and prompt/completion examples end with the EOS token of\n"
	"tokenizer_config.json, as axolotl tokenizes them.\n"
	"The output is a tok file (ids, document boundaries, loss mask; lora-data(5))\n"
	"or bare little-endian u16/u32 ids, which lora-train and lora-eval read.\n"
	"See lora-tokenize(1).\n\n"
	"Examples:\n"
	"  lora-tokenize -m Qwen2.5-0.5B/ book.txt -o book.u32\n"
	"  lora-tokenize -m TinyLlama/ --lines quotes.txt -o train.bin\n"
	"  lora-tokenize -m TinyLlama/ alpaca.jsonl -o train.tok\n"
	"  lora-tokenize -m Qwen2.5-0.5B-Instruct/ chats.jsonl -o chats.tok\n"
	"  echo 'Hello world' | lora-tokenize -m TinyLlama/ | od -An -tu2\n"
	"  lora-tokenize -m TinyLlama/ --decode --no-special train.bin | head\n",
	opts,
	"@file",
};

static void progress(void *ctx, size_t docs, size_t bytes, size_t ids)
{
	lora_cli_progress *p = ctx;
	lora_cli_progress_update(p, "%zu documents, %.1f MB, %zu tokens, %.1f MB/s", docs, (double)bytes / 1e6, ids,
	                         (double)bytes / 1e6 / lora_cli_progress_elapsed(p));
}

int main(int argc, char **argv)
{
	lora_tokenize_job j = {.inputs = argv, .progress = progress};
	lora_data_format out_fmt = LORA_DATA_AUTO, in_fmt = LORA_DATA_AUTO;
	const char *only_encode = NULL, *only_decode = NULL;
	int quiet = 0, id, rc;
	lora_err e = {0};
	lora_cli c;
	lora_cli_progress pr;

	lora_cli_signals();
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case 'm': j.model = c.arg; break;
		case O_TOKENIZER: j.tokenizer = c.arg; break;
		case O_LINES: j.lines = 1, only_encode = "--lines"; break;
		case O_JSONL: j.jsonl = 1, only_encode = "--jsonl"; break;
		case O_TRAIN_ON_INPUTS: j.train_on_inputs = 1, only_encode = "--train-on-inputs"; break;
		case O_CHAT_FORMAT: j.chat_format = c.arg, only_encode = "--chat-format"; break;
		case O_LITERAL: j.literal_content = 1, only_encode = "--literal-content"; break;
		case O_NO_SPECIAL: j.no_special = 1; break;
		case O_FORMAT:
			if (lora_data_format_parse(c.arg, &out_fmt) ||
			    (out_fmt != LORA_DATA_U16 && out_fmt != LORA_DATA_U32 && out_fmt != LORA_DATA_TOK))
				lora_cli_usage_error(&tool, "--output-format: '%s' is not tok, u16 or u32", c.arg);
			only_encode = "--output-format";
			break;
		case O_DECODE: j.decode = 1; break;
		case O_DATA_FORMAT:
			in_fmt = lora_cli_data_format(&tool, "--data-format", c.arg);
			only_decode = "--data-format";
			break;
		case 'o': j.out = c.arg; break;
		case 'f': j.force = 1; break;
		case 'j': lora_cli_threads(&tool, c.arg); break;
		case 'q': quiet = 1; break;
		/* inputs stay in argv, each in an earlier slot */
		case LORA_OPT_OPERAND: argv[j.ninputs++] = (char *)c.arg; break;
		}
	}
	if (!j.model == !j.tokenizer)
		lora_cli_usage_error(&tool, j.model ? "-m and --tokenizer name the same thing: give one"
		                                    : "need -m MODEL or --tokenizer FILE");
	if (j.decode && only_encode)
		lora_cli_usage_error(&tool, "%s is for encoding, not --decode", only_encode);
	if (!j.decode && only_decode)
		lora_cli_usage_error(&tool, "%s is for --decode", only_decode);
	j.format = j.decode ? in_fmt : out_fmt;
	if (!j.ninputs)
		lora_cli_stdin(&tool, "-");
	for (size_t i = 0; i < j.ninputs; i++)
		lora_cli_stdin(&tool, argv[i]);
	j.threads = lora_blas_threads();
	lora_cli_progress_start(&pr, &tool, quiet);
	j.ctx = &pr;
	rc = lora_tokenize_job_run(&j, &e);
	lora_cli_progress_end(&pr);
	if (rc)
		return lora_cli_fail(&tool, &e);
	if (!j.decode) /* decoded text may be on the terminal itself */
		lora_cli_progress_note(&pr, "%zu tokens from %zu document%s", j.nids, j.ndocs, j.ndocs == 1 ? "" : "s");
	return LORA_EXIT_OK;
}
