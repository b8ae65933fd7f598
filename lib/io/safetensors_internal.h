/* safetensors: test hooks. */
#ifndef LORA_SAFETENSORS_INTERNAL_H
#define LORA_SAFETENSORS_INTERNAL_H

#include <stdint.h>

#include "io/safetensors.h"

/* Files of at least this many bytes (64 MiB unless changed) are written
 * around the page cache where the file system allows it; a test sets 0 to
 * take that path with small files. */
void lora_st_writer_direct_min(uint64_t bytes);

#endif
