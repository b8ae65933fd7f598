/* Drives the option parser with the arguments given: prints what it saw. */
#include <stdio.h>

#include "cli.h"
#include "math/blas_internal.h"

static const lora_opt opts[] = {
	{'q', 'q', "quiet", NULL, "quiet", NULL},
	{'f', 'f', "force", NULL, "force", NULL},
	{'o', 'o', "output", "FILE", "output", "@file"},
	{256, 0, "rank", "N", "rank", NULL},
	{257, 0, "fail-product", NULL, "one matrix product whose oneDNN primitive fails", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};
static const lora_tool tool = {"test-cli", "[options] [ARG...]", "Parser test.", NULL, opts, NULL};

int main(int argc, char **argv)
{
	lora_cli c;
	int id;
	const char *sep = "";
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		if (id == LORA_OPT_OPERAND)
			printf("%soperand=%s", sep, c.arg);
		else if (id == 257) {
			float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {1, 1, 1}, y[2];
			lora_blas_fail_next();
			lora_blas_sgemm(0, 0, 2, 1, 3, 1, a, 3, b, 1, 0, y, 1);
			printf("%sy=%g,%g", sep, y[0], y[1]);
		} else if (id == 256)
			printf("%sr=%lld", sep, lora_cli_int(&tool, "--rank", c.arg, 1, 100));
		else if (c.arg)
			printf("%s%c=%s", sep, id, c.arg);
		else
			printf("%s%c", sep, id);
		sep = " ";
	}
	printf("\n");
	return 0;
}
