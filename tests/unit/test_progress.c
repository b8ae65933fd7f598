/* Drives the progress line: updates as fast as it can for SECONDS, then
 * either reports an error (--fail) or leaves a note and ends the line, and
 * prints on stdout how many updates it asked for and how long it ran. */
#include <stdio.h>

#include "cli.h"

enum { O_FAIL = 256 };

static const lora_opt opts[] = {
	{'q', 'q', "quiet", NULL, "no progress", NULL},
	{O_FAIL, 0, "fail", NULL, "end with an error instead", NULL},
	LORA_OPT_ALIAS('q', 's', "silent", NULL),
	{0, 0, NULL, NULL, NULL, NULL},
};
static const lora_tool tool = {"test-progress", "[-q] [--fail] SECONDS", "Progress test.", NULL, opts, NULL};

int main(int argc, char **argv)
{
	lora_cli c;
	lora_cli_progress p;
	int id, quiet = 0, fail = 0;
	double seconds = 1;
	unsigned long calls = 0;
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		if (id == 'q')
			quiet = 1;
		else if (id == O_FAIL)
			fail = 1;
		else
			seconds = lora_cli_double(&tool, "SECONDS", c.arg);
	}
	lora_cli_progress_start(&p, &tool, quiet);
	while (lora_cli_progress_elapsed(&p) < seconds)
		lora_cli_progress_update(&p, "call %lu of a loop whose progress message is longer than a narrow "
		                         "terminal is wide, so it must be cut", ++calls);
	if (fail) {
		lora_cli_error(&tool, "failed after %lu calls", calls);
		return 1;
	}
	lora_cli_progress_note(&p, "%lu calls", calls);
	lora_cli_progress_end(&p);
	printf("calls=%lu elapsed=%.3f\n", calls, lora_cli_progress_elapsed(&p));
	return 0;
}
