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

/* A message longer than the buffer loses its middle, not its end: a long
 * path comes first and the cause last, and the cause must survive. */
static void fit(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src), head = cap / 4;
	if (n < cap) {
		memcpy(dst, src, n + 1);
		return;
	}
	size_t tail = cap - 1 - head - 3;
	memcpy(dst, src, head);
	memcpy(dst + head, "...", 3);
	memcpy(dst + head + 3, src + n - tail, tail + 1);
}

const char *lora_err_escape(char *out, size_t cap, const char *s)
{
	fit(out, cap, s);
	one_line(out, cap);
	return out;
}

int lora_err_set(lora_err *e, int code, const char *fmt, ...)
{
	if (e) {
		char big[8192];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(big, sizeof big, fmt, ap);
		va_end(ap);
		fit(e->msg, sizeof e->msg, big);
		one_line(e->msg, sizeof e->msg);
		e->code = code;
	}
	return code;
}

static void (*warn_sink)(const char *line);

void lora_err_warn_sink(void (*fn)(const char *line))
{
	warn_sink = fn;
}

void lora_err_warn(const char *fmt, ...)
{
	char big[8192];
	lora_err w;
	va_list ap;
	if (!warn_sink)
		return;
	va_start(ap, fmt);
	vsnprintf(big, sizeof big, fmt, ap);
	va_end(ap);
	lora_err_set(&w, 0, "%s", big);
	warn_sink(w.msg);
}

int lora_err_prefix(lora_err *e, const char *fmt, ...)
{
	if (!e)
		return LORA_EINVAL;
	char big[8192 + sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(big, 8192, fmt, ap);
	va_end(ap);
	n = n < 0 ? 0 : n > 8191 ? 8191 : n;
	snprintf(big + n, sizeof big - (size_t)n, ": %s", e->msg);
	fit(e->msg, sizeof e->msg, big);
	one_line(e->msg, sizeof e->msg);
	return e->code;
}

int lora_err_nomem(lora_err *e) { return lora_err_set(e, LORA_ENOMEM, "out of memory"); }
