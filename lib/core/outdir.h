/* outdir: atomic directory output (merged checkpoints, PEFT adapters,
 * training checkpoints). The directory is assembled beside its final path
 * under a hidden temporary name, its files registered for removal on a
 * signal (lora_outfile_cleanup), and put in place whole: a failure or a
 * kill never leaves a half-written directory at the final path. */
#ifndef LORA_OUTDIR_H
#define LORA_OUTDIR_H

#include <stddef.h>

#include "core/err.h"

typedef struct {
	char *path;   /* final path */
	char *tmp;    /* temporary directory beside it */
	char **files; /* paths registered inside tmp */
	size_t nfiles;
} lora_outdir;

/* Begin writing the directory path. Without force an existing path is an
 * error ("already exists (use -f to overwrite)"). With force an existing
 * path must be a directory (not a link to one) that holds only regular
 * files, and, when only is not NULL (a NULL-terminated list), only files of
 * those names: it is replaced whole at commit. Returns 0 or LORA_E*. */
int lora_outdir_open(lora_outdir *d, const char *path, int force, const char *const *only, lora_err *e);
/* Path of name inside the temporary directory, registered for removal on
 * failure; owned by d. NULL when memory runs out. */
const char *lora_outdir_file(lora_outdir *d, const char *name);
/* fsync the directory and put it in place: swapped with the old one in one
 * step (renameat2 RENAME_EXCHANGE) where the file system can, else the old
 * one is moved aside first and restored if the rename fails. Then the old
 * directory is removed and the parent fsync'd. Always releases d; on error
 * everything made is removed. */
int lora_outdir_commit(lora_outdir *d, lora_err *e);
/* Remove the temporary directory and what was registered in it, and name
 * the final path instead of the temporary one in e's message (e may be
 * NULL). Safe on a released d. */
void lora_outdir_abort(lora_outdir *d, lora_err *e);

#endif
