#include "core/sysmem.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The first number in the file at path after key (NULL: the file's first
 * word); 0 when absent or not a number ("max"). */
static unsigned long long read_num(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	char line[256];
	unsigned long long v = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		size_t kl = key ? strlen(key) : 0;
		if (key && strncmp(line, key, kl) != 0)
			continue;
		if (sscanf(line + kl, "%llu", &v) != 1)
			v = 0;
		break;
	}
	fclose(f);
	return v;
}

size_t lora_sysmem_available(void)
{
	unsigned long long avail = read_num("/proc/meminfo", "MemAvailable:") * 1024;
	unsigned long long max = read_num("/sys/fs/cgroup/memory.max", NULL);
	unsigned long long cur = read_num("/sys/fs/cgroup/memory.current", NULL);
	if (max && cur <= max && (!avail || max - cur < avail))
		avail = max - cur;
	return avail && avail < SIZE_MAX ? (size_t)avail : SIZE_MAX;
}
