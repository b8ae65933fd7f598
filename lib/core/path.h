/* path: the small file-name helpers every reader and writer needs. */
#ifndef LORA_PATH_H
#define LORA_PATH_H

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

#endif
