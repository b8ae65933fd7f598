#include "core/path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

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
