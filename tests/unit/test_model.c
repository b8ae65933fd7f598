/* Unit tests of data and model: config.json rules, token files and batch
 * cutting, and model invariants (ignored targets, last-position logits,
 * thread counts, plans, dropout, attach checks, memory growth). Products
 * are tested in test_blas.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "math/blas.h"
#include "check.h"
#include "io/data.h"
#include "model/llama_internal.h"
#include "test_model_util.h"

/* ---- config.json ---- */

static const char *cfg_err(const char *json)
{
	static lora_err e;
	lora_config c;
	if (lora_config_parse(&c, json, strlen(json), "m/config.json", &e) == 0)
		return "(accepted)";
	return e.msg;
}

#define BASECFG "\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, " \
                "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100"

static void test_config(void)
{
	lora_config c;
	lora_err e;
	const char *j = "{" BASECFG "}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0, "defaults: %s", e.msg);
	CHECK(c.n_kv_heads == 4 && c.head_dim == 16 && c.rms_eps == 1e-6 && c.rope_theta == 10000 && !c.tied &&
	          c.rope_type == LORA_ROPE_DEFAULT && c.sliding_window == 0,
	      "defaults");
	j = "{" BASECFG ", \"num_key_value_heads\": 2, \"head_dim\": 24, \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000,"
	    "\"tie_word_embeddings\": true, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32, "
	    "\"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0, "llama3: %s", e.msg);
	CHECK(c.n_kv_heads == 2 && c.head_dim == 24 && c.rms_eps == 1e-5 && c.rope_theta == 500000 && c.tied &&
	          c.rope_type == LORA_ROPE_LLAMA3 && c.rope_factor == 32 && c.rope_orig_max == 8192,
	      "llama3 values");
	j = "{" BASECFG ", \"rope_scaling\": null, \"head_dim\": null, \"num_key_value_heads\": null}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0 && c.head_dim == 16 && c.n_kv_heads == 4,
	      "nulls take defaults");
	j = "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
	    "\"num_attention_heads\": 4, \"vocab_size\": 100}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0 && c.sliding_window == 4096 && c.window_from == 0,
	      "mistral default window");
	j = "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
	    "\"num_attention_heads\": 4, \"vocab_size\": 100, \"sliding_window\": null}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0 && c.sliding_window == 0, "mistral null window");
	j = "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
	    "\"num_attention_heads\": 4, \"vocab_size\": 100, \"sliding_window\": 32, \"max_window_layers\": 1}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0 && c.sliding_window == 0,
	      "qwen2 window off unless use_sliding_window");
	j = "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
	    "\"num_attention_heads\": 4, \"vocab_size\": 100, \"use_sliding_window\": true, \"sliding_window\": 32, "
	    "\"max_window_layers\": 1}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0 && c.sliding_window == 32 && c.window_from == 1,
	      "qwen2 window");
	j = "{" BASECFG ", \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 4, \"rope_theta\": 1e6}}";
	CHECK(lora_config_parse(&c, j, strlen(j), "x", &e) == 0 && c.rope_type == LORA_ROPE_LINEAR &&
	          c.rope_factor == 4 && c.rope_theta == 1e6,
	      "rope_parameters");

	const struct {
		const char *json, *msg;
	} bad[] = {
		{"{\"hidden_size\": 8}", "m/config.json: missing key 'model_type'"},
		{"{\"model_type\": \"gpt2\"}", "m/config.json: model_type 'gpt2' is not supported (llama, mistral, qwen2)"},
		{"{\"model_type\": \"llama\", \"hidden_size\": 64}", "m/config.json: missing key 'intermediate_size'"},
		{"{" BASECFG ", \"num_key_value_heads\": 3}",
		 "m/config.json: num_attention_heads 4 is not a multiple of num_key_value_heads 3"},
		{"{\"model_type\": \"llama\", \"hidden_size\": 64.5}", "m/config.json: 'hidden_size' must be a positive integer"},
		{"{\"model_type\": \"llama\", \"hidden_size\": \"64\"}", "m/config.json: 'hidden_size' must be a positive integer"},
		{"{\"model_type\": \"llama\", \"hidden_size\": 0}", "m/config.json: 'hidden_size' must be a positive integer"},
		{"{\"model_type\": \"llama\", \"hidden_size\": 1e30}", "m/config.json: 'hidden_size': 1e+30 is too large (at most 2147483647)"},
		{"{" BASECFG ", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}",
		 "m/config.json: rope_scaling type 'yarn' is not supported (linear, llama3)"},
		{"{" BASECFG ", \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 4}}",
		 "m/config.json: rope_scaling type 'dynamic' is not supported (linear, llama3)"},
		{"{" BASECFG ", \"rope_scaling\": {\"type\": \"linear\"}}", "m/config.json: missing key 'rope_scaling.factor'"},
		{"{" BASECFG ", \"hidden_act\": \"gelu\"}", "m/config.json: hidden_act 'gelu' is not supported (silu)"},
		{"{" BASECFG ", \"head_dim\": 7}", "m/config.json: head_dim 7 must be even and positive (RoPE rotates pairs)"},
		{"{" BASECFG ", \"rms_norm_eps\": -1}", "m/config.json: 'rms_norm_eps' must be a positive number"},
		{"{" BASECFG ", \"tie_word_embeddings\": 1}", "m/config.json: 'tie_word_embeddings' must be true or false"},
		{"{" BASECFG ", \"head_dim\": 200000000}", "m/config.json: attention or MLP width is too large"},
		{"[1]", "m/config.json: file is not a JSON object"},
		{"{", "m/config.json: file is not valid JSON (error near byte 0)"},
		/* a key twice: the last stands, as in Python */
		{"{" BASECFG ", \"vocab_size\": 0}", "m/config.json: 'vocab_size' must be a positive integer"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *got = cfg_err(bad[i].json);
		CHECK(strcmp(got, bad[i].msg) == 0, "config %zu: got '%s', want '%s'", i, got, bad[i].msg);
	}
}

/* ---- data ---- */

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	fwrite(p, 1, n, f);
	fclose(f);
}

static void test_data(const char *dir)
{
	char p16[512], p32[512], pl[512], pb[512], pt[512];
	snprintf(p16, sizeof p16, "%s/t.u16", dir);
	snprintf(p32, sizeof p32, "%s/t.u32", dir);
	snprintf(pl, sizeof pl, "%s/t.llmc", dir);
	snprintf(pb, sizeof pb, "%s/t.txt", dir);
	snprintf(pt, sizeof pt, "%s/t.bin", dir);
	enum { NT = 101 };
	uint16_t u16[NT];
	uint32_t u32[NT];
	unsigned char bytes[NT];
	for (int i = 0; i < NT; i++)
		u16[i] = (uint16_t)((i * 37) % 200), u32[i] = u16[i], bytes[i] = (unsigned char)u16[i];
	write_file(p16, u16, sizeof u16);
	write_file(pt, u16, sizeof u16);
	write_file(p32, u32, sizeof u32);
	write_file(pb, bytes, sizeof bytes);
	int32_t hdr[256] = {LORA_LLMC_MAGIC_U16, 1, NT};
	unsigned char *lb = malloc(1024 + sizeof u16);
	memcpy(lb, hdr, 1024);
	memcpy(lb + 1024, u16, sizeof u16);
	write_file(pl, lb, 1024 + sizeof u16);
	const char *paths[] = {p16, pt, p32, pl, pb};
	lora_data_format fmts[] = {LORA_DATA_AUTO, LORA_DATA_AUTO, LORA_DATA_AUTO, LORA_DATA_AUTO, LORA_DATA_BYTES};
	lora_data_format want[] = {LORA_DATA_U16, LORA_DATA_U16, LORA_DATA_U32, LORA_DATA_LLMC, LORA_DATA_BYTES};
	lora_err e;
	for (int k = 0; k < 5; k++) {
		lora_data *d;
		CHECK(lora_data_open(&d, paths[k], fmts[k], 256, &e) == 0, "open %s: %s", paths[k], e.msg);
		if (!d)
			continue;
		CHECK(d->format == want[k] && d->ntokens == NT, "%s: format %d, %zu tokens", paths[k], d->format, d->ntokens);
		int same = 1;
		for (int i = 0; i < NT; i++)
			same &= lora_data_token(d, (size_t)i) == u16[i];
		CHECK(same, "%s: tokens", paths[k]);
		lora_data_close(d);
	}
	/* llm.c's rule without shuffling. */
	lora_data *d;
	lora_data_open(&d, p16, LORA_DATA_AUTO, 256, &e);
	lora_data_batches bt;
	CHECK(lora_data_batches_init(&bt, d, 2, 7, 0, 0, &e) == 0, "batches: %s", e.msg);
	CHECK(bt.nbatches == 7, "no-shuffle batches %zu", bt.nbatches); /* (101-1)/14 */
	int32_t in[30], tg[30];
	int ok = 1;
	for (size_t k = 0; k < bt.nbatches; k++) {
		lora_data_batches_get(&bt, k, in, tg);
		for (size_t b = 0; b < 2; b++)
			for (size_t t = 0; t < 7; t++)
				ok &= in[b * 7 + t] == u16[k * 14 + b * 7 + t] && tg[b * 7 + t] == u16[k * 14 + b * 7 + t + 1];
	}
	CHECK(ok, "no-shuffle batch k is tokens [k*B*T, k*B*T+B*T+1)");
	lora_data_batches_free(&bt);
	/* Shuffled: every window once, reproducible by seed. */
	CHECK(lora_data_batches_init(&bt, d, 3, 10, 1, 42, &e) == 0, "shuffle: %s", e.msg);
	CHECK(bt.nbatches == 3, "shuffle batches %zu", bt.nbatches); /* 10 windows / 3 */
	int seen[10] = {0};
	for (size_t i = 0; i < 10; i++)
		seen[bt.order[i]]++;
	ok = 1;
	for (int i = 0; i < 10; i++)
		ok &= seen[i] == 1;
	CHECK(ok, "shuffle is a permutation of the windows");
	lora_data_batches_get(&bt, 1, in, tg);
	size_t off = lora_data_batches_row(&bt, 1, 2).off;
	CHECK(off == bt.order[5] * 10 && in[2 * 10] == u16[off] && tg[2 * 10 + 9] == u16[off + 10], "shuffled row");
	lora_data_batches b2;
	lora_data_batches_init(&b2, d, 3, 10, 1, 42, &e);
	CHECK(memcmp(bt.order, b2.order, 10 * sizeof *bt.order) == 0, "same seed, same order");
	lora_data_batches_free(&b2);
	lora_data_batches_init(&b2, d, 3, 10, 1, 43, &e);
	CHECK(memcmp(bt.order, b2.order, 10 * sizeof *bt.order) != 0, "another seed, another order");
	lora_data_batches_free(&b2);
	lora_data_batches_free(&bt);
	CHECK(lora_data_batches_init(&bt, d, 4, 25, 0, 0, &e) == 0 && bt.nbatches == 1, "exactly one batch (101 tokens)");
	lora_data_batches_free(&bt);
	CHECK(lora_data_batches_init(&bt, d, 4, 26, 0, 0, &e) == LORA_EINVAL, "short data");
	char want_msg[700];
	snprintf(want_msg, sizeof want_msg,
	         "%s: 101 tokens is fewer than one batch needs (batch 4 x sequence 26 + 1 = 105)", p16);
	CHECK(strcmp(e.msg, want_msg) == 0, "short data message: %s", e.msg);
	lora_data_close(d);

	/* Errors. */
	CHECK(lora_data_open(&d, p16, LORA_DATA_AUTO, 150, &e) == LORA_EINVAL, "vocab");
	snprintf(want_msg, sizeof want_msg, "%s: token 185 at position 5 is >= vocab_size 150", p16);
	CHECK(strcmp(e.msg, want_msg) == 0, "vocab message: %s", e.msg);
	write_file(p32, u32, sizeof u32 - 1);
	CHECK(lora_data_open(&d, p32, LORA_DATA_AUTO, 256, &e) == LORA_EFORMAT, "odd size");
	snprintf(want_msg, sizeof want_msg, "%s: 403 bytes is not a whole number of 4-byte tokens", p32);
	CHECK(strcmp(e.msg, want_msg) == 0, "odd size message: %s", e.msg);
	CHECK(lora_data_open(&d, pb, LORA_DATA_AUTO, 256, &e) == LORA_EUSAGE, "unknown extension");
	write_file(pl, lb, 1024 + sizeof u16 - 2);
	CHECK(lora_data_open(&d, pl, LORA_DATA_AUTO, 256, &e) == LORA_EFORMAT, "llm.c count");
	snprintf(want_msg, sizeof want_msg, "%s: llm.c header says 101 tokens but the file holds 200 bytes of 2-byte tokens",
	         pl);
	CHECK(strcmp(e.msg, want_msg) == 0, "llm.c count message: %s", e.msg);
	hdr[1] = 2;
	memcpy(lb, hdr, 1024);
	write_file(pl, lb, 1024 + sizeof u16);
	CHECK(lora_data_open(&d, pl, LORA_DATA_LLMC, 256, &e) == LORA_EFORMAT, "llm.c version");
	hdr[0] = LORA_LLMC_MAGIC_U32, hdr[1] = 1;
	memcpy(lb, hdr, 1024);
	unsigned char *l32 = malloc(1024 + sizeof u32);
	memcpy(l32, hdr, 1024);
	memcpy(l32 + 1024, u32, sizeof u32);
	write_file(pl, l32, 1024 + sizeof u32);
	CHECK(lora_data_open(&d, pl, LORA_DATA_AUTO, 256, &e) == 0 && d->elem == 4 && d->ntokens == NT &&
	          lora_data_token(d, 100) == u32[100],
	      "llm.c uint32 tokens");
	lora_data_close(d);
	free(l32);
	free(lb);
	CHECK(lora_data_open(&d, "/nonexistent/x.u16", LORA_DATA_AUTO, 256, &e) == LORA_EIO &&
	          strcmp(e.msg, "/nonexistent/x.u16: No such file or directory") == 0,
	      "missing file: %s", e.msg);
	lora_data_format f;
	CHECK(lora_data_format_parse("llmc", &f) == 0 && f == LORA_DATA_LLMC && lora_data_format_parse("x", &f) == -1,
	      "format names");
}

/* ---- model invariants ---- */

static double loss_with(lora_llama *m, const int32_t *in, const int32_t *tg, size_t *cnt)
{
	double l = NAN;
	lora_err e;
	if (lora_llama_forward(m, in, tg, &l, cnt, &e))
		printf("FAIL forward: %s\n", e.msg);
	return l;
}

static void test_model(const char *dir)
{
	tm_spec s = {"llama", 16, 24, 2, 4, 2, 6, 32, 0, 1, 0, 0, NULL, NULL, LORA_F32, 21};
	char mdir[600];
	snprintf(mdir, sizeof mdir, "%s/model", dir);
	tm_write(mdir, &s);
	lora_err e;
	lora_llama *m = tm_open(mdir);
	if (!m)
		return;
	lora_adapter *a = tm_adapter(&s, 0x7f, 2, 4, 0, 0.3f, 3);
	CHECK(lora_llama_attach(m, a, 1, 1, "a", &e) == 0, "attach: %s", e.msg);
	const size_t B = 2, T = 5, N = B * T;
	int32_t in[10], tg[10], one[10];
	for (size_t i = 0; i < N; i++)
		in[i] = (int32_t)((i * 11 + 3) % 32), tg[i] = (int32_t)((i * 7 + 1) % 32);

	/* Mean over the targets used: with one target at a time, the mean of
	 * those losses is the full loss; ignored targets count for nothing. */
	CHECK(lora_llama_plan(m, B, T, 0, &e) == 0, "plan: %s", e.msg);
	size_t cnt;
	double full = loss_with(m, in, tg, &cnt), sum = 0, sum_even = 0, part[10];
	CHECK(cnt == N, "count %zu", cnt);
	for (size_t i = 0; i < N; i++) {
		for (size_t k = 0; k < N; k++)
			one[k] = k == i ? tg[k] : -1;
		part[i] = loss_with(m, in, one, &cnt);
		CHECK(cnt == 1, "single count");
		sum += part[i];
		sum_even += i % 2 ? 0 : part[i];
	}
	CHECK(fabs(sum / N - full) < 1e-6 * full, "mean of single-target losses %.9f vs %.9f", sum / N, full);
	for (size_t k = 0; k < N; k++)
		one[k] = k % 2 ? -1 : tg[k];
	double even = loss_with(m, in, one, &cnt);
	CHECK(cnt == 5 && fabs(even - sum_even / 5) < 1e-6 * even, "ignored targets: %.9f vs %.9f", even, sum_even / 5);
	for (size_t k = 0; k < N; k++)
		one[k] = -1;
	CHECK(loss_with(m, in, one, &cnt) == 0 && cnt == 0, "no targets: loss 0");

	/* Last-position logits give the last target's loss. */
	CHECK(lora_llama_forward(m, in, NULL, NULL, NULL, &e) == 0, "no targets: %s", e.msg);
	const float *lg = lora_llama_logits(m);
	for (size_t b = 0; b < B; b++) {
		const float *row = lg + b * 32;
		double mx = -INFINITY, z = 0;
		for (int v = 0; v < 32; v++)
			mx = row[v] > mx ? row[v] : mx;
		for (int v = 0; v < 32; v++)
			z += exp(row[v] - mx);
		double l = mx + log(z) - row[tg[b * T + T - 1]];
		CHECK(fabs(l - part[b * T + T - 1]) < 1e-5, "last logits row %zu: %.7f vs %.7f", b, l, part[b * T + T - 1]);
	}

	/* Training plans compute the same loss; so do other thread counts. */
	CHECK(lora_llama_plan(m, B, T, LORA_LLAMA_TRAIN, &e) == 0, "plan: %s", e.msg);
	double tl = loss_with(m, in, tg, NULL);
	CHECK(fabs(tl - full) <= 1e-7 * full, "train plan loss %.9f vs %.9f", tl, full);
	lora_llama_set_dropout(m, 0.5f, 1);
	double d1 = loss_with(m, in, tg, NULL), d1b = loss_with(m, in, tg, NULL);
	lora_llama_set_dropout(m, 0.5f, 2);
	double d2 = loss_with(m, in, tg, NULL);
	CHECK(d1 == d1b && d1 != d2 && d1 != tl, "dropout: same seed same loss, another seed another (%.6f %.6f %.6f)", d1,
	      d1b, d2);
	lora_llama_set_dropout(m, 0, 0);
	CHECK(loss_with(m, in, tg, NULL) == tl, "dropout 0 is no dropout");
	int nt = lora_blas_threads();
	lora_blas_set_threads(1);
	lora_llama_plan(m, B, T, 0, &e);
	double l1 = loss_with(m, in, tg, NULL);
	lora_blas_set_threads(nt);
	CHECK(fabs(l1 - full) <= 1e-6 * full, "1 thread %.9f vs %d threads %.9f", l1, nt, full);

	/* Bad tokens. */
	in[7] = 32;
	CHECK(lora_llama_forward(m, in, tg, NULL, NULL, &e) == LORA_EINVAL &&
	          strcmp(e.msg, "input token 32 at row 1, position 2 is outside [0, 32)") == 0,
	      "bad input: %s", e.msg);
	in[7] = 1, tg[3] = 40;
	CHECK(lora_llama_forward(m, in, tg, NULL, NULL, &e) == LORA_EINVAL &&
	          strcmp(e.msg, "target token 40 at row 0, position 3 is >= vocab_size 32") == 0,
	      "bad target: %s", e.msg);
	tg[3] = 1;
	CHECK(lora_llama_backward(m, &e) == LORA_EINVAL, "backward without a training forward");

	/* Attach checks. */
	lora_adapter *b = lora_adapter_new();
	lora_adapter_add(b, "model.layers.5.self_attn.q_proj", 24, 16, 2, 2, 0, &e);
	CHECK(lora_llama_attach(m, b, 1, 0, "b.lora", &e) == LORA_EINVAL &&
	          strcmp(e.msg, "b.lora: layer 'model.layers.5.self_attn.q_proj' is not in the model (it has 2 blocks)") == 0,
	      "block out of range: %s", e.msg);
	lora_adapter_free(b);
	b = lora_adapter_new();
	lora_adapter_add(b, "base_model.model.model.layers.1.self_attn.k_proj", 24, 16, 2, 2, 0, &e);
	CHECK(lora_llama_attach(m, b, 1, 0, "b.lora", &e) == LORA_EINVAL &&
	          strcmp(e.msg, "b.lora: layer 'base_model.model.model.layers.1.self_attn.k_proj': adapter shape 24x16 does "
	                        "not match the model's 12x16") == 0,
	      "shape: %s", e.msg);
	lora_adapter_free(b);
	b = lora_adapter_new();
	lora_adapter_add(b, "model.embed_tokens", 32, 16, 2, 2, 0, &e);
	CHECK(lora_llama_attach(m, b, 1, 0, "b.lora", &e) == LORA_EINVAL &&
	          strcmp(e.msg, "b.lora: layer 'model.embed_tokens' is not a linear module of a decoder block "
	                        "(q/k/v/o_proj, gate/up/down_proj)") == 0,
	      "not a module: %s", e.msg);
	lora_adapter_free(b);
	b = tm_adapter(&s, 1, 1, 1, 0, 0.1f, 1);
	CHECK(lora_llama_attach(m, b, 1, 1, "b.lora", &e) == LORA_EINVAL &&
	          strcmp(e.msg, "b.lora: only one adapter can be trained at a time") == 0,
	      "two trainables: %s", e.msg);
	b->layers[0].magnitude = calloc(24, sizeof(float));
	CHECK(lora_llama_attach(m, b, 1, 0, "b.lora", &e) == LORA_EINVAL && strstr(e.msg, "is DoRA"), "dora: %s", e.msg);
	lora_adapter_free(b);

	/* A zero-scaled frozen adapter changes nothing; the same adapter
	 * attached twice at scale 1/2 equals it once at scale 1. */
	lora_llama *m2 = tm_open(mdir), *m3 = tm_open(mdir);
	lora_adapter *c = tm_adapter(&s, 0x55, 2, 4, 1, 0.3f, 8);
	lora_llama_attach(m2, c, 0.0, 0, "c", &e);
	lora_llama_plan(m2, B, T, 0, &e);
	lora_llama_plan(m3, B, T, 0, &e);
	double base = loss_with(m3, in, tg, NULL), zero = loss_with(m2, in, tg, NULL);
	CHECK(base == zero, "scale 0: %.9f vs %.9f", zero, base);
	tm_close(m2);
	tm_close(m3);
	m2 = tm_open(mdir), m3 = tm_open(mdir);
	lora_llama_attach(m2, c, 0.5, 0, "c", &e);
	lora_llama_attach(m2, c, 0.5, 0, "c", &e);
	lora_llama_attach(m3, c, 1.0, 0, "c", &e);
	lora_llama_plan(m2, B, T, 0, &e);
	lora_llama_plan(m3, B, T, 0, &e);
	double half2 = loss_with(m2, in, tg, NULL), once = loss_with(m3, in, tg, NULL);
	CHECK(fabs(half2 - once) < 1e-6 * once && once != base, "two halves %.9f vs one %.9f", half2, once);
	tm_close(m2);
	tm_close(m3);
	lora_adapter_free(c);

	/* Activation memory grows linearly with the sequence length. */
	lora_llama_plan(m, 1, 1024, LORA_LLAMA_TRAIN, &e);
	size_t b1 = lora_llama_activation_bytes(m);
	lora_llama_plan(m, 1, 4096, LORA_LLAMA_TRAIN, &e);
	size_t b4 = lora_llama_activation_bytes(m);
	CHECK(b4 < 4.05 * b1, "activations at T=4096 are %.2fx those at T=1024", (double)b4 / b1);
	lora_llama_plan(m, 1, 4096, LORA_LLAMA_TRAIN | LORA_LLAMA_RECOMPUTE, &e);
	CHECK(lora_llama_activation_bytes(m) < b4, "recompute keeps less");

	/* FLOPs: forward = 2 x weights in products + attention + LoRA. */
	double C = 16, F = 24, QD = 24, KVD = 12, V = 32, attn = 4 * 4 * 6 * 3.0 /* ctx (1+..+5)/5 */;
	double lora = 0;
	for (size_t i = 0; i < a->nlayers; i++)
		lora += 2.0 * (double)a->layers[i].rank * (double)(a->layers[i].in + a->layers[i].out);
	double fwd = 2 * C * V + 2 * (2 * (C * (QD + 2 * KVD) + QD * C + 3 * C * F) + attn) + lora;
	CHECK(fabs(lora_llama_flops_per_token(m, 5, 0) - fwd) < 1e-6 * fwd, "forward flops %.1f vs %.1f",
	      lora_llama_flops_per_token(m, 5, 0), fwd);
	double tr = lora_llama_flops_per_token(m, 5, 1);
	CHECK(tr > 1.9 * fwd && tr < 2.2 * fwd, "training flops %.1f vs forward %.1f", tr, fwd);

	tm_close(m);
	lora_adapter_free(a);
}

/* Checkpoint checks at open. */
static void test_open(const char *dir)
{
	char mdir[600], path[700];
	snprintf(mdir, sizeof mdir, "%s/m2", dir);
	tm_spec s = {"llama", 16, 24, 1, 4, 2, 0, 32, 1, 0, 0, 0, NULL, NULL, LORA_BF16, 2};
	tm_write(mdir, &s);
	lora_ckpt *ck;
	lora_llama *m;
	lora_err e;
	lora_ckpt_open(&ck, mdir, &e);
	CHECK(lora_llama_open(&m, ck, &e) == 0, "tied bf16: %s", e.msg);
	lora_llama_free(m);
	lora_ckpt_close(ck);
	/* Config says untied: lm_head.weight is then required. */
	snprintf(path, sizeof path, "%s/config.json", mdir);
	FILE *f = fopen(path, "w");
	fprintf(f, "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 24, \"num_hidden_layers\": 1, "
	           "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 32}");
	fclose(f);
	lora_ckpt_open(&ck, mdir, &e);
	CHECK(lora_llama_open(&m, ck, &e) == LORA_EFORMAT, "untied without lm_head");
	char want[900];
	snprintf(want, sizeof want, "%s: tensor 'lm_head.weight' is missing", mdir);
	CHECK(strcmp(e.msg, want) == 0, "missing: %s", e.msg);
	lora_ckpt_close(ck);
	f = fopen(path, "w");
	fprintf(f, "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 24, \"num_hidden_layers\": 1, "
	           "\"num_attention_heads\": 4, \"vocab_size\": 32, \"tie_word_embeddings\": true}");
	fclose(f);
	lora_ckpt_open(&ck, mdir, &e);
	CHECK(lora_llama_open(&m, ck, &e) == LORA_EFORMAT, "kv heads mismatch");
	snprintf(want, sizeof want,
	         "%s: tensor 'model.layers.0.self_attn.k_proj.weight' has shape 8x16 but config.json implies 16x16", mdir);
	CHECK(strcmp(e.msg, want) == 0, "shape: %s", e.msg);
	lora_ckpt_close(ck);
	snprintf(path, sizeof path, "%s/model.safetensors", mdir);
	CHECK(lora_ckpt_open(&ck, path, &e) == 0, "open file: %s", e.msg);
	lora_ckpt_close(ck);
	unlink(path);
}

/* Decoding a prompt and then token by token gives the logits of full
 * forwards of the growing sequence: GQA, a sliding window shorter than
 * the sequence, biases, an adapter, and more than one query block. */
static void test_decode(const char *dir)
{
	char mdir[600];
	snprintf(mdir, sizeof mdir, "%s/md", dir);
	tm_spec s = {"mistral", 16, 24, 2, 4, 2, 6, 40, 0, 1, 1, 0, NULL, "\"sliding_window\": 11,", LORA_F32, 31};
	tm_write(mdir, &s);
	lora_err e;
	lora_adapter *a = tm_adapter(&s, 0x7f, 2, 4, 0, 0.3f, 5);
	lora_llama *full = tm_open(mdir), *dec = tm_open(mdir);
	if (!full || !dec)
		return;
	lora_llama_attach(full, a, 0.8, 0, "a", &e);
	lora_llama_attach(dec, a, 0.8, 0, "a", &e);
	enum { B = 2, TMAX = 90 };
	int32_t seq[B * TMAX], pre[B * TMAX];
	for (size_t i = 0; i < B * TMAX; i++)
		seq[i] = (int32_t)((i * 13 + 5) % 40);
	CHECK(lora_llama_plan_decode(dec, B, TMAX, &e) == 0, "plan decode: %s", e.msg);
	CHECK(lora_llama_forward(dec, seq, NULL, NULL, NULL, &e) == LORA_EINVAL, "forward on a decode plan");
	/* a prompt of 70 (two query blocks), then single tokens */
	size_t steps[] = {70, 1, 1, 5, 1, 12};
	size_t pos = 0;
	double worst = 0;
	for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
		size_t n = steps[k];
		int32_t chunk[B * 70];
		for (size_t b = 0; b < B; b++)
			memcpy(chunk + b * n, seq + b * TMAX + pos, n * sizeof *chunk);
		CHECK(lora_llama_decode(dec, chunk, n, pos, &e) == 0, "decode at %zu: %s", pos, e.msg);
		pos += n;
		for (size_t b = 0; b < B; b++)
			memcpy(pre + b * pos, seq + b * TMAX, pos * sizeof *pre);
		lora_llama_plan(full, B, pos, 0, &e);
		CHECK(lora_llama_forward(full, pre, NULL, NULL, NULL, &e) == 0, "forward: %s", e.msg);
		const float *x = lora_llama_logits(full), *y = lora_llama_logits(dec);
		for (size_t i = 0; i < B * 40; i++) {
			double d = fabs((double)x[i] - y[i]);
			worst = d > worst ? d : worst;
		}
	}
	CHECK(worst < 1e-5, "decode vs forward logits differ by %g", worst);
	int32_t t1[B] = {1, 2};
	CHECK(lora_llama_decode(dec, t1, 1, TMAX, &e) == LORA_EINVAL, "past the cache");
	tm_close(full);
	tm_close(dec);
	lora_adapter_free(a);
}

int main(void)
{
	lora_blas_set_threads(2);
	char *dir = tm_tmpdir();
	test_config();
	test_data(dir);
	test_model(dir);
	test_open(dir);
	test_decode(dir);
	tm_rmtree(dir);
	free(dir);
	DONE();
}
