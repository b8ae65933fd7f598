/* outfile: test hooks. */
#ifndef LORA_OUTFILE_INTERNAL_H
#define LORA_OUTFILE_INTERNAL_H

#include <stdint.h>

#include "core/outfile.h"

/* Files of at least this many bytes (64 MiB unless changed) are written
 * around the page cache; a test sets 0 to take that path with small files. */
void lora_outfile_direct_min(uint64_t bytes);

#endif
