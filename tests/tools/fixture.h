/* fixture: what the fixture generators share: files in their output
 * directory (written atomically), the directory itself, and the adapter
 * options of mkadapter and mkplanted. Header-only, since each tool is a
 * program of its own. */
#ifndef LORA_FIXTURE_H
#define LORA_FIXTURE_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/adapter.h"
#include "core/outfile.h"
#include "core/path.h"

/* Write len bytes of text to dir/file atomically. */
static inline int fx_write_text(const char *dir, const char *file, const char *text, size_t len, lora_err *e)
{
	char *path = lora_path_join(dir, file);
	lora_outfile o;
	int rc;
	if (!path)
		return lora_err_nomem(e);
	if (!(rc = lora_outfile_open(&o, path, LORA_OUT_FORCE, e))) {
		fwrite(text, 1, len, o.fp);
		rc = lora_outfile_commit(&o, e);
	}
	free(path);
	return rc;
}

/* Make the output directory (or accept an existing one); 0, or report and
 * return the exit status. */
static inline int fx_outdir(const lora_tool *t, const char *dir)
{
	struct stat sb;
	if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
		lora_cli_error(t, "%s: %s", dir, strerror(errno));
		return LORA_EXIT_FAIL;
	}
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		lora_cli_error(t, "%s: not a directory", dir);
		return LORA_EXIT_FAIL;
	}
	return 0;
}

/* The adapter options of mkadapter and mkplanted (--dtype T, --alpha A,
 * --rslora): 1 if argv[*i] was one (*i moves past its value), 0 if not,
 * -1 for a bad dtype. */
static inline int fx_adapter_option(lora_adapter *a, double *alpha, int argc, char **argv, int *i)
{
	if (strcmp(argv[*i], "--dtype") == 0 && *i + 1 < argc)
		return lora_dtype_parse(argv[++*i], &a->dtype) ? -1 : 1;
	if (strcmp(argv[*i], "--alpha") == 0 && *i + 1 < argc) {
		*alpha = atof(argv[++*i]);
		return 1;
	}
	if (strcmp(argv[*i], "--rslora") == 0) {
		a->rslora = 1;
		return 1;
	}
	return 0;
}

#endif
