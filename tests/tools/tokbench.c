/* tokbench: encoding throughput of a tokenizer.json.
 *     tokbench text MB FILE         write MB megabytes of mixed text (prose,
 *                                   code, digits, CJK, emoji, runs of blanks)
 *     tokbench encode TOKENIZER FILE   load time, MB/s, ids (one thread)
 *     tokbench lines TOKENIZER FILE    the same, each line encoded on its
 *                                      own with the BOS/EOS, as
 *                                      lora-tokenize --lines cuts them
 * bench/tokenizer.sh runs it and, where the tokenizers library's Node
 * binding is at hand, the library on the same text for a ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "text/tokenizer.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int text(double mb, const char *path)
{
	static const char *const parts[] = {
		"The quick brown fox jumps over the lazy dog. ", "It's 2024; we've 12345 items, they'll cost $3.50!\n",
		"    def f(x):\n\treturn x * 2  # code\n", "中文文本，包含一些汉字和标点。", "Ünïcödé façade naïve — “quotes”. ",
		"😀🎉👨‍👩‍👧 emoji and ★ symbols\n", "Русский текст и العربية مرحبا ", "\n\n\n   spaces   and   runs\n",
		"tokenization encoder library Hugging Face alpha beta gamma ", "x31337 y4096 z65536 0.5e-3 ",
	};
	FILE *f = fopen(path, "wb");
	unsigned long long s = 88172645463325252ull;
	size_t n = 0, want = (size_t)(mb * 1e6);
	if (!f)
		return 1;
	while (n < want) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		const char *p = parts[s % (sizeof parts / sizeof *parts)];
		n += fwrite(p, 1, strlen(p), f);
	}
	return fclose(f) != 0;
}

/* Encode the whole text as one, or each line (lines: '\n' and a '\r'
 * before it left out, empty lines skipped) with the special tokens. */
static int encode(const char *tok, const char *path, int lines)
{
	lora_err e = {0};
	lora_tokenizer *t;
	char *buf;
	size_t n;
	double t0 = now();
	if (lora_tokenizer_open(&t, tok, &e) || lora_json_slurp(&buf, &n, path, (size_t)1 << 32, &e)) {
		fprintf(stderr, "tokbench: %s\n", e.msg);
		return 1;
	}
	double t1 = now();
	lora_tokenizer_ids ids = {0};
	int rc = 0;
	if (!lines)
		rc = lora_tokenizer_encode(t, buf, n, 0, &ids, &e);
	for (size_t a = 0, b; lines && a < n && !rc; a = b + 1) {
		const char *nl = memchr(buf + a, '\n', n - a);
		b = nl ? (size_t)(nl - buf) : n;
		size_t len = b - a - (b > a && buf[b - 1] == '\r');
		if (len)
			rc = lora_tokenizer_encode(t, buf + a, len, 1, &ids, &e);
	}
	double t2 = now();
	if (rc)
		fprintf(stderr, "tokbench: %s\n", e.msg);
	else
		printf("load=%.3f\nmbs=%.2f\nids=%zu\n", t1 - t0, (double)n / (t2 - t1) / 1e6, ids.n);
	lora_tokenizer_ids_free(&ids);
	lora_tokenizer_free(t);
	free(buf);
	return rc != 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "text"))
		return text(atof(argv[2]), argv[3]);
	if (argc == 4 && (!strcmp(argv[1], "encode") || !strcmp(argv[1], "lines")))
		return encode(argv[2], argv[3], !strcmp(argv[1], "lines"));
	fprintf(stderr, "usage: tokbench text MB FILE | tokbench encode|lines TOKENIZER FILE\n");
	return 2;
}
