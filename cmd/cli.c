#include "cli.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/outfile.h"

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

static void print_opts(FILE *f, const lora_opt *opts)
{
	char label[96];
	for (const lora_opt *o = opts; o->id; o++) {
		opt_label(o, label, sizeof label);
		if (strlen(label) > 24)
			fprintf(f, "  %s\n  %-24s  %s\n", label, "", o->help);
		else
			fprintf(f, "  %-24s  %s\n", label, o->help);
	}
}

static void help(const lora_tool *t)
{
	printf("Usage: %s %s\n%s\n\nOptions:\n", t->name, t->synopsis, t->summary);
	print_opts(stdout, t->opts);
	print_opts(stdout, common);
	if (t->details)
		printf("\n%s", t->details);
	/* A tool with its own exit codes (lora-diff, as diff(1)) says so in details. */
	if (!t->details || !strstr(t->details, "Exit status:"))
		printf("\nExit status: 0 success, 1 runtime error, 2 usage error.\n");
	printf("See %s(1).\n", t->name);
}

/* Tab-separated: short, long, metavar, values, help ("-" when empty). */
static void list_options(const lora_tool *t)
{
	const lora_opt *tabs[] = {t->opts, common};
	for (int k = 0; k < 2; k++)
		for (const lora_opt *o = tabs[k]; o->id; o++) {
			if (o->shortopt)
				printf("-%c", o->shortopt);
			else
				printf("-");
			printf("\t--%s\t%s\t%s\t%s\n", o->longopt, o->arg ? o->arg : "-",
			       o->values ? o->values : "-", o->help);
		}
	printf("operands\t%s\n", t->operands ? t->operands : "-");
}

void lora_cli_error(const lora_tool *t, const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fprintf(stderr, "%s: ", t->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

_Noreturn void lora_cli_usage_error(const lora_tool *t, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", t->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nUsage: %s %s\nTry '%s --help' for more information.\n", t->name, t->synopsis,
	        t->name);
	exit(LORA_EXIT_USAGE);
}

int lora_cli_fail(const lora_tool *t, const lora_err *e)
{
	lora_cli_error(t, "%s", e->msg);
	return e->code == LORA_EUSAGE ? LORA_EXIT_USAGE : LORA_EXIT_FAIL;
}

void lora_cli_init(lora_cli *c, const lora_tool *t, int argc, char **argv)
{
	memset(c, 0, sizeof *c);
	c->tool = t;
	c->argc = argc;
	c->argv = argv;
	c->i = 1;
	/* Every tool maps its inputs; each gets the SIGBUS handler here, even
	 * one that has no output to clean up. */
	fault_name = t->name;
	install_fault_handler();
}

static const lora_opt *find_long(const lora_tool *t, const char *name, size_t len)
{
	const lora_opt *tabs[] = {t->opts, common};
	for (int k = 0; k < 2; k++)
		for (const lora_opt *o = tabs[k]; o->id; o++)
			if (strlen(o->longopt) == len && strncmp(o->longopt, name, len) == 0)
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

static int dispatch(lora_cli *c, const lora_opt *o)
{
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
		return dispatch(c, o);
	}
	c->bundle = NULL;
	if (c->i >= c->argc)
		return LORA_OPT_END;
	char *a = c->argv[c->i++];
	if (c->dashdash || a[0] != '-' || a[1] == 0) {
		c->arg = a;
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
		return dispatch(c, &list);
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
	return dispatch(c, o);
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

int lora_cli_progress_ok(int quiet) { return !quiet && isatty(STDERR_FILENO); }
