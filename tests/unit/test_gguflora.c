/* Unit test for lib/io/gguflora: the q/k row permutation against rows
 * worked out by hand from convert_hf_to_gguf's LlamaModel.permute, the
 * keys llama.cpp reads, adapter.lora.alpha and the folds of layers it
 * cannot scale, files as upstream's converter writes them (no lora.*
 * keys), and the reader's refusals. Prints "ok N checks" at the end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "io/gguf.h"
#include "io/gguflora.h"

static char dir[4096];

static const char *P(const char *name)
{
	static char buf[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

/* A layer whose B row i is (i, 100 + i) and A is all ones. */
static lora_layer *layer(lora_adapter *a, const char *name, size_t out, size_t in, size_t r, double alpha)
{
	lora_layer *l = lora_adapter_add(a, name, out, in, r, alpha, 0, NULL);
	for (size_t i = 0; i < r * in; i++)
		l->A[i] = 1;
	for (size_t i = 0; i < out; i++)
		for (size_t j = 0; j < r; j++)
			l->B[i * r + j] = (float)(i + 100 * j);
	return l;
}

static float tval(const lora_gguf *g, const char *name, size_t i)
{
	const lora_gguf_tensor *t = lora_gguf_find(g, name);
	float f[64];
	if (!t || t->nelem > 64 || lora_gguf_to_f32(f, t))
		return NAN;
	return f[i];
}

static void test_permutation(void)
{
	lora_adapter *a = lora_adapter_new();
	layer(a, "model.layers.0.self_attn.q_proj", 8, 2, 1, 1);
	layer(a, "model.layers.0.self_attn.k_proj", 8, 2, 1, 1);
	layer(a, "model.layers.3.mlp.down_proj", 4, 2, 1, 1);
	lora_gguflora_base b = {"llama", 2, 1};
	lora_err e = {0};
	int rc = lora_gguflora_write(a, P("perm.gguf"), &b, 0, &e);
	CHECK(rc == 0, "write: %s", e.msg);
	lora_gguf *g = NULL;
	CHECK(lora_gguf_open(&g, P("perm.gguf"), &e) == 0, "open: %s", e.msg);
	if (!g)
		return;
	/* q: 2 heads of 4 rows; a head's rows 0,1 | 2,3 interleave: 0,2,1,3 */
	static const int q[] = {0, 2, 1, 3, 4, 6, 5, 7}, k[] = {0, 4, 1, 5, 2, 6, 3, 7};
	for (int i = 0; i < 8; i++) {
		CHECK(tval(g, "blk.0.attn_q.weight.lora_b", (size_t)i) == q[i], "q row %d", i);
		CHECK(tval(g, "blk.0.attn_k.weight.lora_b", (size_t)i) == k[i], "k row %d (one kv head)", i);
	}
	for (int i = 0; i < 4; i++)
		CHECK(tval(g, "blk.3.ffn_down.weight.lora_b", (size_t)i) == i, "down row %d unchanged", i);
	const lora_gguf_tensor *ta = lora_gguf_find(g, "blk.0.attn_q.weight.lora_a"),
	                       *tb = lora_gguf_find(g, "blk.0.attn_q.weight.lora_b");
	CHECK(ta && ta->ndim == 2 && ta->ne[0] == 2 && ta->ne[1] == 1, "lora_a ne {in, rank}");
	CHECK(tb && tb->ndim == 2 && tb->ne[0] == 1 && tb->ne[1] == 8, "lora_b ne {rank, out}");
	const char *s;
	size_t len;
	CHECK(!lora_gguf_kv_str(lora_gguf_kv_find(g, "general.architecture"), 0, &s, &len) && len == 5 &&
	          !memcmp(s, "llama", 5),
	      "architecture");
	CHECK(!lora_gguf_kv_str(lora_gguf_kv_find(g, "general.type"), 0, &s, &len) && len == 7, "general.type");
	CHECK(!lora_gguf_kv_str(lora_gguf_kv_find(g, "adapter.type"), 0, &s, &len) && len == 4, "adapter.type");
	double alpha;
	CHECK(!lora_gguf_kv_float(lora_gguf_kv_find(g, "adapter.lora.alpha"), 0, &alpha) && alpha == 1, "alpha");
	lora_gguf_close(g);
	/* qwen2: nothing is permuted */
	b.arch = "qwen2";
	CHECK(lora_gguflora_write(a, P("qwen.gguf"), &b, 0, &e) == 0, "qwen2: %s", e.msg);
	if (lora_gguf_open(&g, P("qwen.gguf"), &e) == 0) {
		for (int i = 0; i < 8; i++)
			CHECK(tval(g, "blk.0.attn_q.weight.lora_b", (size_t)i) == i, "qwen2 q row %d", i);
		lora_gguf_close(g);
	}
	/* read back: the rows in Hugging Face's order, from the recorded heads */
	lora_adapter *r = NULL;
	CHECK(lora_gguflora_read(&r, P("perm.gguf"), NULL, 0, &e) == 0, "read: %s", e.msg);
	if (r) {
		CHECK(r->nlayers == 3 && !strcmp(r->layers[1].name, "model.layers.0.self_attn.k_proj"), "names");
		for (size_t i = 0; i < 3; i++)
			CHECK(!memcmp(r->layers[i].B, a->layers[i].B, a->layers[i].out * sizeof(float)), "layer %zu B", i);
		lora_adapter_free(r);
	}
	/* heads that do not split the rows */
	b = (lora_gguflora_base){"llama", 3, 1};
	CHECK(lora_gguflora_write(a, P("bad.gguf"), &b, 0, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "model.layers.0.self_attn.q_proj: 8 rows do not split into 3 heads of even size"),
	      "odd heads: %s", e.msg);
	b = (lora_gguflora_base){"llama", 0, 0};
	CHECK(lora_gguflora_write(a, P("bad.gguf"), &b, 0, &e) == LORA_EINVAL && strstr(e.msg, "head counts are needed"),
	      "no heads: %s", e.msg);
	lora_adapter_free(a);
}

/* alpha 4 at rank 2 twice, alpha 6 at rank 2 once: adapter.lora.alpha 4,
 * the third layer's B x 1.5 in f32; f16 factors come back exactly. */
static void test_fold(void)
{
	lora_adapter *a = lora_adapter_new();
	a->dtype = LORA_F16;
	layer(a, "model.layers.0.self_attn.v_proj", 4, 2, 2, 4);
	layer(a, "model.layers.1.self_attn.v_proj", 4, 2, 2, 4);
	lora_layer *l = layer(a, "model.layers.2.self_attn.v_proj", 4, 2, 2, 6);
	l->B[1] = 0.1f; /* not exact in f16: the adapter holds f16 values */
	l->B[1] = lora_dtype_f16_to_f32(lora_dtype_f32_to_f16(0.1f));
	lora_gguflora_base b = {"llama", 2, 2};
	lora_err e = {0};
	CHECK(lora_gguflora_write(a, P("fold.gguf"), &b, 0, &e) == 0, "write: %s", e.msg);
	lora_gguf *g = NULL;
	if (lora_gguf_open(&g, P("fold.gguf"), &e) == 0) {
		double alpha;
		CHECK(!lora_gguf_kv_float(lora_gguf_kv_find(g, "adapter.lora.alpha"), 0, &alpha) && alpha == 4, "alpha %g",
		      alpha);
		CHECK(lora_gguf_find(g, "blk.2.attn_v.weight.lora_b")->type == LORA_GGML_F32, "folded lora_b in f32");
		CHECK(lora_gguf_find(g, "blk.1.attn_v.weight.lora_b")->type == LORA_GGML_F16, "others in f16");
		CHECK(tval(g, "blk.2.attn_v.weight.lora_b", 2) == 1.5f * 1 && tval(g, "blk.2.attn_v.weight.lora_b", 3) == 151.5f,
		      "B x 1.5");
		CHECK(tval(g, "blk.2.attn_v.weight.lora_b", 1) == (float)(1.5 * (double)l->B[1]), "B x 1.5 in double, to f32");
		lora_gguf_close(g);
	}
	lora_adapter *r = NULL;
	CHECK(lora_gguflora_read(&r, P("fold.gguf"), NULL, 0, &e) == 0, "read: %s", e.msg);
	if (r) {
		CHECK(r->dtype == LORA_F16 && r->layers[2].alpha == 6 && r->layers[0].alpha == 4, "dtype and alphas");
		CHECK(!memcmp(r->layers[2].B, l->B, 8 * sizeof(float)), "folded B back exactly");
		lora_adapter_free(r);
	}
	lora_adapter_free(a);
	/* rsLoRA at one rank: no fold, adapter.lora.alpha = alpha sqrt(r) */
	a = lora_adapter_new();
	a->rslora = 1;
	layer(a, "model.layers.0.mlp.up_proj", 4, 2, 4, 8);
	CHECK(lora_gguflora_write(a, P("rs.gguf"), &b, 0, &e) == 0, "write: %s", e.msg);
	if (lora_gguf_open(&g, P("rs.gguf"), &e) == 0) {
		double alpha;
		CHECK(!lora_gguf_kv_float(lora_gguf_kv_find(g, "adapter.lora.alpha"), 0, &alpha) && alpha == 16, "rs alpha %g",
		      alpha);
		lora_gguf_close(g);
	}
	lora_adapter_free(a);
}

/* A file as convert_lora_to_gguf.py writes it: no lora.* keys. */
static void upstream(const char *name, const char *arch, const char *type, double alpha, const char *an,
                     const char *bn, uint32_t btype, float bad)
{
	lora_gguf_kvspec kv[] = {
		{.key = "general.architecture", .type = LORA_GGUF_STRING, .v.s = arch},
		{.key = "general.type", .type = LORA_GGUF_STRING, .v.s = type},
		{.key = "adapter.type", .type = LORA_GGUF_STRING, .v.s = "lora"},
		{.key = "adapter.lora.alpha", .type = LORA_GGUF_F32, .v.f = alpha},
	};
	lora_gguf_spec t[] = {{an, LORA_GGML_F32, 2, {2, 1}}, {bn, btype, 2, {btype == LORA_GGML_F32 ? 1 : 2, 8}}};
	float A[2] = {1, 1}, B[16] = {0, 2, 1, 3, 4, 6, 5, 7};
	B[3] = bad == 0 ? B[3] : bad;
	lora_gguf_writer *w;
	lora_err e = {0};
	int rc = lora_gguf_writer_open(&w, P(name), kv, alpha < 0 ? 3 : 4, t, 2, 1, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, A, sizeof A, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, B, 32, &e);
	rc = rc ? rc : lora_gguf_writer_commit(w, &e);
	CHECK(rc == 0, "%s: %s", name, e.msg);
}

static void read_err(int line, const char *name, const lora_gguflora_base *b, const char *want)
{
	lora_adapter *r = NULL;
	lora_err e = {0};
	char full[8400];
	snprintf(full, sizeof full, "%s: %s", P(name), want);
	int rc = lora_gguflora_read(&r, P(name), b, 0, &e);
	CHECK(rc != 0 && r == NULL && !strcmp(e.msg, full), "line %d:\n  got  '%s'\n  want '%s'", line, e.msg, full);
	lora_adapter_free(r);
}
#define READ_ERR(name, b, want) read_err(__LINE__, name, b, want)

static void test_upstream(void)
{
	const char *an = "blk.0.attn_q.weight.lora_a", *bn = "blk.0.attn_q.weight.lora_b";
	lora_gguflora_base b = {"llama", 2, 2}, q = {"qwen2", 2, 2};
	lora_adapter *r = NULL;
	lora_err e = {0};
	upstream("up.gguf", "llama", "adapter", 16, an, bn, LORA_GGML_F32, 0);
	READ_ERR("up.gguf", NULL,
	         "blk.0.attn_q.weight.lora_b: the base model's head counts are needed to permute its rows for llama.cpp's rotary embedding");
	READ_ERR("up.gguf", &q, "the adapter is for architecture 'llama', the model is 'qwen2'");
	CHECK(lora_gguflora_read(&r, P("up.gguf"), NULL, 1, &e) == 0, "header only needs no heads: %s", e.msg);
	if (r) {
		CHECK(r->nlayers == 1 && r->layers[0].alpha == 16 && !r->rslora && r->ntargets == 1 &&
		          !strcmp(r->targets[0], "q_proj") && !r->layers[0].B,
		      "header: alpha from adapter.lora.alpha, targets derived");
		lora_adapter_free(r);
	}
	CHECK(lora_gguflora_read(&r, P("up.gguf"), &b, 0, &e) == 0, "with heads: %s", e.msg);
	if (r) {
		for (int i = 0; i < 8; i++)
			CHECK(r->layers[0].B[i] == i, "row %d back in Hugging Face's order", i);
		CHECK(r->dtype == LORA_F32 && r->layers[0].rank == 1 && r->layers[0].out == 8 && r->layers[0].in == 2, "shape");
		lora_adapter_free(r);
	}
	/* no adapter.lora.alpha: llama.cpp scales by 1, so alpha = rank */
	upstream("noalpha.gguf", "qwen2", "adapter", -1, an, bn, LORA_GGML_F32, 0);
	CHECK(lora_gguflora_read(&r, P("noalpha.gguf"), NULL, 0, &e) == 0, "qwen2: %s", e.msg);
	if (r) {
		CHECK(r->layers[0].alpha == 1 && r->layers[0].B[1] == 2, "alpha = rank, rows as stored");
		lora_adapter_free(r);
	}
	upstream("model.gguf", "llama", "model", 16, an, bn, LORA_GGML_F32, 0);
	READ_ERR("model.gguf", &b, "general.type is 'model', not 'adapter': not a LoRA adapter");
	upstream("phi.gguf", "phi3", "adapter", 16, an, bn, LORA_GGML_F32, 0);
	READ_ERR("phi.gguf", &b, "general.architecture 'phi3' is not supported (llama, qwen2)");
	upstream("norm.gguf", "llama", "adapter", 16, an, "blk.0.attn_norm.weight", LORA_GGML_F32, 0);
	READ_ERR("norm.gguf", &b, "tensor 'blk.0.attn_norm.weight' is not a LoRA factor (.weight.lora_a or .lora_b)");
	upstream("pair.gguf", "llama", "adapter", 16, an, "blk.1.attn_q.weight.lora_b", LORA_GGML_F32, 0);
	READ_ERR("pair.gguf", &b, "tensor 'blk.1.attn_q.weight.lora_b' has no blk.1.attn_q.weight.lora_a");
	upstream("embd.gguf", "llama", "adapter", 16, "token_embd.weight.lora_a", "token_embd.weight.lora_b",
	         LORA_GGML_F32, 0);
	READ_ERR("embd.gguf", &b,
	         "tensor 'token_embd.weight.lora_a': only the attn_q/k/v/output and ffn_gate/up/down tensors of blk.N are read");
	upstream("rank.gguf", "llama", "adapter", 16, an, bn, LORA_GGML_F16, 0);
	READ_ERR("rank.gguf", &b,
	         "tensor 'blk.0.attn_q.weight.lora_a': ne {2, 1} has rank 1, its lora_b ne {2, 8} rank 2");
	upstream("nan.gguf", "llama", "adapter", 16, an, bn, LORA_GGML_F32, NAN);
	READ_ERR("nan.gguf", &b, "tensor 'blk.0.attn_q.weight.lora_b': element 3 is not finite");
	upstream("alpha.gguf", "llama", "adapter", INFINITY, an, bn, LORA_GGML_F32, 0);
	READ_ERR("alpha.gguf", &b, "adapter.lora.alpha is not a finite f32");
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/test_gguflora.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	test_permutation();
	test_fold();
	test_upstream();
	char cmd[4300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;
	DONE();
}
