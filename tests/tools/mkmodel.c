/* mkmodel: write a deterministic Llama-shaped Hugging Face model directory
 * (config.json plus model.safetensors, or shards and an index) for tests and
 * benchmarks. Tensors are generated and written one chunk at a time, so a
 * model of any size needs only a fixed amount of memory. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "fixture.h"
#include "core/json.h"
#include "core/outfile.h"
#include "core/rng.h"
#include "io/safetensors.h"

enum { O_HIDDEN = 256, O_INTER, O_LAYERS, O_HEADS, O_KV, O_VOCAB, O_DTYPE, O_SEED, O_TIED, O_NAME, O_SHARD, O_BIAS, O_SCALE };

static const lora_opt opts[] = {
	{O_HIDDEN, 0, "hidden", "N", "hidden size (default 64)", NULL},
	{O_INTER, 0, "inter", "N", "MLP intermediate size (default 128)", NULL},
	{O_LAYERS, 0, "layers", "N", "number of decoder layers (default 2)", NULL},
	{O_HEADS, 0, "heads", "N", "attention heads (default 4)", NULL},
	{O_KV, 0, "kv-heads", "N", "key/value heads (default: --heads)", NULL},
	{O_VOCAB, 0, "vocab", "N", "vocabulary size (default 256)", NULL},
	{O_DTYPE, 0, "dtype", "TYPE", "f32, f16 or bf16 (default f32)", "f32 f16 bf16"},
	{O_SEED, 0, "seed", "N", "random seed (default 1)", NULL},
	{O_TIED, 0, "tied", NULL, "tie lm_head to the embeddings (no lm_head.weight)", NULL},
	{O_BIAS, 0, "qkv-bias", NULL, "q/k/v projections with biases, model_type qwen2", NULL},
	{O_SCALE, 0, "init-scale", "S", "weights uniform in [-S, S) (default 0.05)", NULL},
	{O_NAME, 0, "name", "NAME", "_name_or_path in config.json (default tiny-llama)", NULL},
	{O_SHARD, 0, "shard-bytes", "N", "split into shards of about N bytes with an index", NULL},
	{0, 0, NULL, NULL, NULL, NULL},
};

static const lora_tool tool = {
	"mkmodel",
	"[options] OUTDIR",
	"Write a deterministic Llama-shaped Hugging Face model directory.",
	"Weights are uniform in [-S, S) (S = 0.05 unless --init-scale), drawn from a generator seeded with the\n"
	"seed and the tensor name, so a tensor does not change when other options\n"
	"add or remove tensors; norm weights are 1. Existing files in OUTDIR are\n"
	"replaced.\n",
	opts,
	"@dir",
};

typedef struct {
	long long hidden, inter, layers, heads, kv, vocab, shard_bytes;
	unsigned long long seed;
	lora_dtype dtype;
	int tied, bias;
	double scale;
	const char *name, *outdir;
} params;

typedef struct {
	lora_st_spec spec;
	char name[80];
	int is_norm;
	size_t nbytes;
} tensor;

static void add(tensor *t, size_t *n, const char *name, size_t rows, size_t cols, const params *p)
{
	tensor *x = &t[(*n)++];
	snprintf(x->name, sizeof x->name, "%s", name);
	x->spec.name = x->name;
	x->spec.dtype = p->dtype;
	x->spec.ndim = cols ? 2 : 1;
	x->spec.shape[0] = rows;
	x->spec.shape[1] = cols;
	x->is_norm = cols == 0;
	lora_shape_bytes(x->spec.shape, x->spec.ndim, lora_dtype_size(p->dtype), &x->nbytes);
}

/* The tensors of HF's LlamaForCausalLM, in its module order. */
static tensor *plan(const params *p, size_t *count)
{
	size_t hd = (size_t)(p->hidden / p->heads), h = (size_t)p->hidden, f = (size_t)p->inter;
	size_t q = (size_t)p->heads * hd, kv = (size_t)p->kv * hd, v = (size_t)p->vocab, n = 0;
	tensor *t = calloc((size_t)p->layers * 12 + 3, sizeof *t);
	if (!t)
		return NULL;
	char nm[80];
	add(t, &n, "model.embed_tokens.weight", v, h, p);
	for (long long i = 0; i < p->layers; i++) {
		static const char *const proj[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
		                                   "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
		                                   "mlp.down_proj"};
		const size_t rows[] = {q, kv, kv, h, f, f, h}, cols[] = {h, h, h, q, h, h, f};
		for (int k = 0; k < 7; k++) {
			snprintf(nm, sizeof nm, "model.layers.%lld.%s.weight", i, proj[k]);
			add(t, &n, nm, rows[k], cols[k], p);
			if (p->bias && k < 3) {
				snprintf(nm, sizeof nm, "model.layers.%lld.%s.bias", i, proj[k]);
				add(t, &n, nm, rows[k], 0, p);
				t[n - 1].is_norm = 0; /* random like the weights, not 1 */
			}
		}
		snprintf(nm, sizeof nm, "model.layers.%lld.input_layernorm.weight", i);
		add(t, &n, nm, h, 0, p);
		snprintf(nm, sizeof nm, "model.layers.%lld.post_attention_layernorm.weight", i);
		add(t, &n, nm, h, 0, p);
	}
	add(t, &n, "model.norm.weight", h, 0, p);
	if (!p->tied)
		add(t, &n, "lm_head.weight", v, h, p);
	*count = n;
	return t;
}

#define CHUNK 65536

/* Generate tensor t chunk by chunk into the writer. */
static int write_tensor(lora_st_writer *w, const tensor *t, const params *p, float *f, unsigned char *buf,
                        lora_err *e)
{
	size_t n = t->nbytes / lora_dtype_size(p->dtype), es = lora_dtype_size(p->dtype);
	lora_rng r;
	lora_rng_seed_name(&r, p->seed, t->name);
	for (size_t done = 0; done < n;) {
		size_t k = n - done < CHUNK ? n - done : CHUNK;
		for (size_t i = 0; i < k; i++)
			f[i] = t->is_norm ? 1.0f : (float)p->scale * (2.0f * lora_rng_uniform(&r) - 1.0f);
		lora_dtype_from_f32(buf, f, p->dtype, k);
		int rc = lora_st_writer_write(w, buf, k * es, e);
		if (rc)
			return rc;
		done += k;
	}
	return 0;
}

static int write_shard(const params *p, const char *file, const tensor *t, size_t n, lora_err *e)
{
	static const lora_st_meta meta[] = {{"format", "pt"}};
	lora_st_spec *specs = malloc((n ? n : 1) * sizeof *specs);
	float *f = malloc(CHUNK * sizeof *f);
	unsigned char *buf = malloc(CHUNK * 4);
	char *path = lora_path_join(p->outdir, file);
	lora_st_writer *w = NULL;
	int rc = 0;
	if (!specs || !f || !buf || !path) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		specs[i] = t[i].spec;
	if ((rc = lora_st_writer_open(&w, path, specs, n, meta, 1, 1, e)))
		goto out;
	for (size_t i = 0; i < n && !rc; i++)
		rc = write_tensor(w, &t[i], p, f, buf, e);
	if (rc)
		lora_st_writer_abort(w);
	else
		rc = lora_st_writer_commit(w, e);
out:
	free(specs);
	free(f);
	free(buf);
	free(path);
	return rc;
}

static int write_config(const params *p, lora_err *e)
{
	static const char *const torch[] = {[LORA_F32] = "float32", [LORA_F16] = "float16", [LORA_BF16] = "bfloat16"};
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	fprintf(f,
	        "{\n  \"_name_or_path\": ");
	lora_json_write_str(f, p->name);
	fprintf(f,
	        ",\n  \"architectures\": [\"LlamaForCausalLM\"],\n"
	        "  \"hidden_act\": \"silu\",\n"
	        "  \"hidden_size\": %lld,\n"
	        "  \"intermediate_size\": %lld,\n"
	        "  \"max_position_embeddings\": 2048,\n"
	        "  \"model_type\": \"%s\",\n"
	        "  \"num_attention_heads\": %lld,\n"
	        "  \"num_hidden_layers\": %lld,\n"
	        "  \"num_key_value_heads\": %lld,\n"
	        "  \"rms_norm_eps\": 1e-05,\n"
	        "  \"rope_theta\": 10000.0,\n"
	        "  \"tie_word_embeddings\": %s,\n"
	        "  \"torch_dtype\": \"%s\",\n"
	        "  \"vocab_size\": %lld\n}\n",
	        p->hidden, p->inter, p->bias ? "qwen2" : "llama", p->heads, p->layers, p->kv,
	        p->tied ? "true" : "false", torch[p->dtype],
	        p->vocab);
	if (fclose(f) != 0) {
		free(text);
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	}
	int rc = fx_write_text(p->outdir, "config.json", text, strlen(text), e);
	free(text);
	return rc;
}

typedef struct {
	const char *name;
	size_t shard;
} wm_entry;

static int cmp_wm(const void *a, const void *b)
{
	return strcmp(((const wm_entry *)a)->name, ((const wm_entry *)b)->name);
}

/* HF layout: shards model-0000i-of-0000K.safetensors filled greedily up to
 * shard_bytes, and an index whose weight_map is sorted by tensor name. */
static int write_sharded(const params *p, const tensor *t, size_t n, size_t nshards, const size_t *first,
                         lora_err *e)
{
	char file[64];
	int rc = 0;
	size_t total = 0;
	for (size_t s = 0; s < nshards && !rc; s++) {
		snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, nshards);
		rc = write_shard(p, file, t + first[s], first[s + 1] - first[s], e);
	}
	if (rc)
		return rc;
	wm_entry *wm = malloc(n * sizeof *wm);
	char *text = NULL;
	size_t len = 0;
	FILE *f = NULL;
	if (!wm || !(f = open_memstream(&text, &len))) {
		free(wm);
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	}
	for (size_t s = 0; s < nshards; s++)
		for (size_t i = first[s]; i < first[s + 1]; i++) {
			wm[i] = (wm_entry){t[i].name, s};
			total += t[i].nbytes;
		}
	qsort(wm, n, sizeof *wm, cmp_wm);
	fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {\n", total);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "    \"%s\": \"model-%05zu-of-%05zu.safetensors\"%s\n", wm[i].name, wm[i].shard + 1,
		        nshards, i + 1 < n ? "," : "");
	fprintf(f, "  }\n}\n");
	free(wm);
	if (fclose(f) != 0)
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
	else
		rc = fx_write_text(p->outdir, "model.safetensors.index.json", text, strlen(text), e);
	free(text);
	return rc;
}

static int run(const params *p, lora_err *e)
{
	size_t n = 0;
	int rc = 0;
	tensor *t = plan(p, &n);
	size_t *first = malloc((n + 1) * sizeof *first);
	if (!t || !first) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto out;
	}
	/* Greedy packing: a new shard starts when the next tensor would push a
	 * non-empty shard past shard_bytes. */
	size_t nshards = 1, fill = 0;
	first[0] = 0;
	for (size_t i = 0; i < n; i++) {
		if (p->shard_bytes && fill && fill + t[i].nbytes > (size_t)p->shard_bytes) {
			first[nshards++] = i;
			fill = 0;
		}
		fill += t[i].nbytes;
	}
	first[nshards] = n;
	if ((rc = write_config(p, e)))
		goto out;
	char *stale;
	if (nshards == 1) {
		/* One shard is a plain model.safetensors, as HF writes it; drop an
		 * index left by an earlier run, or readers would prefer it. */
		if ((rc = write_shard(p, "model.safetensors", t, n, e)))
			goto out;
		stale = lora_path_join(p->outdir, "model.safetensors.index.json");
	} else {
		if ((rc = write_sharded(p, t, n, nshards, first, e)))
			goto out;
		stale = lora_path_join(p->outdir, "model.safetensors");
	}
	if (stale && unlink(stale) != 0 && errno != ENOENT)
		rc = lora_err_set(e, LORA_EIO, "%s: cannot remove: %s", stale, strerror(errno));
	free(stale);
out:
	free(t);
	free(first);
	return rc;
}

int main(int argc, char **argv)
{
	params p = {.hidden = 64, .inter = 128, .layers = 2, .heads = 4, .kv = -1, .vocab = 256, .seed = 1,
	            .dtype = LORA_F32, .name = "tiny-llama", .scale = 0.05};
	lora_cli c;
	int id;
	const long long big = 1 << 24;
	lora_cli_init(&c, &tool, argc, argv);
	while ((id = lora_cli_next(&c)) != LORA_OPT_END) {
		switch (id) {
		case O_HIDDEN: p.hidden = lora_cli_int(&tool, "--hidden", c.arg, 1, big); break;
		case O_INTER: p.inter = lora_cli_int(&tool, "--inter", c.arg, 1, big); break;
		case O_LAYERS: p.layers = lora_cli_int(&tool, "--layers", c.arg, 0, 100000); break;
		case O_HEADS: p.heads = lora_cli_int(&tool, "--heads", c.arg, 1, big); break;
		case O_KV: p.kv = lora_cli_int(&tool, "--kv-heads", c.arg, 1, big); break;
		case O_VOCAB: p.vocab = lora_cli_int(&tool, "--vocab", c.arg, 1, big); break;
		case O_SEED: p.seed = (unsigned long long)lora_cli_int(&tool, "--seed", c.arg, 0, LLONG_MAX); break;
		case O_SHARD: p.shard_bytes = lora_cli_int(&tool, "--shard-bytes", c.arg, 1, LLONG_MAX); break;
		case O_TIED: p.tied = 1; break;
		case O_BIAS: p.bias = 1; break;
		case O_SCALE: p.scale = lora_cli_double(&tool, "--init-scale", c.arg); break;
		case O_NAME: p.name = c.arg; break;
		case O_DTYPE:
			if (lora_dtype_parse(c.arg, &p.dtype))
				lora_cli_usage_error(&tool, "--dtype: '%s' is not f32, f16 or bf16", c.arg);
			break;
		case LORA_OPT_OPERAND:
			if (p.outdir)
				lora_cli_usage_error(&tool, "unexpected operand '%s'", c.arg);
			p.outdir = c.arg;
			break;
		}
	}
	if (!p.outdir)
		lora_cli_usage_error(&tool, "missing OUTDIR");
	if (p.kv < 0)
		p.kv = p.heads;
	if (p.hidden % p.heads)
		lora_cli_usage_error(&tool, "--hidden %lld is not a multiple of --heads %lld", p.hidden, p.heads);
	if (p.heads % p.kv)
		lora_cli_usage_error(&tool, "--heads %lld is not a multiple of --kv-heads %lld", p.heads, p.kv);
	lora_cli_signals();
	if (fx_outdir(&tool, p.outdir))
		return LORA_EXIT_FAIL;
	lora_err e = {0, ""};
	if (run(&p, &e))
		return lora_cli_fail(&tool, &e);
	return LORA_EXIT_OK;
}
