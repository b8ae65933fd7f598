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
	char *shown;  /* the path as given, for messages */
	char *path;   /* final path: shown with its symbolic links followed */
	char *tmp;    /* temporary directory beside it */
	int replace;  /* -f: an existing directory is replaced */
	char **files; /* paths registered inside tmp */
	size_t nfiles;
} lora_outdir;

/* Begin writing the directory path. A symbolic link is followed: the
 * directory it names (or would name) is the output, and the link stays.
 * Without force an existing path is an error ("already exists (use -f to
 * overwrite)"), at open and again at commit (RENAME_NOREPLACE), so of two
 * writers exactly one wins. With force an existing path must be a
 * directory that holds only regular files and directories of the same,
 * or, when only is not NULL (a NULL-terminated list), only regular files
 * of those names: it is replaced whole at commit. The output may not be,
 * hold or lie inside an input (lora_outfile_guard). Temporaries a killed
 * writer left beside it are removed. Returns 0 or LORA_E*. */
int lora_outdir_open(lora_outdir *d, const char *path, int force, const char *const *only, lora_err *e);
/* Path of name inside the temporary directory, registered for removal on
 * failure; owned by d. NULL when memory runs out. name may be "SUB/NAME"
 * below a directory made with lora_outdir_mkdir. */
const char *lora_outdir_file(lora_outdir *d, const char *name);
/* Make the subdirectory name (mode as mkdir(2) gives) inside the temporary
 * directory, registered like a file. 0 or LORA_E* naming it. */
int lora_outdir_mkdir(lora_outdir *d, const char *name, lora_err *e);
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
