/* Minimal check macros for the C unit tests: a failing check prints one
 * FAIL line; main ends with DONE(), which prints "ok N checks" or fails. */
#ifndef CHECK_H
#define CHECK_H
#include <stdio.h>

static int checks, failures;

#define CHECK(cond, ...)                                                        \
	do {                                                                        \
		checks++;                                                               \
		if (!(cond)) {                                                          \
			failures++;                                                         \
			if (failures <= 20) {                                               \
				printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
				printf(__VA_ARGS__);                                            \
				printf("\n");                                                   \
			}                                                                   \
		}                                                                       \
	} while (0)

#define DONE()                                                                  \
	do {                                                                        \
		if (failures) {                                                         \
			printf("%d of %d checks failed\n", failures, checks);              \
			return 1;                                                           \
		}                                                                       \
		printf("ok %d checks\n", checks);                                      \
		return 0;                                                               \
	} while (0)
#endif
