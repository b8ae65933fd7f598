/* What every fuzz harness shares: the libFuzzer entry point, a private
 * scratch directory for readers that take a path, the multi-file input
 * format, and the checks every reader's answer must pass.
 *
 * A harness is built two ways: by `make fuzz` with clang and libFuzzer
 * (ASan+UBSan, coverage-guided), and by `make` with the project's compiler
 * and tests/fuzz/driver.c, which replays files through the same entry point
 * (tests/fuzz.bats runs every corpus and regression input that way).
 *
 * Multi-file inputs (a model directory, a PEFT adapter directory) are one
 * byte string holding the files one after the other, each introduced by a
 * line "@@FILE NAME"; a file's bytes end where "\n@@FILE " starts the next
 * (the newline belongs to the separator) or at the end of the input:
 *
 *     @@FILE config.json
 *     {...}
 *     @@FILE model.safetensors
 *     <bytes>
 *
 * Names are [A-Za-z0-9._-], 1 to 64 characters, not starting with a dot;
 * an entry with any other name is skipped. */
#ifndef LORA_FUZZ_H
#define LORA_FUZZ_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated property is a crash, so that libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                                         \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

static char fuzz_root[4096] __attribute__((unused));

static inline void fuzz_clear(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[4352];
	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
			continue;
		if (unlink(p) != 0) {
			fuzz_clear(p);
			rmdir(p);
		}
	}
	if (d)
		closedir(d);
}

static inline void fuzz_cleanup(void)
{
	if (fuzz_root[0]) {
		fuzz_clear(fuzz_root);
		rmdir(fuzz_root);
	}
}

/* The scratch directory of this process, emptied: "<TMPDIR>/lora-fuzz.XXXXXX",
 * removed at exit. */
static inline const char *fuzz_dir(void)
{
	if (!fuzz_root[0]) {
		const char *t = getenv("TMPDIR");
		snprintf(fuzz_root, sizeof fuzz_root, "%s/lora-fuzz.XXXXXX", t && *t ? t : "/tmp");
		if (!mkdtemp(fuzz_root)) {
			perror(fuzz_root);
			abort();
		}
		atexit(fuzz_cleanup);
	} else {
		fuzz_clear(fuzz_root);
	}
	return fuzz_root;
}

/* Write n bytes to dir/name; the path in a static buffer. */
static inline const char *fuzz_put(const char *dir, const char *name, const void *data, size_t n)
{
	static char path[4352];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
		perror(path);
		abort();
	}
	return path;
}

/* A fresh scratch directory holding only the input as file name. */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
	return fuzz_put(fuzz_dir(), name, data, size);
}

static inline int fuzz_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 64 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* Unpack a multi-file input into dir (which must exist). Returns the
 * number of files written. */
static inline int fuzz_unpack(const char *dir, const uint8_t *data, size_t size)
{
	static const char tag[] = "@@FILE ";
	const size_t tl = sizeof tag - 1;
	const char *s = (const char *)data, *end = s + size;
	int n = 0;
	if (size < tl || memcmp(s, tag, tl) != 0)
		return 0;
	const char *p = s;
	while (p) {
		const char *name = p + tl;
		const char *nl = memchr(name, '\n', (size_t)(end - name));
		if (!nl)
			break;
		const char *body = nl + 1, *next = NULL;
		for (const char *q = body; q + 1 + tl <= end; q++)
			if (q[0] == '\n' && memcmp(q + 1, tag, tl) == 0) {
				next = q;
				break;
			}
		const char *stop = next ? next : end;
		char fn[65];
		size_t len = (size_t)(nl - name);
		if (fuzz_name_ok(name, len)) {
			memcpy(fn, name, len);
			fn[len] = 0;
			fuzz_put(dir, fn, body, (size_t)(stop - body));
			n++;
		}
		p = next ? next + 1 : NULL;
	}
	return n;
}

/* A reader that fails must say why in one line, with a LORA_E* code.
 * LORA_FUZZ_VERBOSE=1 in the environment prints the line. */
static inline void fuzz_check_error(int rc, const lora_err *e)
{
	if (getenv("LORA_FUZZ_VERBOSE"))
		fprintf(stderr, "rejected: %s\n", e->msg);
	FUZZ_CHECK(rc == LORA_EIO || rc == LORA_EFORMAT || rc == LORA_ENOMEM || rc == LORA_EINVAL ||
	           rc == LORA_EUSAGE);
	FUZZ_CHECK(e->msg[0] != 0);
	FUZZ_CHECK(strchr(e->msg, '\n') == NULL);
}

#endif
