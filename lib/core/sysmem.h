/* sysmem: how much memory this process may still take, so that a plan
 * too large for the machine is refused before work starts rather than
 * killed by the kernel later (allocations succeed lazily under Linux's
 * overcommit and fail only when touched). */
#ifndef LORA_SYSMEM_H
#define LORA_SYSMEM_H

#include <stddef.h>

/* Bytes available: /proc/meminfo's MemAvailable, lowered to the room left
 * under the cgroup's memory.max when one is set. SIZE_MAX when neither
 * can be read. */
size_t lora_sysmem_available(void);

#endif
