/* cli: what every binary shares: a table-driven option parser that also
 * generates --help and completion data, error reporting, the exit codes,
 * the progress line and the refusal of a terminal on standard input.
 *
 * It sits beside cmd/, not in lib/, because it prints: it owns the
 * conversation with the terminal (usage on stdout for -h, one-line errors
 * and progress on stderr). */
#ifndef LORA_CLI_H
#define LORA_CLI_H

#include <signal.h>
#include <stddef.h>

#include "core/dtype.h"
#include "core/err.h"
#include "io/data.h"
#include "model/llama.h"

enum { LORA_EXIT_OK = 0, LORA_EXIT_FAIL = 1, LORA_EXIT_USAGE = 2 };

typedef struct {
	int id;             /* returned by lora_cli_next; a short option's char, or >= 256 */
	char shortopt;      /* 0 if long-only */
	const char *longopt;
	const char *arg;    /* metavar if the option takes a value, else NULL */
	const char *help;   /* NULL: an alias (LORA_OPT_ALIAS) */
	const char *values; /* space-separated choices for completion, or NULL;
	                       "@file" / "@dir" complete paths */
} lora_opt;

/* An old spelling kept for one release: a row with the id and arg of the
 * option it stands for, the old long name (or NULL) and short letter (or
 * 0), and no help. It is parsed like the new spelling, with a one-line
 * deprecation warning; it is left out of --help and completions, and
 * --list-options lists it as "alias OLD NEW" so that the docs test finds it
 * in the man page. */
#define LORA_OPT_ALIAS(id, shortopt, longopt, arg) {id, shortopt, longopt, arg, NULL, NULL}

typedef struct {
	const char *name;     /* "lora-init" */
	const char *synopsis; /* "-m MODEL [options] [-o OUT]"; '\n' separates
	                         alternative forms ("Usage: ..." / "   or: ...") */
	const char *summary;  /* one line, or two where one would pass 80 columns */
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
 * every tool reading a memory-mapped input has it; sets the .lora payload
 * limit from LORA_MAX_PAYLOAD (an invalid value: one line, exit 2); and
 * prints lib/'s warnings as "name: warning: ..." unless the tool's -q/--quiet
 * is given. */
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

/* Flush standard output: 0, or 1 after an error line when it could not be
 * written (a full disk is an error, not a success). */
int lora_cli_flush(const lora_tool *t);

/* Value parsers for option arguments: exit 2 naming the option on junk. */
long long lora_cli_int(const lora_tool *t, const char *opt, const char *s, long long lo, long long hi);
double lora_cli_double(const lora_tool *t, const char *opt, const char *s);
/* -j/--threads N: 1 to LORA_BLAS_MAX_THREADS (else exit 2), and a count
 * the system can start (else one line, exit 1: not the OpenMP runtime's
 * abort later); then the thread count of everything. */
void lora_cli_threads(const lora_tool *t, const char *s);

/* Install SIGINT/SIGTERM/SIGHUP/SIGPIPE handlers that remove temporary
 * output files and exit 128+signal, and a SIGBUS handler (raised in any
 * thread when a memory-mapped input shrinks while being read) that removes
 * them, prints "<tool>: an input file changed or shrank while being read"
 * and exits 1. A tool may replace the first four handlers afterwards. */
void lora_cli_signals(void);
/* For a long job that stops cleanly: SIGINT, SIGTERM and SIGHUP set the
 * returned flag to the signal's number (the job finishes its step, saves,
 * exits 128 + it); a second signal removes temporary outputs and dies of
 * it. SIGXFSZ is ignored as in lora_cli_signals, and SIGBUS handled. */
volatile sig_atomic_t *lora_cli_stop_signals(void);

/* Parse a storage dtype option value (f32, f16, bf16, and with keep also
 * "keep", returned as -1): exit 2 naming the option on anything else. */
int lora_cli_dtype(const lora_tool *t, const char *opt, const char *s, int keep);
/* A token data format (auto, u16, u32, llmc, bytes). */
lora_data_format lora_cli_data_format(const lora_tool *t, const char *opt, const char *s);

/* --compute: auto, f32 or bf16. */
lora_llama_compute lora_cli_compute(const lora_tool *t, const char *s);
/* A lib job's note callback (ctx: a lora_cli_progress): the line stays
 * on standard error when progress is shown. */
void lora_cli_note(void *ctx, const char *line);

/* The exit status of the SIGBUS handler: 1 unless a tool whose 1 means
 * something else (lora-diff: "different") sets its own. */
void lora_cli_fault_exit(int status);

/* 1 if progress output is wanted: stderr is a terminal and not quiet. */
int lora_cli_progress_ok(int quiet);

/* The one progress line: on standard error only when that is a terminal
 * and not quiet; at most five updates a second (a monotonic clock decides,
 * so a fast loop costs a clock read per call); cut to the terminal's width
 * so that '\r' can overwrite it; cleared by lora_cli_progress_end, by
 * lora_cli_error (so an error line never lands after a half line) and by
 * the signal handlers. One at a time. */
typedef struct {
	const char *name;  /* the tool's name, the line's prefix */
	int on;            /* 0: every call does nothing */
	int cols;          /* terminal width */
	double t0, last;   /* monotonic seconds: start, last update shown */
} lora_cli_progress;

void lora_cli_progress_start(lora_cli_progress *p, const lora_tool *t, int quiet);
/* Show "name: message" in place of the previous line, unless one was shown
 * less than 0.2 s ago. */
void lora_cli_progress_update(lora_cli_progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A line that stays (an evaluation result, a summary): clears the progress
 * line and prints "name: message" with a newline, when p is on. */
void lora_cli_progress_note(lora_cli_progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Clear the line, if one is shown. */
void lora_cli_progress_end(lora_cli_progress *p);
/* Seconds since lora_cli_progress_start. */
double lora_cli_progress_elapsed(const lora_cli_progress *p);

/* A tool about to read spec (a path or "PATH[:SCALE]"; "-" is standard
 * input) where standard input is a terminal exits 2 with one line instead
 * of waiting silently for bytes nobody is going to type; so does a second
 * spec naming standard input (call it once per input). */
void lora_cli_stdin(const lora_tool *t, const char *spec);

#endif
