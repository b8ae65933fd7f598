/* path: the small file-name helpers every reader and writer needs. */
#ifndef LORA_PATH_H
#define LORA_PATH_H

#include <sys/stat.h>

#include "core/err.h"

/* dir + "/" + name, without doubling a trailing slash of dir; an empty dir
 * gives name. Caller frees; NULL when memory runs out. */
char *lora_path_join(const char *dir, const char *name);
/* Directory part of path ("." when there is none, "/" for "/x"). Caller
 * frees; NULL when memory runs out. */
char *lora_path_dir(const char *path);
/* The part after the last '/' (a pointer into path). */
const char *lora_path_base(const char *path);
/* "DIR/.BASE.lora-tmp.PID.XXXXXX" for path "DIR/BASE": a template for
 * mkstemp or mkdtemp in the same directory, so that rename(2) into path is
 * atomic; dot-prefixed, so that globs do not see it while it is written;
 * carrying the writer's pid, so that a later run can tell a leftover of a
 * killed writer (lora_outfile_sweep) from the work of a live one. Caller
 * frees; NULL when memory runs out. */
#define LORA_PATH_TEMP_TAG ".lora-tmp."
char *lora_path_temp(const char *path);
/* 1 if s ends with suf. */
int lora_path_has_suffix(const char *s, const char *suf);
/* 1 if p names a regular file (following links). */
int lora_path_is_file(const char *p);
/* 1 if p names anything at all (following links): a FIFO or a device
 * where a file was expected is then refused by name when opened, rather
 * than reported as missing. */
int lora_path_exists(const char *p);

/* Open p for reading, only if it is a regular file, and never block doing
 * so: a FIFO with no writer, or a device, would hang open(2) or read(2)
 * forever. Returns a blocking close-on-exec descriptor (its stat in *sb if
 * sb is not NULL), or a negative LORA_E* code with e reading
 * "P: not a regular file (a FIFO)" (or "P: Is a directory", or the
 * system's reason). */
int lora_path_open_file(const char *p, struct stat *sb, lora_err *e);
/* The same check without keeping the file open: 0 when p is a regular
 * file, else the error above. */
int lora_path_check_file(const char *p, lora_err *e);

#endif
