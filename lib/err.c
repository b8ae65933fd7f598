#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lora_err_set(lora_err *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof e->msg, fmt, ap);
		va_end(ap);
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
	return e->code;
}
