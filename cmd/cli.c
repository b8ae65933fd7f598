#include "cli.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "math/blas.h"
#include "core/outfile.h"
#include "io/load.h"
#include "io/lorafile.h"

enum { OPT_HELP = -10, OPT_VERSION = -11, OPT_LIST = -12 };

static const char *volatile fault_name; /* what the SIGBUS handler prints */
static volatile int fault_status = LORA_EXIT_FAIL; /* and exits with */
static void install_fault_handler(void);

static const lora_opt common[] = {
	{OPT_HELP, 'h', "help", NULL, "show this help and exit", NULL},
	{OPT_VERSION, 0, "version", NULL, "print the version and exit", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static void opt_label(const lora_opt *o, char *buf, size_t n)
{
	if (o->shortopt)
		snprintf(buf, n, "-%c, --%s%s%s", o->shortopt, o->longopt, o->arg ? " " : "",
		         o->arg ? o->arg : "");
	else
		snprintf(buf, n, "    --%s%s%s", o->longopt, o->arg ? " " : "", o->arg ? o->arg : "");
}

/* Help texts start at column 28 and wrap at word boundaries to stay
 * within 80 columns. */
enum { HELP_COL = 28, HELP_WIDTH = 80 - HELP_COL };

static void print_help_text(FILE *f, const char *s)
{
	for (int first = 1; *s; first = 0) {
		size_t n = strlen(s);
		if (n > HELP_WIDTH) {
			n = HELP_WIDTH;
			while (n > 0 && s[n] != ' ')
				n--;
			if (n == 0) /* one word longer than the column: leave it whole */
				n = strcspn(s, " ");
		}
		fprintf(f, "%*s%.*s\n", first ? 0 : HELP_COL, "", (int)n, s);
		s += n;
		while (*s == ' ')
			s++;
	}
}

static void print_opts(FILE *f, const lora_opt *opts)
{
	char label[96];
	for (const lora_opt *o = opts; o->id; o++) {
		if (!o->help)
			continue;
		opt_label(o, label, sizeof label);
		if (strlen(label) > HELP_COL - 4)
			fprintf(f, "  %s\n%*s", label, HELP_COL, "");
		else
			fprintf(f, "  %-*s  ", HELP_COL - 4, label);
		print_help_text(f, o->help);
	}
}

/* "Usage: name form" for each form of the synopsis. */
static void print_usage(FILE *f, const lora_tool *t)
{
	const char *s = t->synopsis;
	for (int first = 1; first || *s; first = 0) {
		size_t n = strcspn(s, "\n");
		fprintf(f, "%s %s %.*s\n", first ? "Usage:" : "   or:", t->name, (int)n, s);
		s += n + (s[n] == '\n');
	}
}

static void help(const lora_tool *t)
{
	print_usage(stdout, t);
	printf("%s\n\nOptions:\n", t->summary);
	print_opts(stdout, t->opts);
	print_opts(stdout, common);
	if (t->details)
		printf("\n%s", t->details);
	/* A tool with its own exit codes (lora-diff, as diff(1)) says so in details. */
	if (!t->details || !strstr(t->details, "Exit status:"))
		printf("\nExit status: 0 success, 1 runtime error, 2 usage error.\n");
	printf("See %s(1), and lora(7) for the options every tool shares.\n", t->name);
}

/* The current spelling of an alias's option: the first row with its id
 * that is not an alias. */
static const lora_opt *current(const lora_tool *t, const lora_opt *alias)
{
	for (const lora_opt *o = t->opts; o->id; o++)
		if (o->id == alias->id && o->help)
			return o;
	return alias;
}

/* Tab-separated: short, long, metavar, values, help ("-" when empty); then
 * "alias OLD NEW" per old spelling and "operands KIND". */
static void list_options(const lora_tool *t)
{
	const lora_opt *tabs[] = {t->opts, common};
	for (int k = 0; k < 2; k++)
		for (const lora_opt *o = tabs[k]; o->id; o++) {
			if (!o->help)
				continue;
			if (o->shortopt)
				printf("-%c", o->shortopt);
			else
				printf("-");
			printf("\t--%s\t%s\t%s\t%s\n", o->longopt, o->arg ? o->arg : "-",
			       o->values ? o->values : "-", o->help);
		}
	for (const lora_opt *o = t->opts; o->id; o++)
		if (!o->help) {
			if (o->longopt)
				printf("alias\t--%s\t--%s\n", o->longopt, current(t, o)->longopt);
			else
				printf("alias\t-%c\t--%s\n", o->shortopt, current(t, o)->longopt);
		}
	printf("operands\t%s\n", t->operands ? t->operands : "-");
}

static void progress_clear(void);

/* "tool: message" on stderr, on a line of its own. */
static void message(const lora_tool *t, const char *fmt, va_list ap)
{
	fflush(stdout);
	progress_clear();
	fprintf(stderr, "%s: ", t->name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void lora_cli_error(const lora_tool *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	message(t, fmt, ap);
	va_end(ap);
}

_Noreturn void lora_cli_usage_error(const lora_tool *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	message(t, fmt, ap);
	va_end(ap);
	print_usage(stderr, t);
	fprintf(stderr, "Try '%s --help' for more information.\n", t->name);
	exit(LORA_EXIT_USAGE);
}

int lora_cli_fail(const lora_tool *t, const lora_err *e)
{
	if (e->msg[0]) /* empty: another process of the job said it (train/dist) */
		lora_cli_error(t, "%s", e->msg);
	return e->code == LORA_EUSAGE ? LORA_EXIT_USAGE : LORA_EXIT_FAIL;
}

/* Products that oneDNN could not do were computed by OpenBLAS: right, but
 * slower than they should be, which a user should hear about. */
static void report_fallback(void)
{
	lora_err e;
	if (lora_blas_error(&e))
		fprintf(stderr, "%s: warning: %s; computed with OpenBLAS instead (slower)\n", fault_name, e.msg);
}

/* LORA_MAX_PAYLOAD: bytes, or a whole number with K, M, G or T (powers of
 * 1024), at least 1 byte; anything else is a usage error. */
static void max_payload(const lora_tool *t)
{
	const char *s = getenv(LORA_FILE_MAX_PAYLOAD_ENV), *p;
	uint64_t v = 0;
	int shift = 0;
	if (!s)
		return;
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			goto bad;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p && p[1] == 0 && strchr("KkMmGgTt", *p))
		shift = 10 * (1 + (int)(strchr("KMGT", *p & ~0x20) - "KMGT")), p++;
	if (p == s || *p || v > (UINT64_MAX >> shift))
		goto bad;
	if (v == 0) {
		lora_cli_error(t, "%s: '%s': the limit must be at least 1 byte", LORA_FILE_MAX_PAYLOAD_ENV, s);
		exit(LORA_EXIT_USAGE);
	}
	lora_lorafile_set_max_payload(v << shift);
	return;
bad:
	lora_cli_error(t, "%s: '%s' is not a size (bytes, or a whole number with K, M, G or T: 16G, 512M)",
	               LORA_FILE_MAX_PAYLOAD_ENV, s);
	exit(LORA_EXIT_USAGE);
}

static const lora_tool *warn_tool;
static int warn_quiet; /* -q was given */

/* lib/'s warnings (lora_err_warn): "tool: warning: LINE", unless -q. */
static void warn(const char *line)
{
	if (!warn_quiet)
		lora_cli_error(warn_tool, "warning: %s", line);
}

void lora_cli_init(lora_cli *c, const lora_tool *t, int argc, char **argv)
{
	lora_blas_guard_exit();
	if (!fault_name)
		atexit(report_fallback);
	memset(c, 0, sizeof *c);
	c->tool = t;
	c->argc = argc;
	c->argv = argv;
	c->i = 1;
	/* Every tool maps its inputs; each gets the SIGBUS handler here, even
	 * one that has no output to clean up. The name is also the one the
	 * exit warnings use. */
	fault_name = t->name;
	install_fault_handler();
	warn_tool = t;
	lora_err_warn_sink(warn);
}

static const lora_opt *find_long(const lora_tool *t, const char *name, size_t len)
{
	const lora_opt *tabs[] = {t->opts, common};
	for (int k = 0; k < 2; k++)
		for (const lora_opt *o = tabs[k]; o->id; o++)
			if (o->longopt && strlen(o->longopt) == len && strncmp(o->longopt, name, len) == 0)
				return o;
	return NULL;
}

static const lora_opt *find_short(const lora_tool *t, char ch)
{
	const lora_opt *tabs[] = {t->opts, common};
	for (int k = 0; k < 2; k++)
		for (const lora_opt *o = tabs[k]; o->id; o++)
			if (o->shortopt == ch)
				return o;
	return NULL;
}

/* o as given: by its short letter (as_short) or its long name. */
/* Every path the command line reads is registered, so that no output of
 * the run can replace it or sit inside it (lora_outfile_guard): the values
 * of "@file" options other than the outputs, and "@file" operands ("@dir"
 * operands are what test generators write). An operand may be PATH:SCALE. Out of memory only weakens the check; the tool fails
 * on its own allocations soon after. */
static void note_input(const char *arg)
{
	struct stat sb;
	const char *colon = strrchr(arg, ':');
	if (stat(arg, &sb) != 0 && colon) {
		char *p = strndup(arg, (size_t)(colon - arg));
		if (p)
			lora_outfile_input(p);
		free(p);
		return;
	}
	lora_outfile_input(arg);
}

static int is_output(const lora_opt *o)
{
	static const char *const outs[] = {"output", "log", "checkpoint-dir"};
	for (size_t i = 0; o->longopt && i < sizeof outs / sizeof *outs; i++)
		if (strcmp(o->longopt, outs[i]) == 0)
			return 1;
	return 0;
}

static int dispatch(lora_cli *c, const lora_opt *o, int as_short)
{
	if (o->longopt && strcmp(o->longopt, "quiet") == 0)
		warn_quiet = 1;
	if (o->values && strcmp(o->values, "@file") == 0 && c->arg && !is_output(o))
		note_input(c->arg);
	if (!o->help) {
		char old[64];
		if (as_short)
			snprintf(old, sizeof old, "-%c", o->shortopt);
		else
			snprintf(old, sizeof old, "--%s", o->longopt);
		lora_cli_error(c->tool, "'%s' is deprecated; use '--%s'", old, current(c->tool, o)->longopt);
	}
	switch (o->id) {
	case OPT_HELP:
		help(c->tool);
		exit(fflush(stdout) || ferror(stdout) ? LORA_EXIT_FAIL : LORA_EXIT_OK);
	case OPT_VERSION:
		printf("%s %s\n", c->tool->name, LORA_VERSION);
		exit(fflush(stdout) || ferror(stdout) ? LORA_EXIT_FAIL : LORA_EXIT_OK);
	case OPT_LIST:
		list_options(c->tool);
		exit(LORA_EXIT_OK);
	}
	return o->id;
}

int lora_cli_next(lora_cli *c)
{
	const lora_tool *t = c->tool;
	c->arg = NULL;
	if (c->bundle && *c->bundle) {
		char ch = *c->bundle++;
		const lora_opt *o = find_short(t, ch);
		if (!o)
			lora_cli_usage_error(t, "unknown option '-%c'", ch);
		if (o->arg) {
			if (*c->bundle) {
				c->arg = c->bundle;
			} else if (c->i < c->argc) {
				c->arg = c->argv[c->i++];
			} else {
				lora_cli_usage_error(t, "option '-%c' needs a value (%s)", ch, o->arg);
			}
			c->bundle = NULL;
		}
		return dispatch(c, o, 1);
	}
	c->bundle = NULL;
	if (c->i >= c->argc) {
		/* read once the options are: --help and --version work whatever
		 * the environment holds */
		max_payload(t);
		return LORA_OPT_END;
	}
	char *a = c->argv[c->i++];
	if (c->dashdash || a[0] != '-' || a[1] == 0) {
		c->arg = a;
		if (t->operands && strcmp(t->operands, "@file") == 0)
			note_input(a);
		return LORA_OPT_OPERAND;
	}
	if (a[1] == '-' && a[2] == 0) {
		c->dashdash = 1;
		return lora_cli_next(c);
	}
	if (a[1] != '-') {
		c->bundle = a + 1;
		return lora_cli_next(c);
	}
	const char *name = a + 2, *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	if (len == 12 && strncmp(name, "list-options", 12) == 0) {
		static const lora_opt list = {OPT_LIST, 0, "list-options", NULL, "", NULL};
		return dispatch(c, &list, 0);
	}
	const lora_opt *o = find_long(t, name, len);
	if (!o)
		lora_cli_usage_error(t, "unknown option '--%.*s'", (int)len, name);
	if (o->arg) {
		if (eq)
			c->arg = eq + 1;
		else if (c->i < c->argc)
			c->arg = c->argv[c->i++];
		else
			lora_cli_usage_error(t, "option '--%s' needs a value (%s)", o->longopt, o->arg);
	} else if (eq) {
		lora_cli_usage_error(t, "option '--%s' takes no value", o->longopt);
	}
	return dispatch(c, o, 0);
}

int lora_cli_flush(const lora_tool *t)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	lora_cli_error(t, "standard output: write error: %s", strerror(errno));
	return 1;
}

long long lora_cli_int(const lora_tool *t, const char *opt, const char *s, long long lo, long long hi)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		lora_cli_usage_error(t, "%s: '%s' is not an integer in [%lld, %lld]", opt, s, lo, hi);
	return v;
}

void lora_cli_threads(const lora_tool *t, const char *s)
{
	lora_err e;
	int n = (int)lora_cli_int(t, "--threads", s, 1, LORA_BLAS_MAX_THREADS);
	if (lora_blas_try_threads(n, &e)) {
		lora_cli_fail(t, &e);
		exit(LORA_EXIT_FAIL);
	}
	lora_blas_set_threads(n);
}

double lora_cli_double(const lora_tool *t, const char *opt, const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		lora_cli_usage_error(t, "%s: '%s' is not a finite number", opt, s);
	return v;
}

static pthread_t main_thread;

static void on_signal(int sig)
{
	/* OpenBLAS and OpenMP workers may receive a process signal; only the
	 * main thread creates output files, and it blocks signals while it
	 * creates and registers one, so hand the signal over to it. */
	if (!pthread_equal(pthread_self(), main_thread)) {
		pthread_kill(main_thread, sig);
		return;
	}
	lora_outfile_cleanup();
	progress_clear();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void say(const char *s) { (void)!write(STDERR_FILENO, s, strlen(s)); }

/* SIGBUS is what reading a memory-mapped input past its end raises once
 * the file has been truncated under us (a shard or token file replaced or
 * shrunk by another program). It is synchronous, so it arrives in the
 * faulting thread, whichever that is, and returning would fault again:
 * remove the temporary outputs, say what happened and exit from here. Only
 * async-signal-safe calls. */
static void on_fault(int sig)
{
	static volatile int once;
	(void)sig;
	if (__atomic_exchange_n(&once, 1, __ATOMIC_SEQ_CST))
		for (;;) /* another thread faulted too: it is already exiting */
			pause();
	lora_outfile_cleanup();
	progress_clear();
	const char *name = fault_name;
	say(name ? name : program_invocation_short_name);
	say(": an input file changed or shrank while being read\n");
	_exit(fault_status);
}

static void install_fault_handler(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	/* Other signals wait while temporaries are removed. */
	sigaddset(&sa.sa_mask, SIGINT);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGHUP);
	sigaddset(&sa.sa_mask, SIGPIPE);
	sigaction(SIGBUS, &sa, NULL);
}

void lora_cli_fault_exit(int status) { fault_status = status; }

void lora_cli_signals(void)
{
	int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
	main_thread = pthread_self();
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		signal(sigs[i], on_signal);
	/* Past a file size limit, write(2) then fails with EFBIG and the error
	 * path removes the temporary file, instead of the process dying. */
	signal(SIGXFSZ, SIG_IGN);
	install_fault_handler();
}

static volatile sig_atomic_t stop_sig;

static void on_stop(int sig)
{
	if (stop_sig) { /* a second signal: give up now */
		lora_outfile_cleanup();
		progress_clear();
		signal(sig, SIG_DFL);
		raise(sig);
	}
	stop_sig = sig;
}

volatile sig_atomic_t *lora_cli_stop_signals(void)
{
	int sigs[] = {SIGINT, SIGTERM, SIGHUP};
	main_thread = pthread_self();
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		signal(sigs[i], on_stop);
	signal(SIGXFSZ, SIG_IGN);
	install_fault_handler();
	return &stop_sig;
}

int lora_cli_dtype(const lora_tool *t, const char *opt, const char *s, int keep)
{
	lora_dtype d;
	if (keep && strcmp(s, "keep") == 0)
		return -1;
	if (lora_dtype_parse(s, &d))
		lora_cli_usage_error(t, "%s: '%s' is not %sf32, f16 or bf16", opt, s, keep ? "keep, " : "");
	return (int)d;
}

lora_data_format lora_cli_data_format(const lora_tool *t, const char *opt, const char *s)
{
	lora_data_format f;
	if (lora_data_format_parse(s, &f))
		lora_cli_usage_error(t, "%s: '%s' is not auto, u16, u32, llmc, tok or bytes", opt, s);
	return f;
}

lora_llama_compute lora_cli_compute(const lora_tool *t, const char *s)
{
	static const char *const names[] = {"auto", "f32", "bf16"};
	for (int i = 0; i < 3; i++)
		if (!strcmp(s, names[i]))
			return (lora_llama_compute)i;
	lora_cli_usage_error(t, "--compute: '%s' is not auto, f32 or bf16", s);
}

void lora_cli_note(void *ctx, const char *line) { lora_cli_progress_note(ctx, "%s", line); }

int lora_cli_progress_ok(int quiet) { return !quiet && isatty(STDERR_FILENO); }

/* 1 while a progress line is on the screen: read by the signal handlers,
 * so it is a flag and the clearing a write(2). */
static volatile sig_atomic_t progress_shown;

static void progress_clear(void)
{
	if (progress_shown) {
		say("\r\033[K");
		progress_shown = 0;
	}
}

static double mono(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void lora_cli_progress_start(lora_cli_progress *p, const lora_tool *t, int quiet)
{
	struct winsize ws;
	memset(p, 0, sizeof *p);
	p->name = t->name;
	p->on = lora_cli_progress_ok(quiet);
	p->cols = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20 ? ws.ws_col : 80;
	p->t0 = mono();
	p->last = p->t0 - 1; /* the first update shows at once */
}

double lora_cli_progress_elapsed(const lora_cli_progress *p) { return mono() - p->t0; }

/* "name: message" cut to the width, written in one go. */
static void progress_write(lora_cli_progress *p, const char *fmt, va_list ap, int keep)
{
	char line[512];
	size_t cap = (size_t)p->cols < sizeof line ? (size_t)p->cols : sizeof line;
	int n = snprintf(line, cap, "%s: ", p->name);
	if (n >= 0 && (size_t)n < cap)
		vsnprintf(line + n, cap - (size_t)n, fmt, ap);
	fflush(stdout);
	fprintf(stderr, "\r%s\033[K%s", line, keep ? "\n" : "");
	fflush(stderr);
	progress_shown = !keep;
}

void lora_cli_progress_update(lora_cli_progress *p, const char *fmt, ...)
{
	if (!p->on)
		return;
	double now = mono();
	if (now - p->last < 0.2)
		return;
	p->last = now;
	va_list ap;
	va_start(ap, fmt);
	progress_write(p, fmt, ap, 0);
	va_end(ap);
}

void lora_cli_progress_note(lora_cli_progress *p, const char *fmt, ...)
{
	if (!p->on)
		return;
	va_list ap;
	va_start(ap, fmt);
	progress_write(p, fmt, ap, 1);
	va_end(ap);
}

void lora_cli_progress_end(lora_cli_progress *p)
{
	if (p->on)
		progress_clear();
}

void lora_cli_stdin(const lora_tool *t, const char *spec)
{
	char *path = NULL;
	double k;
	lora_err e;
	int in = strcmp(spec, "-") == 0 ||
	         (strncmp(spec, "-:", 2) == 0 && !lora_load_spec(spec, &path, &k, &e) && strcmp(path, "-") == 0);
	free(path);
	/* The second reader would find the first one's leftovers (or nothing)
	 * and call it a bad file. */
	static int taken;
	if (in && taken++)
		lora_cli_usage_error(t, "'-' given twice: standard input can be read only once");
	if (in && isatty(STDIN_FILENO)) {
		lora_cli_error(t, "standard input is a terminal: give a file, or pipe one in");
		exit(LORA_EXIT_USAGE);
	}
}
