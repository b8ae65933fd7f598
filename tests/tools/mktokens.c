/* mktokens: write a deterministic token file, for tests.
 *
 *   mktokens [--format u16|u32|llmc|llmc32|bytes] [--vocab V] [--seed S]
 *            [--set POS=TOKEN]... N > FILE
 *
 * N tokens uniform in [0, V) (default V 256) from lib/rng seeded with S
 * (default 1), so the same arguments give the same tokens in every
 * format; --set overrides the token at a position. llmc writes llm.c's
 * 256-word header (magic 20240520, uint16 tokens), llmc32 its uint32
 * variant (magic 20240801). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

static void put(FILE *f, unsigned long v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		fputc((int)(v >> (8 * i) & 255), f);
}

int main(int argc, char **argv)
{
	const char *fmt = "u16";
	unsigned long vocab = 256, seed = 1, n = 0;
	unsigned long *setpos = NULL, *setval = NULL;
	size_t nset = 0;
	int have_n = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
			fmt = argv[++i];
		else if (strcmp(argv[i], "--vocab") == 0 && i + 1 < argc)
			vocab = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
			setpos = realloc(setpos, (nset + 1) * sizeof *setpos);
			setval = realloc(setval, (nset + 1) * sizeof *setval);
			if (sscanf(argv[++i], "%lu=%lu", &setpos[nset], &setval[nset]) != 2) {
				fprintf(stderr, "mktokens: --set POS=TOKEN\n");
				return 2;
			}
			nset++;
		} else if (!have_n) {
			n = strtoul(argv[i], NULL, 10);
			have_n = 1;
		} else {
			fprintf(stderr, "mktokens: unexpected '%s'\n", argv[i]);
			return 2;
		}
	}
	int bytes = strcmp(fmt, "bytes") == 0 ? 1 : strcmp(fmt, "u32") == 0 || strcmp(fmt, "llmc32") == 0 ? 4 : 2;
	if (!have_n || vocab == 0) {
		fprintf(stderr, "usage: mktokens [--format F] [--vocab V] [--seed S] [--set POS=TOKEN] N\n");
		return 2;
	}
	if (strncmp(fmt, "llmc", 4) == 0) {
		put(stdout, bytes == 4 ? 20240801 : 20240520, 4);
		put(stdout, 1, 4);
		put(stdout, n, 4);
		for (int i = 3; i < 256; i++)
			put(stdout, 0, 4);
	}
	lora_rng r;
	lora_rng_seed(&r, seed);
	for (unsigned long i = 0; i < n; i++) {
		unsigned long t = (unsigned long)(lora_rng_u64(&r) % vocab);
		for (size_t k = 0; k < nset; k++)
			if (setpos[k] == i)
				t = setval[k];
		put(stdout, t, bytes);
	}
	free(setpos);
	free(setval);
	return fflush(stdout) || ferror(stdout) ? 1 : 0;
}
