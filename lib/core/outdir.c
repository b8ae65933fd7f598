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
 * says which. */
static int check_replaceable(const char *dir, const char *const *only, lora_err *e)
{
	struct stat sb;
	if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return lora_err_set(e, LORA_EINVAL, "%s: exists and is not a directory", dir);
	DIR *d = opendir(dir);
	if (!d)
		return lora_err_set(e, LORA_EIO, "%s: %s", dir, strerror(errno));
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
			                  dir, de->d_name);
		} else if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) {
			rc = lora_err_set(e, LORA_EINVAL, "%s: holds '%s', which is not a regular file and would be lost; not replacing it",
			                  dir, de->d_name);
		}
	}
	closedir(d);
	return rc;
}

/* Remove a directory of regular files. */
static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	if (d)
		closedir(d);
	rmdir(dir);
}

static void release(lora_outdir *d, int remove)
{
	for (size_t i = d->nfiles; i-- > 0;) {
		if (remove)
			unlink(d->files[i]);
		lora_outfile_untrack(d->files[i]);
		free(d->files[i]);
	}
	if (d->tmp) {
		if (remove)
			rmdir(d->tmp);
		lora_outfile_untrack(d->tmp);
	}
	free(d->files);
	free(d->tmp);
	free(d->path);
	memset(d, 0, sizeof *d);
}

int lora_outdir_open(lora_outdir *d, const char *path, int force, const char *const *only, lora_err *e)
{
	struct stat sb;
	memset(d, 0, sizeof *d);
	if (lstat(path, &sb) == 0) {
		if (!force)
			return lora_err_set(e, LORA_EINVAL, "%s: already exists (use -f to overwrite)", path);
		int rc = check_replaceable(path, only, e);
		if (rc)
			return rc;
	}
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	d->path = strndup(path, n);
	if (!d->path || !(d->tmp = lora_path_temp(d->path))) {
		release(d, 0);
		return lora_err_nomem(e);
	}
	if (lora_outfile_mkdtemp(d->tmp) != 0) {
		int rc = lora_err_set(e, LORA_EIO, "%s: cannot create: %s", d->path, strerror(errno));
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

int lora_outdir_commit(lora_outdir *d, lora_err *e)
{
	struct stat sb;
	int rc = 0;
	char *old = NULL, *parent = lora_path_dir(d->path);
	if (lora_outfile_sync_dir(d->tmp) != 0) {
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", d->path, strerror(errno));
	} else if (lstat(d->path, &sb) != 0) {
		if (rename(d->tmp, d->path) != 0)
			rc = lora_err_set(e, LORA_EIO, "%s: cannot rename into place: %s", d->path, strerror(errno));
	} else if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->path, RENAME_EXCHANGE) == 0) {
		old = strdup(d->tmp); /* the replaced directory now sits at the temporary name */
		if (!old)
			remove_dir(d->tmp);
	} else if (!(old = malloc(strlen(d->tmp) + 5))) {
		rc = lora_err_nomem(e);
	} else {
		sprintf(old, "%s.old", d->tmp);
		if (rename(d->path, old) != 0) {
			rc = lora_err_set(e, LORA_EIO, "%s: cannot replace: %s", d->path, strerror(errno));
		} else if (rename(d->tmp, d->path) != 0) {
			rc = lora_err_set(e, LORA_EIO, "%s: cannot rename into place: %s", d->path, strerror(errno));
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
		remove_dir(old);
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
		retarget(e, d->tmp, d->path);
	release(d, 1);
}
