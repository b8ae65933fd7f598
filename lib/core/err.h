/* err: the error value every lib/ function fills instead of printing.
 *
 * lib/ never prints and never exits: a function returns 0 on success or a
 * negative LORA_E* code and writes one human-readable line into a caller-owned
 * lora_err, naming the file and the object (tensor, key) at fault. */
#ifndef LORA_ERR_H
#define LORA_ERR_H

#include <stddef.h>

enum {
	LORA_OK = 0,
	LORA_EIO = -1,     /* read/write/open failed (errno-level trouble) */
	LORA_EFORMAT = -2, /* input is malformed, truncated or corrupt */
	LORA_ENOMEM = -3,  /* allocation failed */
	LORA_EINVAL = -4,  /* request cannot be satisfied (bad shapes, no match) */
	LORA_EUSAGE = -5,  /* caller-facing usage problem (maps to exit 2) */
};

typedef struct {
	int code;
	char msg[1024];
} lora_err;

/* Fill e (may be NULL) with a printf-formatted message; return code. One
 * too long for msg keeps its start and its end (the cause) around "...".
 * Control characters in the result (a newline or an escape quoted from a
 * hostile file) are written as \xHH, so the message stays one line. */
int lora_err_set(lora_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "<prefix>: <old message>"; return e->code. */
int lora_err_prefix(lora_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* s as messages write it (control characters as \xHH, a middle cut if
 * it does not fit), into out of cap bytes (at most 1024 used); returns
 * out. For names from a file printed anywhere on a terminal. */
const char *lora_err_escape(char *out, size_t cap, const char *s);

/* Warnings: what lib/ leaves out on purpose that a user must hear about
 * (tensors PEFT would not load). lib/ hands one line, escaped and cut as
 * messages are, to the sink the program set (cmd/cli prints it as
 * "tool: warning: LINE" unless -q); without a sink it goes nowhere. The
 * sink is the process's: set it once, before any reading starts. */
void lora_err_warn_sink(void (*fn)(const char *line));
void lora_err_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "out of memory" with LORA_ENOMEM; returns LORA_ENOMEM. */
int lora_err_nomem(lora_err *e);

#endif
