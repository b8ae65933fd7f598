/* lorafile: the .lora codec (format described byte by byte in lora(5)).
 *
 * A .lora is written and read strictly front to back, so it can travel
 * through pipes: magic, version, a JSON header (with every layer's shape,
 * rank, alpha and compressed size) guarded by a CRC-32, then one zlib stream
 * per tensor (A then B per layer, in header order) of byte-shuffled
 * little-endian values, each guarded by a CRC-32 recorded in the header.
 *
 * Everything else the in-memory adapter holds travels too, as optional
 * header keys (absent when unused, so such files are unchanged): DoRA
 * magnitudes and lora_B biases (payloads after every A and B), extra
 * tensors of any dtype, raw (after those), the fan_in_fan_out flag and the
 * imported PEFT config text. */
#ifndef LORA_LORAFILE_H
#define LORA_LORAFILE_H

#include <stdint.h>
#include <stdio.h>

#include "core/adapter.h"
#include "core/err.h"

#define LORA_FILE_MAGIC "\x89LORA\r\n\x1a"
#define LORA_FILE_VERSION 1
#define LORA_FILE_MAX_HEADER (64u << 20)
/* The payloads of one file may decompress to this many bytes in all
 * (lora(5), "Limits"); the tools take another from this variable. */
#define LORA_FILE_MAX_PAYLOAD ((uint64_t)16 << 30)
#define LORA_FILE_MAX_PAYLOAD_ENV "LORA_MAX_PAYLOAD"

enum {
	LORA_READ_ALL = 0,    /* header and every tensor, verified */
	LORA_READ_HEADER = 1, /* header only; payloads are not read (A, B, magnitude,
	                         bias and extras' data NULL; has_* set) */
	LORA_READ_VERIFY = 2, /* read and verify payloads but keep none */
};

/* 1 if the first bytes of buf (n >= 8) are the .lora magic. */
int lora_lorafile_is_lora(const void *buf, size_t n);

/* The total of decompressed payload bytes a read of one file may reach
 * (default LORA_FILE_MAX_PAYLOAD, at least 1), for the whole process. A
 * reader that would pass it fails before inflating anything, naming the
 * layer (or extra) whose payload passes it. */
void lora_lorafile_set_max_payload(uint64_t bytes);
uint64_t lora_lorafile_max_payload(void);

/* Read an adapter from path ("-" for standard input). In LORA_READ_HEADER
 * mode a regular file's size is still checked against the header, so
 * truncation is caught without touching payloads (and the payload limit
 * does not apply). Caller frees *out. */
int lora_lorafile_read(lora_adapter **out, const char *path, int mode, lora_err *e);
/* Same from an open stream; name is used in messages. */
int lora_lorafile_readf(lora_adapter **out, FILE *f, const char *name, int mode, lora_err *e);

/* Write a (all layers must have A and B; extras their data) to f. Values
 * are converted to a->dtype; a non-finite value, or one that overflows
 * a->dtype, is an error naming the layer, tensor and element. *nbytes (may
 * be NULL) receives the bytes written. */
int lora_lorafile_write(const lora_adapter *a, FILE *f, const char *name, uint64_t *nbytes, lora_err *e);
/* Write atomically to path ("-" = stdout, refused on a terminal); an
 * existing file needs force. */
int lora_lorafile_save(const lora_adapter *a, const char *path, int force, lora_err *e);

#endif
