#include "core/outfile_internal.h"

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

/* ---- direct output ---- */

#define DIRECT_ALIGN 4096
#define DIRECT_BUF (4u << 20)
static uint64_t direct_min = 64u << 20; /* smaller files go through the cache */

void lora_outfile_direct_min(uint64_t bytes) { direct_min = bytes; }

void lora_outfile_direct_start(lora_outfile_direct *d, lora_outfile *o, uint64_t bytes)
{
	int fd = o->is_stdout ? -1 : fileno(o->fp), flags = fd < 0 ? -1 : fcntl(fd, F_GETFL);
	*d = (lora_outfile_direct){.fd = -1};
	if (bytes < direct_min || flags < 0 || !(d->buf = aligned_alloc(DIRECT_ALIGN, DIRECT_BUF)))
		return;
	if (fcntl(fd, F_SETFL, flags | O_DIRECT) == 0) {
		d->fd = fd;
		return;
	}
	free(d->buf);
	d->buf = NULL;
}

/* A refusal of direct I/O (EINVAL: the file system wants another
 * alignment, or the tail is not whole blocks) sends the rest through the
 * cache. */
int lora_outfile_direct_flush(lora_outfile_direct *d)
{
	if (d->fd < 0)
		return 0;
	for (size_t off = 0; off < d->len;) {
		ssize_t r = pwrite(d->fd, d->buf + off, d->len - off, (off_t)(d->pos + off));
		if (r > 0) {
			off += (size_t)r;
			continue;
		}
		int err = r < 0 ? errno : ENOSPC, flags = fcntl(d->fd, F_GETFL);
		if (err == EINTR || (err == EINVAL && flags >= 0 && (flags & O_DIRECT) &&
		                     fcntl(d->fd, F_SETFL, flags & ~O_DIRECT) == 0))
			continue;
		errno = err;
		return -1;
	}
	d->pos += d->len;
	d->len = 0;
	return 0;
}

int lora_outfile_put(lora_outfile_direct *d, lora_outfile *o, const void *p, size_t n)
{
	if (d->fd < 0)
		return fwrite(p, 1, n, o->fp) == n ? 0 : -1;
	for (const unsigned char *q = p; n;) {
		size_t k = DIRECT_BUF - d->len < n ? DIRECT_BUF - d->len : n;
		memcpy(d->buf + d->len, q, k);
		d->len += k, q += k, n -= k;
		if (d->len == DIRECT_BUF && lora_outfile_direct_flush(d))
			return -1;
	}
	return 0;
}

void lora_outfile_direct_free(lora_outfile_direct *d)
{
	free(d->buf);
	d->buf = NULL;
}
