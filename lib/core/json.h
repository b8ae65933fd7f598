/* json: strict reading of the small JSON texts the toolkit trusts nothing
 * of (safetensors headers, index.json, config.json, adapter_config.json,
 * .lora headers, training state): the one place their rules live.
 *
 * Strict means: valid UTF-8; no raw control characters and no "\u0000"
 * escape (cJSON would cut the string short there); one object and nothing
 * after it but whitespace. A key given twice in one object means what it
 * means to Python's json module, which PEFT and transformers read these
 * files with: the last one stands ({"lora_alpha": 16, "lora_alpha": 1600}
 * is 1600), where cJSON alone would keep the first. A failed allocation is
 * reported as "out of memory" (LORA_ENOMEM), never as invalid JSON. */
#ifndef LORA_JSON_H
#define LORA_JSON_H

#include <cJSON.h>
#include <stddef.h>
#include <stdio.h>

#include "core/err.h"

/* Files bigger than this are not plausible small JSON files. */
#define LORA_JSON_MAX_FILE (64u << 20)

/* Parse n bytes of s strictly into *out (caller frees with cJSON_Delete).
 * Messages read "<path>: <what> ..." (what: "header", "file"...). */
int lora_json_parse(cJSON **out, const char *path, const char *what, const char *s, size_t n,
                    lora_err *e);
/* Walk the members of the JSON object text s one at a time, in order:
 * each value is parsed on its own and handed to f as a cJSON item with its
 * key in ->string (freed after f returns; f returns 0 to go on, or an
 * error code that ends the walk). Memory is that of one member, not of the
 * whole tree: for headers of 100k tensors. The same checks as above, but
 * stricter on keys, as serde is for the files Rust reads (safetensors): a
 * key given twice inside a member is refused; keys of the top level are
 * the caller's to check. */
int lora_json_each(const char *path, const char *what, const char *s, size_t n,
                   int (*f)(void *ctx, cJSON *member, lora_err *e), void *ctx, lora_err *e);
/* Read a regular file of at most max bytes (0: LORA_JSON_MAX_FILE) and
 * parse it as above with what = "file". */
int lora_json_read_file(cJSON **out, const char *path, size_t max, lora_err *e);
/* Read a regular file of at most max bytes into a NUL-terminated buffer
 * (caller frees); *len gets the byte count. */
int lora_json_slurp(char **buf, size_t *len, const char *path, size_t max, lora_err *e);
/* An exact integer in [0, 2^53] (beyond it a double names no single
 * integer) into *v; -1 otherwise. */
int lora_json_size(const cJSON *j, size_t *v);
/* Write s as a JSON string literal (quotes and escapes). */
void lora_json_write_str(FILE *f, const char *s);

#endif
