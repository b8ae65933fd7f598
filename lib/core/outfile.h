/* outfile: atomic output. Data goes to a temporary file in the destination
 * directory, renamed into place only when complete, so a failure never
 * leaves a half-written file. "-" means standard output (written directly).
 *
 * What an output path may be (lora(7), OUTPUTS):
 *   - nothing yet: created; without LORA_OUT_FORCE it is published with
 *     renameat2(RENAME_NOREPLACE) (link(2) where the file system lacks it),
 *     so of two writers racing for one name exactly one wins;
 *   - a regular file: replaced whole, with LORA_OUT_FORCE only;
 *   - a character device or a FIFO: written directly (no temporary, no
 *     LORA_OUT_FORCE needed), its write errors reported;
 *   - a symbolic link: followed; what it points to is the output, and its
 *     temporary sits beside that, so the link itself is never replaced;
 *   - anything else (a directory, a block device, a socket): refused.
 * No output may be an input registered with lora_outfile_input, nor lie
 * inside one (a directory).
 *
 * Temporary files are registered so that lora_outfile_cleanup (called from
 * the cli signal handler and at exit) can remove them; their names carry
 * the writer's pid (lora_path_temp) so that the next writer of the same
 * output removes those a killed one left (lora_outfile_sweep). */
#ifndef LORA_OUTFILE_H
#define LORA_OUTFILE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/err.h"

typedef struct {
	FILE *fp;
	char *path;    /* the path as given, for messages; NULL for stdout */
	char *target;  /* where it lands once symbolic links are followed */
	char *tmp;     /* temporary path; NULL for stdout, a device or a FIFO */
	int is_stdout;
	int noreplace; /* publish only if the target is still free */
} lora_outfile;

enum {
	LORA_OUT_FORCE = 1,  /* replace an existing file */
	LORA_OUT_BINARY = 2, /* refuse to write to a terminal */
};

/* Open path ("-" or NULL for stdout) for writing, as described above. With
 * LORA_OUT_BINARY, a terminal is an error. Returns 0 or LORA_E*. */
int lora_outfile_open(lora_outfile *o, const char *path, int flags, lora_err *e);
/* What lora_outfile_open would refuse, checked without creating anything:
 * for a tool to say so before long work rather than after. 0 or LORA_E*. */
int lora_outfile_check(const char *path, int flags, lora_err *e);
/* Flush, check for write errors (full disk), fsync and rename into place
 * (without LORA_OUT_FORCE: only if nothing took the name meanwhile, else
 * "already exists"). Always releases o. */
int lora_outfile_commit(lora_outfile *o, lora_err *e);
/* Discard: close and remove the temporary file. Safe on a released o. */
void lora_outfile_abort(lora_outfile *o);
/* Remove every registered temporary file; async-signal-safe. */
void lora_outfile_cleanup(void);
/* Register a path for removal by lora_outfile_cleanup (a file, or an empty
 * directory once the files registered after it are gone: cleanup removes in
 * reverse order). The string must live until lora_outfile_untrack. */
void lora_outfile_track(char *path);
void lora_outfile_untrack(const char *path);
/* fsync a directory, so that the names made in it last as its files do:
 * before a directory filled in place is renamed, and after a rename into
 * it. 0 or -1 (errno set). */
int lora_outfile_sync_dir(const char *dir);
/* mkdtemp(tmpl) and track the directory, with no window for a signal to
 * leave it behind; mode as mkdir(2) would give. 0 or -1 (errno set). */
int lora_outfile_mkdtemp(char *tmpl);

/* Large files around the page cache. Copying a checkpoint's worth of bytes
 * into the cache costs a core about as much as all the rest of a merge,
 * for pages nobody reads again soon; so a file of 64 MiB or more is
 * written with O_DIRECT where the file system allows it. Direct writes
 * want aligned offsets, lengths and memory: the bytes are gathered in an
 * aligned buffer and written a buffer at a time, the tail (or everything,
 * once the file system refuses an alignment) through the cache. */
typedef struct {
	int fd;              /* written with pwrite on fd; -1: through the stream */
	unsigned char *buf;  /* filled to len, for file offset pos */
	size_t len;
	uint64_t pos;
} lora_outfile_direct;

/* Before the first byte of o (a file, not stdout) is written: write its
 * bytes (the file's size) directly if there are enough of them and the
 * file system takes it, else through o's stream. */
void lora_outfile_direct_start(lora_outfile_direct *d, lora_outfile *o, uint64_t bytes);
/* Append n bytes: 0, or -1 with errno set. */
int lora_outfile_put(lora_outfile_direct *d, lora_outfile *o, const void *p, size_t n);
/* lora_outfile_put of a tensor's bytes: 0, or an error on e naming the
 * file (name), or saying that the input the bytes come from shrank. */
int lora_outfile_put_data(lora_outfile_direct *d, lora_outfile *o, const void *p, size_t n, const char *name,
                          lora_err *e);
/* Write what is gathered, before lora_outfile_commit: 0, or -1 with errno. */
int lora_outfile_direct_flush(lora_outfile_direct *d);
/* The end of a file written through d: flushed and committed, or on a
 * failure aborted with the error on e. */
int lora_outfile_finish(lora_outfile_direct *d, lora_outfile *o, lora_err *e);
void lora_outfile_direct_free(lora_outfile_direct *d);

/* Register an input (a file or a directory, followed if a link): from now
 * on no output of this process may be it, contain it or lie inside it.
 * "-" and paths that do not exist are ignored (they fail where they are
 * read). 0, or LORA_ENOMEM. */
int lora_outfile_input(const char *path);
/* Forget every registered input (for tests). */
void lora_outfile_inputs_clear(void);
/* Check an output against the registered inputs: shown names it in the
 * message, target is where it lands (lora_outfile_resolve); replace says
 * that an existing directory at target is to be replaced whole, so it must
 * not hold an input either. 0 or LORA_EUSAGE naming both paths. */
int lora_outfile_guard(const char *shown, const char *target, int replace, lora_err *e);
/* Follow the symbolic links of path's last component (at most 40): the
 * name a write lands on, and lstat of it in sb with *exists 1, or *exists 0
 * when nothing is there. Caller frees; NULL with errno set. */
char *lora_outfile_resolve(const char *path, struct stat *sb, int *exists);
/* Remove the temporaries (lora_path_temp) of target that writers which
 * are gone left beside it: a process killed while writing it. */
void lora_outfile_sweep(const char *target);
/* Remove path: a file, or a directory with what it holds (links are
 * removed, never followed). */
void lora_outfile_remove_tree(const char *path);

#endif
