#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Messages quote names and values from hostile files: a newline or a
 * terminal escape in one would break the one-line rule (or the terminal),
 * so control characters are written as \xHH. */
static void one_line(char *msg, size_t cap)
{
	char out[sizeof ((lora_err *)0)->msg];
	size_t k = 0;
	if (cap > sizeof out)
		cap = sizeof out;
	for (const unsigned char *p = (const unsigned char *)msg; *p && k + 1 < cap; p++) {
		if (*p >= 0x20 && *p != 0x7f) {
			out[k++] = (char)*p;
		} else if (k + 5 < cap) {
			snprintf(out + k, 5, "\\x%02x", *p);
			k += 4;
		} else {
			break;
		}
	}
	out[k] = 0;
	memcpy(msg, out, k + 1);
}

int lora_err_set(lora_err *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof e->msg, fmt, ap);
		va_end(ap);
		one_line(e->msg, sizeof e->msg);
		e->code = code;
	}
	return code;
}

int lora_err_prefix(lora_err *e, const char *fmt, ...)
{
	if (!e)
		return LORA_EINVAL;
	char head[512], old[sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(head, sizeof head, fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof old);
	/* Truncation is acceptable: the message is for humans and stays one line. */
	size_t n = strlen(head);
	if (n > sizeof e->msg - 3)
		n = sizeof e->msg - 3;
	memcpy(e->msg, head, n);
	memcpy(e->msg + n, ": ", 2);
	memcpy(e->msg + n + 2, old, sizeof e->msg - n - 3);
	e->msg[sizeof e->msg - 1] = 0;
	one_line(e->msg, sizeof e->msg);
	return e->code;
}

int lora_err_nomem(lora_err *e) { return lora_err_set(e, LORA_ENOMEM, "out of memory"); }
