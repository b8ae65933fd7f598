#include "core/path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <unistd.h>

char *lora_path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	size_t len = n + strlen(name) + 2;
	char *s = malloc(len);
	if (s)
		snprintf(s, len, "%.*s%s%s", (int)n, dir, n && dir[n - 1] != '/' ? "/" : "", name);
	return s;
}

char *lora_path_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

const char *lora_path_base(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

char *lora_path_temp(const char *path)
{
	const char *base = lora_path_base(path);
	size_t n = strlen(path) + 48;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%.*s.%s" LORA_PATH_TEMP_TAG "%ld.XXXXXX", (int)(base - path), path, base, (long)getpid());
	return s;
}

int lora_path_has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

int lora_path_is_file(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

int lora_path_exists(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0;
}

static const char *kind(mode_t m)
{
	return S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
	     : S_ISSOCK(m) ? "a socket" : "not a file";
}

static int refuse(const char *p, mode_t m, lora_err *e)
{
	if (S_ISDIR(m))
		return lora_err_set(e, LORA_EIO, "%s: %s", p, strerror(EISDIR));
	return lora_err_set(e, LORA_EIO, "%s: not a regular file (%s)", p, kind(m));
}

int lora_path_open_file(const char *p, struct stat *sb, lora_err *e)
{
	struct stat st;
	int fd, fl;
	/* stat first, so that a device is never opened at all; O_NONBLOCK
	 * covers a FIFO swapped in between, and fstat decides. */
	if (stat(p, &st) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", p, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return refuse(p, st.st_mode, e);
	if ((fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", p, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		int rc = S_ISREG(st.st_mode) ? lora_err_set(e, LORA_EIO, "%s: %s", p, strerror(errno))
		                             : refuse(p, st.st_mode, e);
		close(fd);
		return rc;
	}
	if (sb)
		*sb = st;
	return fd;
}

int lora_path_check_file(const char *p, lora_err *e)
{
	int fd = lora_path_open_file(p, NULL, e);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}
