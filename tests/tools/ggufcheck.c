/* ggufcheck: look inside a GGUF model independently of lib/'s writer, for
 * tests.
 *
 *   ggufcheck kv FILE.gguf
 *       every key-value pair, one a line: "key type value"; an array as
 *       "key arr[type] N fnv64" (FNV-1a over its elements' bytes as stored).
 *   ggufcheck cmp FILE.gguf MERGED [HEADS KV_HEADS]
 *       every tensor of MERGED (a Hugging Face checkpoint) against the
 *       GGUF's: the name convert_hf_to_gguf gives it, ne its shape
 *       reversed, rows of q_proj and k_proj reordered as LlamaModel.permute
 *       does when HEADS is given (llama), f32 bytes equal, f16 and bf16
 *       equal to MERGED's values rounded, q8_0 blocks equal to ggml's
 *       quantize_row_q8_0_ref computed here. Prints rope_freqs.weight's
 *       values when there is one, then "ok N tensors (T)" with the types
 *       of the others, or the first mismatch; exit 0 or 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "io/ckpt.h"
#include "io/gguf.h"

static int kv(const lora_gguf *g)
{
	for (size_t i = 0; i < g->nkv; i++) {
		const lora_gguf_kv *k = &g->kv[i];
		if (k->type == LORA_GGUF_ARRAY) {
			uint64_t h = 0xcbf29ce484222325u;
			for (size_t j = 0; j < k->n; j++) {
				const unsigned char *p;
				size_t n;
				if (k->elem == LORA_GGUF_STRING) {
					p = k->str[j], n = k->len[j];
					for (size_t b = 0; b < 8; b++) /* the length too, so "a","bc" != "ab","c" */
						h = (h ^ ((n >> (8 * b)) & 255)) * 0x100000001b3u;
				} else {
					size_t es = k->elem == LORA_GGUF_F64 || k->elem == LORA_GGUF_U64 || k->elem == LORA_GGUF_I64 ? 8
					            : k->elem == LORA_GGUF_U16 || k->elem == LORA_GGUF_I16                           ? 2
					            : k->elem == LORA_GGUF_U32 || k->elem == LORA_GGUF_I32 || k->elem == LORA_GGUF_F32 ? 4
					                                                                                               : 1;
					p = k->data + j * es, n = es;
				}
				for (size_t b = 0; b < n; b++)
					h = (h ^ p[b]) * 0x100000001b3u;
			}
			printf("%s arr[%s] %zu %016llx\n", k->key, lora_gguf_type_name(k->elem), k->n, (unsigned long long)h);
			continue;
		}
		uint64_t u;
		double f;
		int b;
		const char *str;
		size_t len;
		printf("%s %s ", k->key, lora_gguf_type_name(k->type));
		if (!lora_gguf_kv_str(k, 0, &str, &len))
			for (size_t c = 0; c < len; c++) /* one line: newlines and backslashes escaped */
				printf(str[c] == '\n' ? "\\n" : str[c] == '\\' ? "\\\\" : "%c", str[c]);
		else if (!lora_gguf_kv_bool(k, 0, &b))
			printf("%s", b ? "true" : "false");
		else if (!lora_gguf_kv_uint(k, 0, &u))
			printf("%llu", (unsigned long long)u);
		else if (!lora_gguf_kv_float(k, 0, &f))
			printf("%.9g", f);
		printf("\n");
	}
	return 0;
}

/* convert_hf_to_gguf's names, written out here again. */
static int gguf_name(const char *hf, char *out, int *rope)
{
	static const char *const map[][2] = {
	    {"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
	    {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"},
	    {"mlp.down_proj", "ffn_down"},    {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"},
	};
	unsigned b;
	char rest[200], kind[16];
	*rope = 0;
	if (!strcmp(hf, "model.embed_tokens.weight"))
		return strcpy(out, "token_embd.weight"), 0;
	if (!strcmp(hf, "model.norm.weight"))
		return strcpy(out, "output_norm.weight"), 0;
	if (!strcmp(hf, "lm_head.weight"))
		return strcpy(out, "output.weight"), 0;
	if (sscanf(hf, "model.layers.%u.%199s", &b, rest) != 2)
		return -1;
	char *dot = strrchr(rest, '.');
	if (!dot)
		return -1;
	snprintf(kind, sizeof kind, "%s", dot + 1);
	*dot = 0;
	for (size_t i = 0; i < sizeof map / sizeof *map; i++)
		if (!strcmp(rest, map[i][0])) {
			sprintf(out, "blk.%u.%s.%s", b, map[i][1], kind);
			*rope = i == 0 ? 1 : i == 1 ? 2 : 0;
			return 0;
		}
	return -1;
}

static int cmp(const lora_gguf *g, const lora_ckpt *m, size_t heads, size_t kv_heads)
{
	size_t n = 0;
	int seen[64] = {0};
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		char name[128];
		int rope;
		if (gguf_name(t->name, name, &rope)) {
			printf("%s: no GGUF name\n", t->name);
			return 1;
		}
		const lora_gguf_tensor *q = lora_gguf_find(g, name);
		if (!q) {
			printf("%s: no tensor %s in the GGUF\n", t->name, name);
			return 1;
		}
		if (q->ndim != t->ndim) {
			printf("%s: %zu dimensions, %zu in the GGUF\n", t->name, t->ndim, q->ndim);
			return 1;
		}
		for (size_t d = 0; d < t->ndim; d++)
			if (q->ne[d] != t->shape[t->ndim - 1 - d]) {
				printf("%s: ne[%zu] is %llu, want %zu\n", t->name, d, (unsigned long long)q->ne[d],
				       t->shape[t->ndim - 1 - d]);
				return 1;
			}
		size_t rows = t->shape[0], cols = t->nelem / rows, h = rope == 1 ? heads : rope == 2 ? kv_heads : 0;
		float *src = malloc(t->nelem * 4), *want = malloc(t->nelem * 4);
		lora_dtype_to_f32(src, t->data, t->dtype, t->nelem);
		/* LlamaModel.permute: w.reshape(h, 2, rows/h/2, cols).swapaxes(1, 2) */
		for (size_t r = 0; r < rows; r++) {
			size_t from = r;
			if (h) {
				size_t hd = rows / h, hh = r / hd, j = (r % hd) / 2, two = r % 2;
				from = hh * hd + two * (hd / 2) + j;
			}
			memcpy(want + r * cols, src + from * cols, cols * 4);
		}
		int bad = 0;
		if (q->type == LORA_GGML_Q8_0) {
			const unsigned char *y = q->data;
			for (size_t b = 0; b < t->nelem / 32 && !bad; b++, y += 34) {
				float amax = 0;
				for (int k = 0; k < 32; k++)
					amax = fmaxf(amax, fabsf(want[b * 32 + k]));
				float d = amax / 127, id = d ? 1 / d : 0;
				unsigned char blk[34];
				uint16_t hb;
				lora_dtype_from_f32(&hb, &d, LORA_F16, 1);
				blk[0] = (unsigned char)hb, blk[1] = (unsigned char)(hb >> 8);
				for (int k = 0; k < 32; k++)
					blk[2 + k] = (unsigned char)(signed char)roundf(want[b * 32 + k] * id);
				if (memcmp(blk, y, 34))
					bad = 1, printf("%s: q8_0 block %zu differs\n", t->name, b);
			}
		} else {
			lora_dtype dt;
			if (lora_gguf_dtype_of(q->type, &dt)) {
				printf("%s: ggml type %u\n", t->name, q->type);
				return 1;
			}
			unsigned char *wb = malloc(t->nelem * 4);
			lora_dtype_from_f32(wb, want, dt, t->nelem);
			if (memcmp(wb, q->data, t->nelem * lora_dtype_size(dt)))
				bad = 1, printf("%s: values differ\n", t->name);
			free(wb);
		}
		free(src);
		free(want);
		if (bad)
			return 1;
		seen[q->type & 63] = 1;
		n++;
	}
	const lora_gguf_tensor *rf = lora_gguf_find(g, "rope_freqs.weight");
	if (rf && rf->type == LORA_GGML_F32 && rf->ndim == 1) {
		printf("rope_freqs.weight:");
		for (size_t k = 0; k < rf->nelem; k++) {
			float v;
			memcpy(&v, (const unsigned char *)rf->data + 4 * k, 4);
			printf(" %.9g", v);
		}
		printf("\n");
		n++;
	}
	if (n != g->ntensors) {
		printf("the GGUF has %zu tensors, %s %zu\n", g->ntensors, m->path, n);
		return 1;
	}
	printf("ok %zu tensors (", n);
	for (int k = 0, first = 1; k < 64; k++)
		if (seen[k])
			printf("%s%s", first ? "" : " ", lora_gguf_ggml_name((uint32_t)k)), first = 0;
	printf(")\n");
	return 0;
}

int main(int argc, char **argv)
{
	lora_gguf *g = NULL;
	lora_ckpt *m = NULL;
	lora_err e;
	int rc;
	if (argc < 3 || (strcmp(argv[1], "kv") && strcmp(argv[1], "cmp")) || (!strcmp(argv[1], "cmp") && argc < 4)) {
		fprintf(stderr, "usage: ggufcheck kv FILE.gguf | cmp FILE.gguf MERGED [HEADS KV_HEADS]\n");
		return 2;
	}
	if (lora_gguf_open(&g, argv[2], &e) || (argc > 3 && lora_ckpt_open(&m, argv[3], &e))) {
		fprintf(stderr, "ggufcheck: %s\n", e.msg);
		lora_gguf_close(g);
		return 2;
	}
	if (!strcmp(argv[1], "kv"))
		rc = kv(g);
	else
		rc = cmp(g, m, argc > 5 ? strtoul(argv[4], NULL, 10) : 0, argc > 5 ? strtoul(argv[5], NULL, 10) : 0);
	lora_gguf_close(g);
	lora_ckpt_close(m);
	return rc;
}
