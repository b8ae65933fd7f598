#include "io/load.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/path.h"
#include "io/gguflora.h"
#include "io/lorafile.h"
#include "io/peft.h"

int lora_load_kind_of(const char *path, lora_load_kind *kind, lora_err *e)
{
	struct stat sb;
	*kind = LORA_LOAD_LORA;
	if (strcmp(path, "-") == 0)
		return 0;
	if (stat(path, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode)) {
		*kind = lora_peft_detect(path) ? LORA_LOAD_PEFT : LORA_LOAD_CKPT;
		return 0;
	}
	/* A pipe or a device is read once, front to back: sniffing it would
	 * eat the bytes the reader needs. Only .lora streams: a name that
	 * says otherwise is refused rather than waited on. */
	if (!S_ISREG(sb.st_mode))
		return lora_path_has_suffix(path, ".safetensors") || lora_path_has_suffix(path, ".gguf") ||
		               lora_path_has_suffix(path, ".json")
		           ? lora_path_check_file(path, e)
		           : 0;
	unsigned char magic[8];
	int fd = lora_path_open_file(path, NULL, e);
	if (fd < 0)
		return fd;
	ssize_t got = read(fd, magic, sizeof magic);
	close(fd);
	if (got < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (lora_lorafile_is_lora(magic, (size_t)got) || lora_path_has_suffix(path, ".lora"))
		*kind = LORA_LOAD_LORA;
	else if (lora_gguflora_is_gguf(magic, (size_t)got) || lora_path_has_suffix(path, ".gguf"))
		*kind = LORA_LOAD_GGUF;
	else if (lora_path_has_suffix(path, ".safetensors") && lora_peft_detect(path))
		*kind = LORA_LOAD_PEFT;
	else
		*kind = LORA_LOAD_CKPT;
	return 0;
}

int lora_load_adapter(lora_adapter **out, const char *path, lora_err *e)
{
	lora_load_kind k;
	struct stat sb;
	int rc;
	*out = NULL;
	if ((rc = lora_load_kind_of(path, &k, e)))
		return rc;
	if (k == LORA_LOAD_CKPT)
		k = (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) || lora_path_has_suffix(path, ".safetensors") ? LORA_LOAD_PEFT
		                                                                                      : LORA_LOAD_LORA;
	if (k == LORA_LOAD_PEFT)
		return lora_peft_read(out, path, e);
	if (k == LORA_LOAD_GGUF)
		return lora_gguflora_read(out, path, NULL, 0, e);
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
