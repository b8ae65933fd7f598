#include "core/outfile_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

/* ---- inputs no output may touch ---- */

typedef struct {
	dev_t dev;
	ino_t ino;
	int dir;
	char *path; /* as given, for messages */
	char *real; /* realpath, NULL if it could not be had */
} input;

static input *inputs;
static size_t ninputs;

int lora_outfile_input(const char *path)
{
	struct stat sb;
	if (!path || strcmp(path, "-") == 0 || stat(path, &sb) != 0)
		return 0;
	for (size_t i = 0; i < ninputs; i++)
		if (inputs[i].dev == sb.st_dev && inputs[i].ino == sb.st_ino)
			return 0;
	input *v = realloc(inputs, (ninputs + 1) * sizeof *v);
	if (!v)
		return LORA_ENOMEM;
	inputs = v;
	input *in = &inputs[ninputs];
	*in = (input){sb.st_dev, sb.st_ino, S_ISDIR(sb.st_mode), strdup(path), realpath(path, NULL)};
	if (!in->path) {
		free(in->real);
		return LORA_ENOMEM;
	}
	ninputs++;
	return 0;
}

void lora_outfile_inputs_clear(void)
{
	for (size_t i = 0; i < ninputs; i++) {
		free(inputs[i].path);
		free(inputs[i].real);
	}
	free(inputs);
	inputs = NULL;
	ninputs = 0;
}

/* 1 if the directory top is real (an absolute path without links) or one
 * of its ancestors. */
static int under(const char *real, const struct stat *top)
{
	struct stat sb;
	char *p = strdup(real);
	int hit = 0;
	while (p && !hit) {
		hit = stat(p, &sb) == 0 && sb.st_dev == top->st_dev && sb.st_ino == top->st_ino;
		char *slash = strrchr(p, '/');
		if (!slash || strcmp(p, "/") == 0)
			break;
		slash[slash == p] = 0; /* "/a" goes up to "/" */
	}
	free(p);
	return hit;
}

int lora_outfile_guard(const char *shown, const char *target, int replace, lora_err *e)
{
	struct stat sb, in;
	int rc = 0, exists = stat(target, &sb) == 0;
	if (!ninputs)
		return 0;
	char *dir = lora_path_dir(target), *real = dir ? realpath(dir, NULL) : NULL;
	for (size_t i = 0; i < ninputs && !rc; i++) {
		const input *p = &inputs[i];
		in.st_dev = p->dev, in.st_ino = p->ino;
		if (exists && sb.st_dev == p->dev && sb.st_ino == p->ino)
			rc = lora_err_set(e, LORA_EUSAGE, "%s: output would overwrite the input %s", shown, p->path);
		else if (replace && exists && S_ISDIR(sb.st_mode) && p->real && under(p->real, &sb))
			rc = lora_err_set(e, LORA_EUSAGE, "%s: output would replace a directory holding the input %s",
			                  shown, p->path);
		else if (p->dir && real && under(real, &in))
			rc = lora_err_set(e, LORA_EUSAGE, "%s: output would be written inside the input %s", shown,
			                  p->path);
	}
	free(dir);
	free(real);
	return rc;
}

/* ---- where an output lands ---- */

char *lora_outfile_resolve(const char *path, struct stat *sb, int *exists)
{
	char *cur = strdup(path), buf[PATH_MAX];
	for (int hops = 0; cur; hops++) {
		if (lstat(cur, sb) != 0) {
			*exists = 0;
			return cur;
		}
		*exists = 1;
		if (!S_ISLNK(sb->st_mode))
			return cur;
		/* A link to a device, FIFO or socket is used as it is: /proc's
		 * links (/dev/stdout to a pipe) name nothing readlink could
		 * follow, yet open(2) reaches them. */
		struct stat st;
		if (stat(cur, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
			*sb = st;
			return cur;
		}
		ssize_t n = hops < 40 ? readlink(cur, buf, sizeof buf - 1) : -1;
		if (n < 0) {
			int err = hops < 40 ? errno : ELOOP;
			free(cur);
			errno = err;
			return NULL;
		}
		buf[n] = 0;
		char *dir = buf[0] == '/' ? NULL : lora_path_dir(cur);
		char *next = buf[0] == '/' ? strdup(buf) : dir ? lora_path_join(dir, buf) : NULL;
		free(dir);
		free(cur);
		cur = next;
	}
	errno = ENOMEM;
	return NULL;
}

void lora_outfile_remove_tree(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb) != 0)
		return;
	if (!S_ISDIR(sb.st_mode)) {
		unlink(path);
		return;
	}
	DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *p = lora_path_join(path, de->d_name);
		if (p)
			lora_outfile_remove_tree(p);
		free(p);
	}
	if (d)
		closedir(d);
	rmdir(path);
}

void lora_outfile_sweep(const char *target)
{
	char *dir = lora_path_dir(target), prefix[NAME_MAX + 32];
	snprintf(prefix, sizeof prefix, ".%s" LORA_PATH_TEMP_TAG, lora_path_base(target));
	size_t n = strlen(prefix);
	DIR *d = dir ? opendir(dir) : NULL;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char *end;
		if (strncmp(de->d_name, prefix, n) != 0)
			continue;
		long pid = strtol(de->d_name + n, &end, 10);
		/* kill(pid, 0) fails with ESRCH only when no such process exists;
		 * a live writer, or one of another user (EPERM), keeps its file. */
		if (end == de->d_name + n || *end != '.' || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		char *p = lora_path_join(dir, de->d_name);
		if (p)
			lora_outfile_remove_tree(p);
		free(p);
	}
	if (d)
		closedir(d);
	free(dir);
}

/* ---- files ---- */

/* What may be written at target (path resolved): 0 with *stream set for a
 * device or FIFO, or the refusal. */
static int check_target(const char *path, const char *target, const struct stat *sb, int exists, int flags,
                        int *stream, lora_err *e)
{
	*stream = 0;
	if (exists && (S_ISCHR(sb->st_mode) || S_ISFIFO(sb->st_mode))) {
		*stream = 1;
		return 0;
	}
	if (exists && S_ISDIR(sb->st_mode))
		return lora_err_set(e, LORA_EINVAL, "%s: is a directory", path);
	if (exists && !S_ISREG(sb->st_mode))
		return lora_err_set(e, LORA_EINVAL, "%s: is not a regular file, character device or FIFO; not replacing it",
		                    path);
	/* a link that points nowhere is taken too: writing would create its target */
	if (!(flags & LORA_OUT_FORCE) && (exists || strcmp(path, target) != 0))
		return lora_err_set(e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", path);
	return lora_outfile_guard(path, target, 0, e);
}

static int terminal(lora_err *e)
{
	return lora_err_set(e, LORA_EUSAGE, "refusing to write binary data to a terminal; use -o FILE or a pipe");
}

int lora_outfile_check(const char *path, int flags, lora_err *e)
{
	struct stat sb;
	int exists, stream;
	if (!path || strcmp(path, "-") == 0)
		return (flags & LORA_OUT_BINARY) && isatty(STDOUT_FILENO) ? terminal(e) : 0;
	char *target = lora_outfile_resolve(path, &sb, &exists);
	if (!target)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	int rc = check_target(path, target, &sb, exists, flags, &stream, e);
	free(target);
	return rc;
}

static void release(lora_outfile *o)
{
	if (o->tmp)
		lora_outfile_untrack(o->tmp);
	free(o->path);
	free(o->target);
	free(o->tmp);
	memset(o, 0, sizeof *o);
}

/* A device or FIFO: opened as it is, written straight through. */
static int open_stream(lora_outfile *o, int flags, lora_err *e)
{
	int fd = open(o->target, O_WRONLY | O_NOCTTY | O_CLOEXEC), rc = 0;
	if (fd < 0)
		rc = lora_err_set(e, LORA_EIO, "%s: cannot open: %s", o->path, strerror(errno));
	else if ((flags & LORA_OUT_BINARY) && isatty(fd))
		rc = terminal(e);
	else if (!(o->fp = fdopen(fd, "wb")))
		rc = lora_err_nomem(e);
	if (rc) {
		if (fd >= 0)
			close(fd);
		release(o);
	}
	return rc;
}

int lora_outfile_open(lora_outfile *o, const char *path, int flags, lora_err *e)
{
	struct stat sb;
	int rc, exists, stream;
	memset(o, 0, sizeof *o);
	if (!path || strcmp(path, "-") == 0) {
		if ((rc = lora_outfile_check(path, flags, e)))
			return rc;
		o->fp = stdout;
		o->is_stdout = 1;
		return 0;
	}
	if (!(o->target = lora_outfile_resolve(path, &sb, &exists)))
		return lora_err_set(e, errno == ENOMEM ? LORA_ENOMEM : LORA_EIO, "%s: %s", path, strerror(errno));
	if ((rc = check_target(path, o->target, &sb, exists, flags, &stream, e))) {
		release(o);
		return rc;
	}
	if (!(o->path = strdup(path)) || (!stream && !(o->tmp = lora_path_temp(o->target)))) {
		release(o);
		return lora_err_nomem(e);
	}
	if (stream)
		return open_stream(o, flags, e);
	o->noreplace = !(flags & LORA_OUT_FORCE);
	lora_outfile_sweep(o->target);
	sigset_t old;
	block(&old);
	int fd = mkstemp(o->tmp);
	if (fd >= 0)
		lora_outfile_track(o->tmp);
	unblock(&old);
	if (fd < 0) {
		int err = errno;
		free(o->tmp);
		o->tmp = NULL;
		release(o);
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

/* Put tmp at target; with noreplace only if the name is still free, so
 * that of two writers exactly one wins. */
static int publish(const char *tmp, const char *target, int noreplace)
{
	if (!noreplace)
		return rename(tmp, target);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return -1;
	/* a file system without RENAME_NOREPLACE: link(2) never replaces */
	if (link(tmp, target) != 0)
		return -1;
	unlink(tmp);
	return 0;
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
	/* fsync means nothing to a device or FIFO (and fails there) */
	if (fflush(o->fp) != 0 || ferror(o->fp) || (o->tmp && fsync(fileno(o->fp)) != 0)) {
		int err = errno;
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", o->path, strerror(err));
	}
	if (fclose(o->fp) != 0 && rc == 0)
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", o->path, strerror(errno));
	o->fp = NULL;
	if (rc == 0 && o->tmp && publish(o->tmp, o->target, o->noreplace) != 0)
		rc = errno == EEXIST
		         ? lora_err_set(e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", o->path)
		         : lora_err_set(e, LORA_EIO, "%s: cannot rename into place: %s", o->path, strerror(errno));
	if (rc && o->tmp)
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
	/* only a file of our own: a pipe would take O_DIRECT as packet mode, and
	 * neither it nor a device has offsets for pwrite */
	int fd = o->is_stdout || !o->tmp ? -1 : fileno(o->fp), flags = fd < 0 ? -1 : fcntl(fd, F_GETFL);
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

int lora_outfile_put_data(lora_outfile_direct *d, lora_outfile *o, const void *p, size_t n, const char *name,
                          lora_err *e)
{
	if (!lora_outfile_put(d, o, p, n))
		return 0;
	/* Through the cache, large writes go from the caller's buffer straight
	 * to write(2), which fails with EFAULT, where a load would raise
	 * SIGBUS, when the buffer is a mapped input that has shrunk since it
	 * was mapped. */
	if (errno == EFAULT)
		return lora_err_set(e, LORA_EIO, "an input file changed or shrank while being read");
	return lora_err_set(e, LORA_EIO, "%s: write error: %s", name, strerror(errno));
}

int lora_outfile_finish(lora_outfile_direct *d, lora_outfile *o, lora_err *e)
{
	if (lora_outfile_direct_flush(d)) {
		int rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", o->path ? o->path : "standard output",
		                      strerror(errno));
		lora_outfile_abort(o);
		return rc;
	}
	return lora_outfile_commit(o, e);
}

void lora_outfile_direct_free(lora_outfile_direct *d)
{
	free(d->buf);
	d->buf = NULL;
}
