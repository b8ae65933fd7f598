/* cli: what every binary shares: a table-driven option parser that also
 * generates --help and completion data, error reporting, and the exit codes.
 *
 * This is the one lib/ module that prints: it owns the conversation with the
 * terminal (usage on stdout for -h, one-line errors on stderr). */
#ifndef LORA_CLI_H
#define LORA_CLI_H

#include <stddef.h>

#include "core/err.h"

enum { LORA_EXIT_OK = 0, LORA_EXIT_FAIL = 1, LORA_EXIT_USAGE = 2 };

typedef struct {
	int id;             /* returned by lora_cli_next; a short option's char, or >= 256 */
	char shortopt;      /* 0 if long-only */
	const char *longopt;
	const char *arg;    /* metavar if the option takes a value, else NULL */
	const char *help;
	const char *values; /* space-separated choices for completion, or NULL;
	                       "@file" / "@dir" complete paths */
} lora_opt;

typedef struct {
	const char *name;     /* "lora-init" */
	const char *synopsis; /* "-m MODEL [options] [-o OUT]" */
	const char *summary;  /* one line */
	const char *details;  /* paragraphs after the option list, or NULL */
	const lora_opt *opts; /* terminated by an entry with id 0 */
	const char *operands; /* completion kind of positional args: "@file", NULL */
} lora_tool;

typedef struct {
	const lora_tool *tool;
	int argc;
	char **argv;
	int i;            /* next argv index */
	const char *bundle; /* rest of a bundled short-flag group */
	int dashdash;
	const char *arg;  /* value of the option just returned */
} lora_cli;

enum { LORA_OPT_OPERAND = -1, LORA_OPT_END = -2 };

/* Start parsing. Also handles the options every tool has: -h/--help prints
 * the generated help and exits 0; --version exits 0; the undocumented
 * --list-options prints the table tab-separated (short, long, metavar,
 * values, help; "-" when empty) for the completion generator and the tests,
 * and exits 0. And installs the SIGBUS handler of lora_cli_signals, so
 * every tool reading a memory-mapped input has it. */
void lora_cli_init(lora_cli *c, const lora_tool *t, int argc, char **argv);
/* Next option id (its value in c->arg), LORA_OPT_OPERAND (the operand in
 * c->arg; "-" is an operand), or LORA_OPT_END. Unknown options, missing
 * values and unexpected values print the short usage and exit 2. */
int lora_cli_next(lora_cli *c);

/* Print "name: message" on stderr. */
void lora_cli_error(const lora_tool *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Usage error: message, then "Try 'name --help'.", exit 2. */
_Noreturn void lora_cli_usage_error(const lora_tool *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Report a lib/ error and return the exit code it maps to (1, or 2 for
 * LORA_EUSAGE). */
int lora_cli_fail(const lora_tool *t, const lora_err *e);

/* Value parsers for option arguments: exit 2 naming the option on junk. */
long long lora_cli_int(const lora_tool *t, const char *opt, const char *s, long long lo, long long hi);
double lora_cli_double(const lora_tool *t, const char *opt, const char *s);

/* Install SIGINT/SIGTERM/SIGHUP/SIGPIPE handlers that remove temporary
 * output files and exit 128+signal, and a SIGBUS handler (raised in any
 * thread when a memory-mapped input shrinks while being read) that removes
 * them, prints "<tool>: an input file changed or shrank while being read"
 * and exits 1. A tool may replace the first four handlers afterwards. */
void lora_cli_signals(void);
/* The exit status of the SIGBUS handler: 1 unless a tool whose 1 means
 * something else (lora-diff: "different") sets its own. */
void lora_cli_fault_exit(int status);

/* 1 if progress output is wanted: stderr is a terminal and not quiet. */
int lora_cli_progress_ok(int quiet);

#endif
