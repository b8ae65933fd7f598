/* Fuzz the token-file reader (lora_data_open) and the batch planner. The
 * first input byte picks the format (and for auto the file name's
 * extension), the second the vocabulary size; the rest is the file. An
 * accepted file holds exactly its tokens, each below the vocabulary (a tok
 * file's documents rising to its end), and every batch, packed or not,
 * reads inside it, each row with a target that has loss. */
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
	if (d->format == LORA_DATA_TOK) {
		/* documents rise to the token count; the rest is the mask and
		 * the header and trailer */
		size_t prev = 0;
		for (size_t i = 0; i < d->ndocs; i++) {
			size_t end = lora_data_doc_end(d, i);
			FUZZ_CHECK(end > prev && end <= d->ntokens);
			prev = end;
		}
		FUZZ_CHECK(prev == d->ntokens && (d->ntokens == 0) == (d->ndocs == 0));
		body -= LORA_TOK_HEADER_BYTES + LORA_TOK_TRAILER_BYTES + 8 * d->ndocs + (d->mask ? (d->ntokens + 7) / 8 : 0);
	}
	FUZZ_CHECK(d->ntokens * d->elem == body);
	for (size_t i = 0; i < d->ntokens; i++)
		FUZZ_CHECK(lora_data_token(d, i) < vocab);
	/* Cut it into batches both ways, with a shape from the input. */
	size_t B = 1 + data[1] % 3, T = 1 + data[0] % 5;
	for (unsigned flags = 0; flags < 4; flags++) {
		lora_data_batches b;
		rc = lora_data_batches_init(&b, d, B, T, flags, data[0], &e);
		if (rc) {
			fuzz_check_error(rc, &e);
			FUZZ_CHECK(d->ndocs || d->ntokens < B * T + 1);
			continue;
		}
		FUZZ_CHECK(b.nbatches >= 1);
		int32_t in[15], tg[15];
		size_t ks[2] = {0, b.nbatches - 1};
		for (int k = 0; k < 2; k++) {
			size_t cnt = lora_data_batches_get(&b, ks[k], in, tg), c = 0;
			for (size_t r = 0; r < B; r++) {
				lora_data_row row = lora_data_batches_row(&b, ks[k], r);
				FUZZ_CHECK(row.len >= 2 && row.len <= T + 1 && row.off + row.len <= d->ntokens);
				int any = 0;
				for (size_t t = 0; t < T; t++) {
					FUZZ_CHECK((size_t)in[r * T + t] < vocab || vocab > INT32_MAX);
					if (tg[r * T + t] >= 0)
						c++, any = 1;
				}
				/* a row always holds a target with loss (ids past
				 * INT32_MAX read as negative) */
				FUZZ_CHECK(any || vocab > INT32_MAX);
			}
			FUZZ_CHECK(c == cnt || vocab > INT32_MAX);
		}
		lora_data_batches_free(&b);
	}
	lora_data_close(d);
	return 0;
}
