/* gguflora: LoRA adapters in GGUF, as llama.cpp and Ollama load them
 * (llama.cpp's convert_lora_to_gguf.py writes them, src/llama-adapter.cpp
 * reads them), to and from the in-memory adapter.
 *
 * The file: general.architecture (the base model's GGUF architecture),
 * general.type = "adapter", adapter.type = "lora", adapter.lora.alpha
 * (f32), and per adapted module the tensors blk.N.<m>.weight.lora_a
 * (ne {in, rank}: PEFT's A, r x in, row-major) and .lora_b (ne {rank,
 * out}: PEFT's B), m one of attn_q, attn_k, attn_v, attn_output, ffn_gate,
 * ffn_up, ffn_down (model.layers.N.self_attn.{q,k,v,o}_proj,
 * model.layers.N.mlp.{gate,up,down}_proj).
 *
 * Rotary embeddings: for the llama architecture (Llama and Mistral)
 * convert_hf_to_gguf reorders the rows of q_proj and k_proj within each
 * head (LlamaModel.permute: row 2j+k of a head is row k*hd/2+j of the
 * Hugging Face weight), so the rows of their lora_B are reordered the
 * same way (lora_A is not); qwen2 is left as it is. This needs the base
 * model's head counts (k_proj: its key/value heads).
 *
 * Scaling: llama.cpp multiplies every B A by alpha / rank (rank that of
 * the tensor pair; 1 when alpha is 0). adapter.lora.alpha is chosen as
 * the f32 value of scale x rank shared by the most layers, so that an
 * adapter with one alpha, rsLoRA at one rank, or ranks varied by
 * rank_pattern keep their factors byte for byte; a layer whose scale x
 * rank differs (alpha_pattern, rsLoRA at mixed ranks) gets the ratio of
 * its true scale to llama.cpp's folded into lora_B, stored in f32 so the
 * product loses nothing. What llama.cpp's adapters cannot express is an
 * error naming the layer: DoRA magnitudes, lora_B biases, extra tensors,
 * fan_in_fan_out, other modules.
 *
 * Our own keys let the reverse restore the adapter exactly (llama.cpp
 * ignores them): lora.alpha (f64 per layer, in file order), lora.rslora,
 * lora.head_count and lora.head_count_kv (what the rows were permuted
 * with), lora.base.name, lora.base.fingerprint, lora.targets,
 * lora.provenance, lora.peft_config. A file without them (upstream's)
 * reads with every layer's alpha = adapter.lora.alpha. */
#ifndef LORA_GGUFLORA_H
#define LORA_GGUFLORA_H

#include "core/adapter.h"
#include "core/err.h"

typedef struct {
	const char *arch;          /* GGUF architecture: "llama" or "qwen2" */
	size_t n_heads, n_kv_heads; /* the base model's attention heads; 0: unknown */
} lora_gguflora_base;

/* The GGUF architecture of a Hugging Face model_type: "llama" for llama
 * and mistral (convert_hf_to_gguf writes both as llama), "qwen2"; NULL for
 * any other. */
const char *lora_gguflora_arch(const char *model_type);

/* The tensors of a whole model, as convert_hf_to_gguf names them: the
 * GGUF name of Hugging Face's tensor hf into out (LORA_GGUF_MAX_NAME + 1
 * bytes) for the GGUF architecture arch: token_embd, output_norm, output,
 * blk.N.attn_norm, blk.N.ffn_norm and the modules above (.weight, .bias).
 * Returns 0; 1 for a tensor the converter leaves out (rotary_emb.inv_freq,
 * which llama.cpp computes); -1 for a name it does not know. *rope is 1
 * (q: permuted with the attention heads), 2 (k: with the key/value heads)
 * or 0, for arch llama. */
int lora_gguflora_model_name(const char *hf, const char *arch, char *out, int *rope);
/* LlamaModel.permute on the rows of m (rows x cols, row-major) in place:
 * 0, -1 when rows do not split into heads of even size, -2 out of memory. */
int lora_gguflora_permute(float *m, size_t rows, size_t cols, size_t heads);

/* 1 if buf (n bytes) starts with the GGUF magic. */
int lora_gguflora_is_gguf(const void *buf, size_t n);

/* What lora_gguflora_write refuses in a (its layers, extras, flags, the
 * architecture and head counts it needs), checked without writing: 0 or
 * LORA_EINVAL naming the layer. */
int lora_gguflora_check(const lora_adapter *a, const lora_gguflora_base *base, lora_err *e);

/* Write a to path ("-": standard output, refused on a terminal) with A
 * and B at a->dtype (folded lora_B in f32). base->arch is required, and
 * for llama the head counts when a adapts q_proj or k_proj. An existing
 * file needs force. */
int lora_gguflora_write(const lora_adapter *a, const char *path, const lora_gguflora_base *base, int force,
                        lora_err *e);

/* Read a GGUF LoRA adapter: validated as a GGUF file (io/gguf.h), then as
 * an adapter (types and names, pairs, ranks, shapes, finite values). The
 * rows of q/k lora_B are put back in Hugging Face's order with the head
 * counts of base (may be NULL) or, failing that, of the file's lora.*
 * keys; neither is an error only for a file that needs them. header_only
 * reads ranks and alphas without the factors (and needs no head counts).
 * The storage dtype is that of the lora_a tensors (f32 if they differ or
 * are q8_0). Caller frees *out. */
int lora_gguflora_read(lora_adapter **out, const char *path, const lora_gguflora_base *base, int header_only,
                       lora_err *e);

#endif
