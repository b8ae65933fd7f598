#include "core/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/path.h"

/* A small fixed registry keeps cleanup async-signal-safe (no malloc, no
 * locks): the handler only calls unlink on the stored paths. */
#define MAX_TMP 1024
static char *volatile tmps[MAX_TMP];

static volatile sig_atomic_t ntmps;

void lora_outfile_track(char *p)
{
	/* Fill the slot before publishing it to the signal handler. */
	if (ntmps < MAX_TMP) {
		tmps[ntmps] = p;
		ntmps = ntmps + 1;
	}
}

void lora_outfile_untrack(const char *p)
{
	for (int i = 0; i < ntmps; i++)
		if (tmps[i] == p)
			tmps[i] = NULL;
	while (ntmps > 0 && !tmps[ntmps - 1])
		ntmps--;
}

/* Creating a temporary and registering it must not be split by a signal,
 * or the handler would miss it: block the cleanup signals around both. */
static void block(sigset_t *old)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	sigprocmask(SIG_BLOCK, &set, old);
}

static void unblock(const sigset_t *old) { sigprocmask(SIG_SETMASK, old, NULL); }

int lora_outfile_mkdtemp(char *tmpl)
{
	sigset_t old;
	block(&old);
	int ok = mkdtemp(tmpl) != NULL;
	if (ok) {
		lora_outfile_track(tmpl);
		mode_t mask = umask(0); /* mkdtemp makes it 0700; give it a plain mkdir's mode */
		umask(mask);
		chmod(tmpl, 0777 & ~mask);
	}
	unblock(&old);
	return ok ? 0 : -1;
}

int lora_outfile_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1;
	if (fd >= 0) {
		rc = fsync(fd);
		int err = errno;
		close(fd);
		errno = err;
	}
	return rc;
}

void lora_outfile_cleanup(void)
{
	for (int i = ntmps - 1; i >= 0; i--)
		if (tmps[i] && unlink(tmps[i]) != 0)
			rmdir(tmps[i]);
}

int lora_outfile_check(const char *path, int flags, lora_err *e)
{
	struct stat sb;
	if (!path || strcmp(path, "-") == 0)
		return (flags & LORA_OUT_BINARY) && isatty(STDOUT_FILENO)
		           ? lora_err_set(e, LORA_EUSAGE, "refusing to write binary data to a terminal; use -o FILE or a pipe")
		           : 0;
	if (!(flags & LORA_OUT_FORCE) && lstat(path, &sb) == 0)
		return lora_err_set(e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", path);
	return 0;
}

int lora_outfile_open(lora_outfile *o, const char *path, int flags, lora_err *e)
{
	int rc;
	memset(o, 0, sizeof *o);
	if ((rc = lora_outfile_check(path, flags, e)))
		return rc;
	if (!path || strcmp(path, "-") == 0) {
		o->fp = stdout;
		o->is_stdout = 1;
		return 0;
	}
	o->path = strdup(path);
	o->tmp = lora_path_temp(path);
	if (!o->path || !o->tmp) {
		free(o->path);
		free(o->tmp);
		return lora_err_nomem(e);
	}
	sigset_t old;
	block(&old);
	int fd = mkstemp(o->tmp);
	if (fd >= 0)
		lora_outfile_track(o->tmp);
	unblock(&old);
	if (fd < 0) {
		int err = errno;
		free(o->path);
		free(o->tmp);
		memset(o, 0, sizeof *o);
		return lora_err_set(e, LORA_EIO, "%s: cannot create: %s", path, strerror(err));
	}
	/* mkstemp creates 0600; give the file the mode a plain creat would. */
	mode_t mask = umask(0);
	umask(mask);
	fchmod(fd, 0666 & ~mask);
	o->fp = fdopen(fd, "wb");
	if (!o->fp) {
		close(fd);
		lora_outfile_abort(o);
		return lora_err_nomem(e);
	}
	return 0;
}

static void release(lora_outfile *o)
{
	if (o->tmp)
		lora_outfile_untrack(o->tmp);
	free(o->path);
	free(o->tmp);
	memset(o, 0, sizeof *o);
}

int lora_outfile_commit(lora_outfile *o, lora_err *e)
{
	int rc = 0;
	if (o->is_stdout) {
		if (fflush(stdout) != 0 || ferror(stdout))
			rc = lora_err_set(e, LORA_EIO, "standard output: write error: %s", strerror(errno));
		release(o);
		return rc;
	}
	if (fflush(o->fp) != 0 || ferror(o->fp) || fsync(fileno(o->fp)) != 0) {
		int err = errno;
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", o->path, strerror(err));
	}
	if (fclose(o->fp) != 0 && rc == 0)
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", o->path, strerror(errno));
	o->fp = NULL;
	if (rc == 0 && rename(o->tmp, o->path) != 0)
		rc = lora_err_set(e, LORA_EIO, "%s: cannot rename into place: %s", o->path, strerror(errno));
	if (rc)
		unlink(o->tmp);
	release(o);
	return rc;
}

void lora_outfile_abort(lora_outfile *o)
{
	if (o->fp && !o->is_stdout)
		fclose(o->fp);
	if (o->tmp)
		unlink(o->tmp);
	release(o);
}
