#include "core/outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/outfile.h"
#include "core/path.h"

/* An existing output may be replaced only when nothing in it would be lost
 * unnoticed: regular files, and only the expected ones when the caller
 * says which; without such a list, directories of the same (what a merge
 * copies from a model directory). shown names the output in messages. */
static int check_replaceable(const char *shown, const char *dir, const char *const *only, lora_err *e)
{
	struct stat sb;
	DIR *d = opendir(dir);
	if (!d)
		return lora_err_set(e, LORA_EIO, "%s: %s", shown, strerror(errno));
	struct dirent *de;
	int rc = 0;
	while (!rc && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int known = !only;
		for (size_t i = 0; only && only[i]; i++)
			known |= strcmp(de->d_name, only[i]) == 0;
		if (!known) {
			rc = lora_err_set(e, LORA_EINVAL, "%s: holds '%s', which would be lost; not replacing it",
			                  shown, de->d_name);
		} else if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
		           !(S_ISREG(sb.st_mode) || (!only && S_ISDIR(sb.st_mode)))) {
			rc = lora_err_set(e, LORA_EINVAL, "%s: holds '%s', which is not a regular file and would be lost; not replacing it",
			                  shown, de->d_name);
		} else if (S_ISDIR(sb.st_mode)) {
			char *sub = lora_path_join(dir, de->d_name), *name = lora_path_join(shown, de->d_name);
			rc = sub && name ? check_replaceable(name, sub, NULL, e) : lora_err_nomem(e);
			free(sub);
			free(name);
		}
	}
	closedir(d);
	return rc;
}

static void release(lora_outdir *d, int remove)
{
	for (size_t i = d->nfiles; i-- > 0;) {
		if (remove && unlink(d->files[i]) != 0)
			rmdir(d->files[i]);
		lora_outfile_untrack(d->files[i]);
		free(d->files[i]);
	}
	if (d->tmp) {
		if (remove)
			lora_outfile_remove_tree(d->tmp);
		lora_outfile_untrack(d->tmp);
	}
	free(d->files);
	free(d->tmp);
	free(d->path);
	free(d->shown);
	memset(d, 0, sizeof *d);
}

int lora_outdir_open(lora_outdir *d, const char *path, int force, const char *const *only, lora_err *e)
{
	struct stat sb;
	int exists, rc = 0;
	memset(d, 0, sizeof *d);
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	if (!(d->shown = strndup(path, n)))
		return lora_err_nomem(e);
	/* a link is followed: the directory it names is the output */
	if (!(d->path = lora_outfile_resolve(d->shown, &sb, &exists)))
		rc = lora_err_set(e, LORA_EIO, "%s: %s", d->shown, strerror(errno));
	else if (!force && (exists || strcmp(d->path, d->shown) != 0))
		rc = lora_err_set(e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", d->shown);
	else if (exists && !S_ISDIR(sb.st_mode))
		rc = lora_err_set(e, LORA_EINVAL, "%s: exists and is not a directory", d->shown);
	else if (!(rc = lora_outfile_guard(d->shown, d->path, exists, e)) && exists)
		rc = check_replaceable(d->shown, d->path, only, e);
	if (rc) {
		release(d, 0);
		return rc;
	}
	d->replace = force;
	if (!(d->tmp = lora_path_temp(d->path))) {
		release(d, 0);
		return lora_err_nomem(e);
	}
	lora_outfile_sweep(d->path);
	if (lora_outfile_mkdtemp(d->tmp) != 0) {
		rc = lora_err_set(e, LORA_EIO, "%s: cannot create: %s", d->shown, strerror(errno));
		free(d->tmp);
		d->tmp = NULL;
		release(d, 0);
		return rc;
	}
	return 0;
}

const char *lora_outdir_file(lora_outdir *d, const char *name)
{
	char **v = realloc(d->files, (d->nfiles + 1) * sizeof *v);
	if (!v)
		return NULL;
	d->files = v;
	char *p = lora_path_join(d->tmp, name);
	if (!p)
		return NULL;
	/* Registered before it exists: a signal at any point finds every name,
	 * and cleanup runs in reverse, so files go before the directory. */
	d->files[d->nfiles++] = p;
	lora_outfile_track(p);
	return p;
}

int lora_outdir_mkdir(lora_outdir *d, const char *name, lora_err *e)
{
	const char *p = lora_outdir_file(d, name);
	if (!p)
		return lora_err_nomem(e);
	if (mkdir(p, 0777) != 0)
		return lora_err_set(e, LORA_EIO, "%s/%s: cannot create: %s", d->shown, name, strerror(errno));
	return 0;
}

/* Name the output, not its temporary directory, in e's message. */
static void retarget(lora_err *e, const char *tmp, const char *out)
{
	size_t n = strlen(tmp);
	if (!e || strncmp(e->msg, tmp, n) != 0)
		return;
	char rest[sizeof e->msg];
	snprintf(rest, sizeof rest, "%s", e->msg + n);
	snprintf(e->msg, sizeof e->msg, "%s%s", out, rest);
}

/* Without -f: the temporary directory takes the name only if it is still
 * free, so that of two writers exactly one wins. Where the file system
 * lacks RENAME_NOREPLACE, rename(2) still fails over a directory that is
 * not empty, and the name is checked just before. */
static int publish(const char *tmp, const char *path)
{
	struct stat sb;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return -1;
	if (lstat(path, &sb) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(tmp, path);
}

int lora_outdir_commit(lora_outdir *d, lora_err *e)
{
	struct stat sb;
	int rc = 0;
	char *old = NULL, *parent = lora_path_dir(d->path);
	if (lora_outfile_sync_dir(d->tmp) != 0) {
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", d->shown, strerror(errno));
	} else if (!d->replace || lstat(d->path, &sb) != 0) {
		if ((d->replace ? rename(d->tmp, d->path) : publish(d->tmp, d->path)) != 0)
			rc = errno == EEXIST || errno == ENOTEMPTY
			         ? lora_err_set(e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", d->shown)
			         : lora_err_set(e, LORA_EIO, "%s: cannot rename into place: %s", d->shown, strerror(errno));
	} else if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->path, RENAME_EXCHANGE) == 0) {
		old = strdup(d->tmp); /* the replaced directory now sits at the temporary name */
		if (!old)
			lora_outfile_remove_tree(d->tmp);
	} else if (!(old = malloc(strlen(d->tmp) + 5))) {
		rc = lora_err_nomem(e);
	} else {
		sprintf(old, "%s.old", d->tmp);
		if (rename(d->path, old) != 0) {
			rc = lora_err_set(e, LORA_EIO, "%s: cannot replace: %s", d->shown, strerror(errno));
		} else if (rename(d->tmp, d->path) != 0) {
			rc = lora_err_set(e, LORA_EIO, "%s: cannot rename into place: %s", d->shown, strerror(errno));
			rename(old, d->path);
		}
	}
	if (rc) {
		free(old);
		free(parent);
		lora_outdir_abort(d, NULL);
		return rc;
	}
	release(d, 0);
	if (old)
		lora_outfile_remove_tree(old);
	/* The output is in place; a failure to make its name durable now
	 * cannot be undone, so it is not reported as a failed write. */
	if (parent)
		lora_outfile_sync_dir(parent);
	free(old);
	free(parent);
	return 0;
}

void lora_outdir_abort(lora_outdir *d, lora_err *e)
{
	if (d->tmp)
		retarget(e, d->tmp, d->shown);
	release(d, 1);
}
