/* Fuzz the token-file reader (lora_data_open) and the batch planner. The
 * first input byte picks the format (and for auto the file name's
 * extension), the second the vocabulary size; the rest is the file. An
 * accepted file holds exactly its tokens, each below the vocabulary, and
 * every batch reads inside it. */
#include "io/data.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {"t.bin", "t.u16", "t.u32", "t.dat", "t.bin", "t.u32", "t.llmc", "t"};
	static const lora_data_format fmts[] = {LORA_DATA_AUTO, LORA_DATA_AUTO, LORA_DATA_AUTO, LORA_DATA_AUTO,
	                                        LORA_DATA_U16,  LORA_DATA_U32,  LORA_DATA_LLMC, LORA_DATA_BYTES};
	static const size_t vocabs[] = {1, 2, 50, 256, 257, 4096, 65535, 65536, 65537, 151936, (size_t)1 << 32};
	if (size < 2)
		return 0;
	unsigned pick = data[0] % 8;
	size_t vocab = vocabs[data[1] % (sizeof vocabs / sizeof *vocabs)];
	const char *path = fuzz_file(names[pick], data + 2, size - 2);
	lora_data *d = NULL;
	lora_err e = {0};
	int rc = lora_data_open(&d, path, fmts[pick], vocab, &e);
	if (rc) {
		fuzz_check_error(rc, &e);
		FUZZ_CHECK(d == NULL);
		FUZZ_CHECK(strstr(e.msg, path) == e.msg);
		return 0;
	}
	size_t body = size - 2;
	FUZZ_CHECK(d->format != LORA_DATA_AUTO);
	FUZZ_CHECK(d->elem == 1 || d->elem == 2 || d->elem == 4);
	if (d->format == LORA_DATA_LLMC)
		body -= LORA_LLMC_HEADER_BYTES;
	FUZZ_CHECK(d->ntokens * d->elem == body);
	for (size_t i = 0; i < d->ntokens; i++)
		FUZZ_CHECK(lora_data_token(d, i) < vocab);
	/* Cut it into batches both ways, with a shape from the input. */
	size_t B = 1 + data[1] % 3, T = 1 + data[0] % 5;
	for (int shuffle = 0; shuffle < 2; shuffle++) {
		lora_data_batches b;
		rc = lora_data_batches_init(&b, d, B, T, shuffle, data[0], &e);
		if (rc) {
			fuzz_check_error(rc, &e);
			FUZZ_CHECK(d->ntokens < B * T + 1);
			continue;
		}
		FUZZ_CHECK(b.nbatches >= 1);
		int32_t in[15], tg[15];
		size_t ks[2] = {0, b.nbatches - 1};
		for (int k = 0; k < 2; k++) {
			lora_data_batches_get(&b, ks[k], in, tg);
			for (size_t r = 0; r < B; r++) {
				size_t off = lora_data_batches_row(&b, ks[k], r).off;
				FUZZ_CHECK(off + T < d->ntokens);
				for (size_t t = 0; t < T; t++)
					FUZZ_CHECK((size_t)in[r * T + t] < vocab || vocab > INT32_MAX);
			}
		}
		lora_data_batches_free(&b);
	}
	lora_data_close(d);
	return 0;
}
