/* Helpers shared by the model tests: write a tiny Llama-family checkpoint
 * of any shape (config.json + model.safetensors) and build adapters for
 * it, all deterministic. */
#ifndef TEST_MODEL_UTIL_H
#define TEST_MODEL_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/adapter.h"
#include "model/llama.h"
#include "core/rng.h"
#include "io/ckpt.h"

typedef struct {
	const char *model_type; /* "llama" */
	size_t C, F, L, NH, NKV, HD, V; /* HD 0: not written (hidden / heads) */
	int tied, qkv_bias, o_bias, mlp_bias;
	const char *rope;       /* extra config text, e.g. "\"rope_scaling\": {...},", or NULL */
	const char *extra;      /* more config text ending in ",", or NULL */
	lora_dtype dtype;
	uint64_t seed;
} tm_spec;

static size_t tm_hd(const tm_spec *s) { return s->HD ? s->HD : s->C / s->NH; }

static void tm_fill(float *x, size_t n, lora_rng *r, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * lora_rng_uniform(r);
}

/* Write dir/config.json and dir/model.safetensors. 0 or -1. */
static int tm_write(const char *dir, const tm_spec *s)
{
	char path[512];
	mkdir(dir, 0777);
	snprintf(path, sizeof path, "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	char hd[64] = "";
	if (s->HD)
		snprintf(hd, sizeof hd, "\"head_dim\": %zu,", s->HD);
	fprintf(f,
	        "{\"model_type\": \"%s\", \"hidden_size\": %zu, \"intermediate_size\": %zu, "
	        "\"num_hidden_layers\": %zu, \"num_attention_heads\": %zu, \"num_key_value_heads\": %zu, %s "
	        "\"vocab_size\": %zu, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, %s %s"
	        "\"tie_word_embeddings\": %s, \"max_position_embeddings\": 4096, \"hidden_act\": \"silu\"}\n",
	        s->model_type, s->C, s->F, s->L, s->NH, s->NKV, hd, s->V, s->rope ? s->rope : "",
	        s->extra ? s->extra : "", s->tied ? "true" : "false");
	fclose(f);
	size_t hdim = tm_hd(s), QD = s->NH * hdim, KVD = s->NKV * hdim;
	size_t cap = 16 + s->L * 16, n = 0;
	lora_st_spec *sp = calloc(cap, sizeof *sp);
	char (*names)[96] = calloc(cap, sizeof *names);
	int *is_norm = calloc(cap, sizeof *is_norm);
#define ADD(nm, r, c, norm)                                                                                    \
	do {                                                                                                   \
		snprintf(names[n], 96, "%s", nm);                                                                  \
		sp[n].name = names[n];                                                                             \
		sp[n].dtype = s->dtype;                                                                            \
		sp[n].ndim = (c) ? 2 : 1;                                                                          \
		sp[n].shape[0] = (r);                                                                              \
		sp[n].shape[1] = (c);                                                                              \
		is_norm[n] = (norm);                                                                               \
		n++;                                                                                               \
	} while (0)
	char nm[96];
	ADD("model.embed_tokens.weight", s->V, s->C, 0);
	static const char *const mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	                                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
	const size_t outs[7] = {QD, KVD, KVD, s->C, s->F, s->F, s->C}, ins[7] = {s->C, s->C, s->C, QD, s->C, s->C, s->F};
	for (size_t l = 0; l < s->L; l++) {
		for (int k = 0; k < 7; k++) {
			snprintf(nm, sizeof nm, "model.layers.%zu.%s.weight", l, mods[k]);
			ADD(nm, outs[k], ins[k], 0);
			int bias = (k < 3 && s->qkv_bias) || (k == 3 && s->o_bias) || (k > 3 && s->mlp_bias);
			if (bias) {
				snprintf(nm, sizeof nm, "model.layers.%zu.%s.bias", l, mods[k]);
				ADD(nm, outs[k], 0, 2);
			}
		}
		snprintf(nm, sizeof nm, "model.layers.%zu.input_layernorm.weight", l);
		ADD(nm, s->C, 0, 1);
		snprintf(nm, sizeof nm, "model.layers.%zu.post_attention_layernorm.weight", l);
		ADD(nm, s->C, 0, 1);
	}
	ADD("model.norm.weight", s->C, 0, 1);
	if (!s->tied)
		ADD("lm_head.weight", s->V, s->C, 0);
#undef ADD
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	lora_st_writer *w;
	lora_err e;
	int rc = lora_st_writer_open(&w, path, sp, n, NULL, 0, 1, &e);
	lora_rng r;
	lora_rng_seed(&r, s->seed);
	for (size_t i = 0; i < n && !rc; i++) {
		size_t cnt = sp[i].shape[0] * (sp[i].ndim == 2 ? sp[i].shape[1] : 1);
		float *x = malloc(cnt * 4);
		unsigned char *b = malloc(cnt * 4);
		if (is_norm[i] == 1)
			tm_fill(x, cnt, &r, 0.8f, 1.2f);
		else if (is_norm[i] == 2)
			tm_fill(x, cnt, &r, -0.2f, 0.2f);
		else
			tm_fill(x, cnt, &r, -0.3f, 0.3f);
		lora_dtype_from_f32(b, x, s->dtype, cnt);
		rc = lora_st_writer_write(w, b, cnt * lora_dtype_size(s->dtype), &e);
		free(x);
		free(b);
	}
	if (!rc)
		rc = lora_st_writer_commit(w, &e);
	else
		lora_st_writer_abort(w);
	if (rc)
		fprintf(stderr, "tm_write: %s\n", e.msg);
	free(sp);
	free(names);
	free(is_norm);
	return rc ? -1 : 0;
}

/* An adapter on the modules whose bit is set in mask (bit k = module k),
 * in every block; rank rank0 + block index, alpha alpha0 * (1 + block);
 * A and B uniform in +-amp. */
static lora_adapter *tm_adapter(const tm_spec *s, unsigned mask, size_t rank0, double alpha0, int rslora, float amp,
                                uint64_t seed)
{
	size_t hdim = tm_hd(s), QD = s->NH * hdim, KVD = s->NKV * hdim;
	const size_t outs[7] = {QD, KVD, KVD, s->C, s->F, s->F, s->C}, ins[7] = {s->C, s->C, s->C, QD, s->C, s->C, s->F};
	static const char *const mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	                                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
	lora_adapter *a = lora_adapter_new();
	lora_err e;
	lora_rng r;
	lora_rng_seed(&r, seed);
	a->rslora = rslora;
	char nm[96];
	for (size_t l = 0; l < s->L; l++)
		for (int k = 0; k < 7; k++) {
			if (!(mask >> k & 1))
				continue;
			snprintf(nm, sizeof nm, "model.layers.%zu.%s", l, mods[k]);
			size_t rk = rank0 + l;
			lora_layer *y = lora_adapter_add(a, nm, outs[k], ins[k], rk, alpha0 * (double)(1 + l), 0, &e);
			tm_fill(y->A, rk * ins[k], &r, -amp, amp);
			tm_fill(y->B, outs[k] * rk, &r, -amp, amp);
		}
	return a;
}

/* A fresh directory under TMPDIR (or /tmp). */
static char *tm_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char *p = malloc(512);
	snprintf(p, 512, "%s/tmXXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(p)) {
		free(p);
		return NULL;
	}
	return p;
}

static void tm_rmtree(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* Models opened by tm_open and the checkpoints they read their weights
 * from, which must stay open until tm_close. */
#define TM_OPEN_MAX 16
static struct {
	lora_llama *m;
	lora_ckpt *ck;
} tm_opened[TM_OPEN_MAX];

/* Open dir as a model computing in the given type; NULL (message printed)
 * on error. Close with tm_close. */
static lora_llama *tm_open_as(const char *dir, lora_llama_compute mode)
{
	lora_ckpt *ck = NULL;
	lora_llama *m = NULL;
	lora_err e;
	size_t i = 0;
	while (i < TM_OPEN_MAX && tm_opened[i].m)
		i++;
	if (i == TM_OPEN_MAX || lora_ckpt_open(&ck, dir, &e) || lora_llama_open(&m, ck, &e) ||
	    lora_llama_set_compute(m, mode, &e)) {
		printf("FAIL open %s: %s\n", dir, i == TM_OPEN_MAX ? "too many models open" : e.msg);
		lora_llama_free(m);
		lora_ckpt_close(ck);
		return NULL;
	}
	tm_opened[i].m = m;
	tm_opened[i].ck = ck;
	return m;
}

static lora_llama *tm_open(const char *dir) { return tm_open_as(dir, LORA_LLAMA_F32); }

static void tm_close(lora_llama *m)
{
	for (size_t i = 0; i < TM_OPEN_MAX; i++)
		if (m && tm_opened[i].m == m) {
			lora_llama_free(m);
			lora_ckpt_close(tm_opened[i].ck);
			tm_opened[i].m = NULL;
		}
}

#endif
