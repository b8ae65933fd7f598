#include "model/ggufmeta.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/path.h"
#include "io/gguflora.h"
#include "text/tokenizer.h"

#define MAX_KV 48

/* gguf-py's TokenType */
enum { T_NORMAL = 1, T_UNKNOWN, T_CONTROL, T_USER_DEFINED, T_UNUSED, T_BYTE };
/* gguf-py's LlamaFileType */
enum { FT_F32 = 0, FT_F16 = 1, FT_Q8_0 = 7, FT_BF16 = 32 };

struct lora_ggufmeta {
	lora_gguf_kvspec kv[MAX_KV];
	size_t nkv;
	char keys[MAX_KV][64];
	const char *arch;
	lora_tokenizer *tok;
	const char **tokens, **merges;
	float *scores;
	int32_t *types;
	char **owned; /* strings made here */
	size_t nowned;
	char *chat, *name;
	float *rope_freqs; /* llama3 RoPE: rope_freqs.weight */
	size_t nrope;
};

static lora_gguf_kvspec *put(lora_ggufmeta *g, const char *key, lora_gguf_type type)
{
	lora_gguf_kvspec *kv = &g->kv[g->nkv];
	/* keys under the architecture start with '.' here */
	snprintf(g->keys[g->nkv], sizeof g->keys[g->nkv], "%s%s", key[0] == '.' ? g->arch : "", key);
	*kv = (lora_gguf_kvspec){.key = g->keys[g->nkv], .type = type, .elem = type};
	g->nkv++;
	return kv;
}

static void put_u32(lora_ggufmeta *g, const char *key, uint64_t v) { put(g, key, LORA_GGUF_U32)->v.u = v; }
static void put_f32(lora_ggufmeta *g, const char *key, double v) { put(g, key, LORA_GGUF_F32)->v.f = v; }
static void put_str(lora_ggufmeta *g, const char *key, const char *s) { put(g, key, LORA_GGUF_STRING)->v.s = s; }
static void put_bool(lora_ggufmeta *g, const char *key, int v) { put(g, key, LORA_GGUF_BOOL)->v.u = (uint64_t)v; }

static void put_arr(lora_ggufmeta *g, const char *key, lora_gguf_type elem, const void *arr, size_t n)
{
	lora_gguf_kvspec *kv = put(g, key, LORA_GGUF_ARRAY);
	kv->elem = elem;
	kv->n = n;
	kv->v.arr = arr;
}

/* A string kept until g is freed, or NULL. */
static char *own(lora_ggufmeta *g, char *s)
{
	char **o = s ? realloc(g->owned, (g->nowned + 1) * sizeof *o) : NULL;
	if (!o) {
		free(s);
		return NULL;
	}
	g->owned = o;
	return o[g->nowned++] = s;
}

/* s with every occurrence of from replaced by to. */
static char *replace(const char *s, size_t n, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to), k = 0;
	char *out = malloc(n * (tl > fl ? tl : fl) + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;)
		if (i + fl <= n && !memcmp(s + i, from, fl))
			memcpy(out + k, to, tl), k += tl, i += fl;
		else
			out[k++] = s[i++];
	out[k] = 0;
	return out;
}

/* convert_hf_to_gguf's does_token_look_special. */
static int looks_special(const char *s, size_t n)
{
	static const char *const names[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		if (!strcmp(s, names[i]))
			return 1;
#define ENDS(a, b) (n >= strlen(a) + strlen(b) && !strncmp(s, a, strlen(a)) && !strcmp(s + n - strlen(b), b))
	return ENDS("<|", "|>") || ENDS("<\xef\xbd\x9c", "\xef\xbd\x9c>") || ENDS("<unused", ">");
#undef ENDS
}

static int is_byte_token(const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdefABCDEF";
	return n == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && s[3] && s[4] && strchr(hex, s[3]) && strchr(hex, s[4]);
}

/* SentencePiece scores: llama.cpp's "llama" tokenizer joins, again and
 * again, the adjacent pair whose joined text is the token of highest
 * score. So that it joins what the BPE merges would, in their order, a
 * token a merge makes scores minus the rank of the first merge making it,
 * other text tokens (single characters, and what no merge makes) score
 * below every merge, bytes and special tokens 0 as in SentencePiece.
 * (convert_hf_to_gguf's LlamaHfVocab gives every token -1000, which
 * leaves llama.cpp joining leftmost pairs first: "Hello" came out as other
 * tokens than the library's.) */
#define UNREACHED -1e9f

static int spm_scores(lora_ggufmeta *g, size_t vocab, lora_err *e)
{
	uint32_t *m = NULL;
	size_t n = 0;
	int rc = lora_tokenizer_merges(g->tok, &m, &n, e);
	for (size_t id = 0; id < vocab; id++) {
		size_t len;
		unsigned fl;
		const char *s = lora_tokenizer_token(g->tok, (uint32_t)id, &len, &fl);
		g->scores[id] = s && !(fl & LORA_TOKENIZER_SPECIAL) && !is_byte_token(s, len) ? UNREACHED : 0.0f;
	}
	for (size_t i = n; i-- > 0 && !rc;)
		if (m[3 * i + 2] < vocab)
			g->scores[m[3 * i + 2]] = -(float)i;
	free(m);
	return rc;
}

/* The tokens, their types and (SentencePiece) scores, ids 0 to vocab - 1. */
static int vocab_tokens(lora_ggufmeta *g, size_t vocab, int bytelevel, const char *path, lora_err *e)
{
	int rc;
	if (!(g->tokens = calloc(vocab, sizeof *g->tokens)) || !(g->types = calloc(vocab, sizeof *g->types)) ||
	    !(g->scores = calloc(vocab, sizeof *g->scores)))
		return lora_err_nomem(e);
	if (!bytelevel && (rc = spm_scores(g, vocab, e)))
		return rc;
	for (size_t id = 0; id < vocab; id++) {
		size_t n;
		unsigned fl;
		const char *s = lora_tokenizer_token(g->tok, (uint32_t)id, &n, &fl);
		if (!s) {
			char pad[32];
			snprintf(pad, sizeof pad, "[PAD%zu]", id);
			if (!(s = own(g, strdup(pad))))
				return lora_err_nomem(e);
			g->types[id] = T_UNUSED;
		} else if (strlen(s) != n) {
			return lora_err_set(e, LORA_EFORMAT, "%s: token %zu holds a NUL byte, which GGUF strings cannot", path,
			                    id);
		} else if (!bytelevel) {
			g->types[id] = is_byte_token(s, n) ? T_BYTE
			               : fl & LORA_TOKENIZER_SPECIAL ? T_CONTROL
			               : (fl & LORA_TOKENIZER_ADDED) && !(fl & LORA_TOKENIZER_IN_MODEL)
			                   ? T_USER_DEFINED
			                   : T_NORMAL;
		} else if (!(fl & LORA_TOKENIZER_ADDED)) {
			g->types[id] = T_NORMAL;
		} else if ((fl & LORA_TOKENIZER_SPECIAL) || looks_special(s, n)) {
			g->types[id] = T_CONTROL;
		} else {
			g->types[id] = T_USER_DEFINED;
			if (!(s = own(g, replace(s, n, "\xe2\x96\x81", " "))))
				return lora_err_nomem(e);
		}
		g->tokens[id] = s;
	}
	put_arr(g, "tokenizer.ggml.tokens", LORA_GGUF_STRING, g->tokens, vocab);
	if (!bytelevel)
		put_arr(g, "tokenizer.ggml.scores", LORA_GGUF_F32, g->scores, vocab);
	put_arr(g, "tokenizer.ggml.token_type", LORA_GGUF_I32, g->types, vocab);
	return 0;
}

/* "a b" per merge, a space inside a token written U+0120 (gguf-py's
 * SpecialVocab, for merges given as pairs). */
static int vocab_merges(lora_ggufmeta *g, lora_err *e)
{
	uint32_t *pairs = NULL;
	size_t n = 0;
	int rc = lora_tokenizer_merges(g->tok, &pairs, &n, e);
	if (rc)
		return rc;
	if (!(g->merges = calloc(n + 1, sizeof *g->merges)))
		rc = lora_err_nomem(e);
	for (size_t i = 0; i < n && !rc; i++) {
		size_t an, bn;
		unsigned fl;
		const char *a = lora_tokenizer_token(g->tok, pairs[3 * i], &an, &fl);
		const char *b = lora_tokenizer_token(g->tok, pairs[3 * i + 1], &bn, &fl);
		char *ab = malloc(an + bn + 2), *m = NULL;
		if (ab) {
			memcpy(ab, a, an);
			ab[an] = 0;
			char *x = replace(ab, an, " ", "\xc4\xa0"), *y = replace(b, bn, " ", "\xc4\xa0");
			if (x && y && (m = malloc(strlen(x) + strlen(y) + 2)))
				sprintf(m, "%s %s", x, y);
			free(x);
			free(y);
			free(ab);
		}
		if (!(g->merges[i] = own(g, m)))
			rc = lora_err_nomem(e);
	}
	free(pairs);
	if (!rc)
		put_arr(g, "tokenizer.ggml.merges", LORA_GGUF_STRING, g->merges, n);
	return rc;
}

/* llama.cpp's pre-tokenizer for the byte-level pipeline (see the header). */
static const char *pre_name(const lora_tokenizer *t)
{
	static const char llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
	                             "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
	static const char qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
	                            "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
	size_t n = lora_tokenizer_pre_count(t);
	const char *re0, *re1, *k0 = n ? lora_tokenizer_pre_step(t, 0, &re0) : "";
	const char *k1 = n > 1 ? lora_tokenizer_pre_step(t, 1, &re1) : "";
	if (n == 2 && !strcmp(k0, "Split") && !strcmp(k1, "ByteLevel"))
		return !strcmp(re0, llama3) ? "llama-bpe" : !strcmp(re0, qwen2) ? "qwen2" : NULL;
	if (n == 1 && !strcmp(k0, "ByteLevel"))
		return "gpt-2";
	if (n == 2 && !strcmp(k0, "Digits") && !strcmp(k1, "ByteLevel"))
		return "smollm";
	return NULL;
}

static const char *token_content(const cJSON *v)
{
	if (cJSON_IsObject(v))
		v = cJSON_GetObjectItemCaseSensitive(v, "content");
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The first SpecialToken id of a TemplateProcessing "single" at its start
 * (last = 0) or end (last = 1), or NULL. */
static const char *template_end(const cJSON *single, int last)
{
	int n = cJSON_GetArraySize(single);
	if (n < 2)
		return NULL;
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, last ? n - 1 : 0), "SpecialToken");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(st, "id");
	return cJSON_IsString(id) ? id->valuestring : NULL;
}

/* gguf-py's SpecialVocab: special ids, add_bos/add_eos, chat template. */
static int special_vocab(lora_ggufmeta *g, const lora_ckpt *m, const cJSON *tj, size_t vocab, lora_err *e)
{
	static const char *const types[] = {"bos", "eos", "unk", "sep", "pad"};
	cJSON *tc = NULL, *cfg = NULL;
	char *p = lora_path_join(m->dir, "tokenizer_config.json");
	int rc = 0, set[5] = {0}, add[5] = {-1, -1, -1, -1, -1};
	uint64_t id[5] = {0};
	if (!p)
		return lora_err_nomem(e);
	if (lora_path_exists(p) && (rc = lora_json_read_file(&tc, p, 0, e)))
		goto out;
	if (m->config_path && (rc = lora_json_read_file(&cfg, m->config_path, 0, e)))
		goto out;
	const cJSON *pp = cJSON_GetObjectItemCaseSensitive(tj, "post_processor");
	const cJSON *procs = cJSON_GetObjectItemCaseSensitive(pp, "processors");
	const char *bos = tc ? token_content(cJSON_GetObjectItemCaseSensitive(tc, "bos_token")) : NULL;
	const char *eos = tc ? token_content(cJSON_GetObjectItemCaseSensitive(tc, "eos_token")) : NULL;
	/* gguf-py reads a TemplateProcessing's leading special token as BOS
	 * added, its trailing one as EOS added (and as the EOS token, when
	 * tokenizer_config names another). */
	for (int i = 0; pp && i < (cJSON_IsArray(procs) ? cJSON_GetArraySize(procs) : 1); i++) {
		const cJSON *proc = cJSON_IsArray(procs) ? cJSON_GetArrayItem(procs, i) : pp;
		const cJSON *ty = cJSON_GetObjectItemCaseSensitive(proc, "type");
		if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "TemplateProcessing"))
			continue;
		const cJSON *single = cJSON_GetObjectItemCaseSensitive(proc, "single");
		const char *first = template_end(single, 0), *last = template_end(single, 1);
		if (first)
			add[0] = !tc || (bos && !strcmp(first, bos));
		if (last) {
			add[1] = 1;
			eos = last;
		}
	}
	const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens"), *a;
	for (int k = 0; k < 5 && tc; k++) {
		char key[32];
		snprintf(key, sizeof key, "add_%s_token", types[k]);
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(tc, key);
		if (cJSON_IsBool(b))
			add[k] = cJSON_IsTrue(b);
		snprintf(key, sizeof key, "%s_token", types[k]);
		const char *c = k == 1 ? eos : token_content(cJSON_GetObjectItemCaseSensitive(tc, key));
		if (!c)
			continue;
		cJSON_ArrayForEach(a, added) {
			const char *ac = token_content(a);
			size_t v;
			if (ac && !strcmp(ac, c) && !lora_json_size(cJSON_GetObjectItemCaseSensitive(a, "id"), &v)) {
				if (v < vocab)
					id[k] = v, set[k] = 1;
				break;
			}
		}
	}
	for (int k = 0; k < 5 && cfg; k++) {
		char key[32];
		size_t v;
		snprintf(key, sizeof key, "%s_token_id", types[k]);
		if (!set[k] && !lora_json_size(cJSON_GetObjectItemCaseSensitive(cfg, key), &v) && v < vocab)
			id[k] = v, set[k] = 1;
	}
	for (int k = 0; k < 5; k++) {
		char key[64];
		snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", types[k] + 0);
		if (!strcmp(types[k], "sep"))
			snprintf(key, sizeof key, "tokenizer.ggml.seperator_token_id"); /* gguf-py's spelling */
		else if (!strcmp(types[k], "pad"))
			snprintf(key, sizeof key, "tokenizer.ggml.padding_token_id");
		else if (!strcmp(types[k], "unk"))
			snprintf(key, sizeof key, "tokenizer.ggml.unknown_token_id");
		if (set[k])
			put_u32(g, key, id[k]);
	}
	for (int k = 0; k < 4; k += k ? 2 : 1) /* gguf-py writes add_bos, add_eos and add_sep */
		if (add[k] >= 0) {
			char key[64];
			snprintf(key, sizeof key, "tokenizer.ggml.add_%s_token", types[k]);
			put_bool(g, key, add[k]);
		}
	const cJSON *ct = tc ? cJSON_GetObjectItemCaseSensitive(tc, "chat_template") : NULL;
	if (ct && !cJSON_IsNull(ct) && !cJSON_IsString(ct)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: chat_template: only a single template (a string) is supported", p);
		goto out;
	}
	if (cJSON_IsString(ct)) {
		if (!(g->chat = strdup(ct->valuestring))) {
			rc = lora_err_nomem(e);
			goto out;
		}
	} else if (tc) {
		char *jp = lora_path_join(m->dir, "chat_template.jinja");
		size_t len;
		if (!jp)
			rc = lora_err_nomem(e);
		else if (lora_path_exists(jp))
			rc = lora_json_slurp(&g->chat, &len, jp, 0, e);
		free(jp);
		if (rc)
			goto out;
	}
	if (g->chat)
		put_str(g, "tokenizer.chat_template", g->chat);
out:
	cJSON_Delete(tc);
	cJSON_Delete(cfg);
	free(p);
	return rc;
}

static int tokenizer_keys(lora_ggufmeta *g, const lora_config *c, const lora_ckpt *m, lora_err *e)
{
	cJSON *tj = NULL;
	char *p = lora_path_join(m->dir, "tokenizer.json");
	int rc = 0;
	if (!p)
		return lora_err_nomem(e);
	if (!lora_path_exists(p)) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: no tokenizer.json: a GGUF model carries its tokenizer", m->dir);
		goto out;
	}
	if ((rc = lora_tokenizer_open(&g->tok, p, e)) || (rc = lora_json_read_file(&tj, p, 0, e)))
		goto out;
	size_t vocab = c->vocab_size, have = lora_tokenizer_vocab_size(g->tok);
	if (have > vocab) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: token id %zu is past the model's vocab_size %zu", p, have - 1, vocab);
		goto out;
	}
	int bytelevel = lora_tokenizer_byte_level(g->tok);
	const char *pre = bytelevel ? pre_name(g->tok) : "default";
	if (!pre) {
		rc = lora_err_set(e, LORA_EFORMAT,
		                  "%s: pre_tokenizer: not one llama.cpp knows (Llama 3's, Qwen2's, GPT-2's or SmolLM's)", p);
		goto out;
	}
	put_str(g, "tokenizer.ggml.model", bytelevel ? "gpt2" : "llama");
	put_str(g, "tokenizer.ggml.pre", pre);
	if ((rc = vocab_tokens(g, vocab, bytelevel, p, e)) || (bytelevel && (rc = vocab_merges(g, e))))
		goto out;
	rc = special_vocab(g, m, tj, vocab, e);
out:
	cJSON_Delete(tj);
	free(p);
	return rc;
}

/* Llama 3's RoPE scaling, as convert_hf_to_gguf writes it: per rotary
 * frequency the factor llama.cpp divides it by (rope_freqs.weight): 1 for
 * short wavelengths, the factor for long ones, in between the inverse of
 * transformers' interpolation. Computed in f32 as the converter's torch
 * code does (original_max_position_embeddings: rope_scaling's, where
 * transformers reads it; the converter's default, 8192, is the value real
 * Llama 3 configs give). */
static int llama3_freqs(lora_ggufmeta *g, const lora_config *c, lora_err *e)
{
	size_t n = c->head_dim / 2;
	if (!(g->rope_freqs = calloc(n ? n : 1, sizeof *g->rope_freqs)))
		return lora_err_nomem(e);
	g->nrope = n;
	float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq, hi = (float)c->rope_high_freq;
	float old = (float)c->rope_orig_max, lo_wave = old / lo, hi_wave = old / hi;
	for (size_t i = 0; i < n; i++) {
		float freq = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
		float wave = 2.0f * (float)M_PI / freq;
		if (wave < hi_wave) {
			g->rope_freqs[i] = 1.0f;
		} else if (wave > lo_wave) {
			g->rope_freqs[i] = factor;
		} else {
			float smooth = (old / wave - lo) / (hi - lo);
			g->rope_freqs[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
		}
	}
	return 0;
}

int lora_ggufmeta_build(lora_ggufmeta **out, const lora_config *c, const lora_ckpt *m, int type, lora_err *e)
{
	lora_ggufmeta *g = calloc(1, sizeof *g);
	int rc = 0;
	*out = NULL;
	if (!g)
		return lora_err_nomem(e);
	if (!(g->arch = lora_gguflora_arch(c->model_type))) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: model_type '%s': GGUF is written for llama, mistral and qwen2",
		                  m->config_path ? m->config_path : m->path, c->model_type);
		goto out;
	}
	if (c->rope_type == LORA_ROPE_LLAMA3 && (rc = llama3_freqs(g, c, e)))
		goto out;
	if (type < 0) {
		const lora_st_tensor *t = lora_ckpt_find(m, "model.embed_tokens.weight");
		type = t ? lora_gguf_ggml_of(t->dtype) : LORA_GGML_F32;
	}
	if (!(g->name = strdup(m->name))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	put_str(g, "general.architecture", g->arch);
	put_str(g, "general.type", "model");
	put_str(g, "general.name", g->name);
	put_u32(g, "general.file_type", type == LORA_GGML_F16 ? FT_F16 : type == LORA_GGML_BF16 ? FT_BF16
	                                : type == LORA_GGML_Q8_0 ? FT_Q8_0 : FT_F32);
	put_u32(g, ".vocab_size", c->vocab_size);
	if (c->max_pos)
		put_u32(g, ".context_length", c->max_pos);
	put_u32(g, ".embedding_length", c->dim);
	put_u32(g, ".block_count", c->n_layers);
	put_u32(g, ".feed_forward_length", c->hidden_dim);
	put_u32(g, ".attention.head_count", c->n_heads);
	put_u32(g, ".attention.head_count_kv", c->n_kv_heads);
	put_f32(g, ".rope.freq_base", c->rope_theta);
	put_u32(g, ".rope.dimension_count", c->head_dim);
	put_f32(g, ".attention.layer_norm_rms_epsilon", c->rms_eps);
	if (c->rope_type == LORA_ROPE_LINEAR) {
		put_str(g, ".rope.scaling.type", "linear");
		put_f32(g, ".rope.scaling.factor", c->rope_factor);
	}
	rc = tokenizer_keys(g, c, m, e);
out:
	if (rc)
		lora_ggufmeta_free(g);
	else
		*out = g;
	return rc;
}

void lora_ggufmeta_free(lora_ggufmeta *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->nowned; i++)
		free(g->owned[i]);
	free(g->owned);
	free(g->tokens);
	free(g->merges);
	free(g->scores);
	free(g->types);
	free(g->chat);
	free(g->name);
	free(g->rope_freqs);
	lora_tokenizer_free(g->tok);
	free(g);
}

const lora_gguf_kvspec *lora_ggufmeta_kv(const lora_ggufmeta *g, size_t *n)
{
	*n = g->nkv;
	return g->kv;
}

const float *lora_ggufmeta_rope_freqs(const lora_ggufmeta *g, size_t *n)
{
	*n = g->nrope;
	return g->rope_freqs;
}

const char *lora_ggufmeta_arch(const lora_ggufmeta *g)
{
	return g->arch;
}
