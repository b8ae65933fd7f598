#include "io/load.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/lorafile.h"
#include "io/peft.h"

int lora_load_adapter(lora_adapter **out, const char *path, lora_err *e)
{
	struct stat sb;
	*out = NULL;
	if (strcmp(path, "-") == 0)
		return lora_lorafile_read(out, "-", LORA_READ_ALL, e);
	if (stat(path, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode))
		return lora_peft_read(out, path, e);
	/* A file is a .lora by its magic, whatever its name; otherwise a
	 * .safetensors file is taken as PEFT weights with their config beside
	 * them (the reader says so if the config is missing). */
	if (S_ISREG(sb.st_mode)) {
		unsigned char magic[8];
		size_t got = 0;
		FILE *f = fopen(path, "rb");
		if (!f)
			return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
		got = fread(magic, 1, sizeof magic, f);
		fclose(f);
		size_t n = strlen(path);
		if (!lora_lorafile_is_lora(magic, got) && n > 12 && strcmp(path + n - 12, ".safetensors") == 0)
			return lora_peft_read(out, path, e);
	}
	return lora_lorafile_read(out, path, LORA_READ_ALL, e);
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
			return *path ? 0 : lora_err_nomem(e);
		}
	}
	*path = strdup(spec);
	return *path ? 0 : lora_err_nomem(e);
}
