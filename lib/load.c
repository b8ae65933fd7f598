#include "load.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lorafile.h"

int lora_load_adapter(lora_adapter **out, const char *path, lora_err *e)
{
	struct stat sb;
	*out = NULL;
	if (strcmp(path, "-") == 0)
		return lora_file_read(out, "-", LORA_READ_ALL, e);
	if (stat(path, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode))
		return lora_err_set(e, LORA_EINVAL, "%s: PEFT adapter directories are not supported yet", path);
	return lora_file_read(out, path, LORA_READ_ALL, e);
}

int lora_load_spec(const char *spec, char **path, double *scale, lora_err *e)
{
	const char *colon = strrchr(spec, ':');
	*scale = 1.0;
	if (colon && colon[1]) {
		char *end;
		double v = strtod(colon + 1, &end);
		if (*end == 0 && isfinite(v)) {
			*scale = v;
			*path = strndup(spec, (size_t)(colon - spec));
			return *path ? 0 : lora_err_set(e, LORA_ENOMEM, "out of memory");
		}
	}
	*path = strdup(spec);
	return *path ? 0 : lora_err_set(e, LORA_ENOMEM, "out of memory");
}
