/* adapter: the in-memory LoRA adapter and its metadata.
 *
 * A layer adapts one linear module W (out x in): dW = s * B A with
 * A (rank x in) and B (out x rank), both row-major f32 in memory whatever
 * the storage dtype, and s = alpha / rank, or alpha / sqrt(rank) when the
 * adapter uses rsLoRA. Every f16/bf16 value is exact in f32, so reading and
 * writing at the same dtype is lossless. */
#ifndef LORA_ADAPTER_H
#define LORA_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/dtype.h"

typedef struct {
	char *name;       /* module name, e.g. "model.layers.0.self_attn.q_proj" */
	size_t out, in, rank;
	double alpha;
	float *A;         /* rank x in; NULL when only the header was read */
	float *B;         /* out x rank */
	float *magnitude; /* DoRA magnitude vector (out), or NULL: PEFT lora_magnitude_vector */
	float *bias;      /* lora_B bias (out), or NULL: PEFT lora_bias */
	/* Sizes recorded in a .lora file (0 for adapters built in memory). */
	uint64_t zsize_A, zsize_B;
	uint32_t crc_A, crc_B;
	/* Set by readers when the layer has a magnitude / bias, even when only
	 * the header was read and the vectors themselves stay NULL. Writers look
	 * at the pointers, not at these. */
	int has_magnitude, has_bias;
} lora_layer;

/* A tensor of the adapter that is not a LoRA factor (an embedding LoRA,
 * modules_to_save, ...): carried through unchanged, reported by name by
 * tools that cannot apply it. */
typedef struct {
	char *name;
	lora_dtype dtype;
	size_t ndim;
	size_t shape[LORA_MAX_DIMS];
	void *data;       /* nbytes little-endian bytes at dtype; NULL when only the header was read */
	size_t nbytes;
} lora_extra;

typedef struct {
	lora_layer *layers;
	size_t nlayers;
	lora_dtype dtype;      /* storage dtype for A and B */
	int rslora;
	char *base_name;       /* base model identity, or NULL */
	char *base_fingerprint;/* lora_ckpt_fingerprint, or NULL */
	char **targets;        /* target patterns the adapter was built for */
	size_t ntargets;
	char *provenance;      /* JSON object text, or NULL */
	/* Base weights stored [in, out] (GPT-2 Conv1D). A and B keep their
	 * shapes (out and in are the module's logical sizes); only the update
	 * is transposed before it is added to the stored weight. */
	int fan_in_fan_out;
	char *peft_config;     /* adapter_config.json text it was imported from, or NULL */
	lora_extra *extras;
	size_t nextras;
	int version;           /* .lora format version it was read from (0: not a .lora) */
	uint64_t file_bytes;   /* bytes read from the .lora, header included (PEFT: both files) */
	/* Layer names hashed (open addressing; slot holds layer index + 1, 0
	 * empty), kept by lora_adapter_add, so lora_adapter_find is O(1) and
	 * comparing or reading adapters of 80k layers stays linear. */
	size_t *slots;
	size_t nslots;         /* a power of two, at least twice nlayers; 0: none yet */
} lora_adapter;

/* New empty adapter (zeroed). NULL on allocation failure. */
lora_adapter *lora_adapter_new(void);
void lora_adapter_free(lora_adapter *a);
/* Append a layer (the only way layers are added: it keeps the name index);
 * copies name; allocates zeroed A and B unless header_only.
 * Returns the layer or NULL (e filled) on overflow or allocation failure. */
lora_layer *lora_adapter_add(lora_adapter *a, const char *name, size_t out, size_t in,
                             size_t rank, double alpha, int header_only, lora_err *e);
/* The name two layers (or two extras) share, or NULL; *nomem is set to 1
 * when memory ran out, else 0. O(n log n): readers check a whole header
 * with it instead of a lora_adapter_find per layer. */
const char *lora_adapter_dup_layer(const lora_adapter *a, int *nomem);
const char *lora_adapter_dup_extra(const lora_adapter *a, int *nomem);
/* Add a target pattern (copied). */
int lora_adapter_add_target(lora_adapter *a, const char *target, lora_err *e);
/* Scaling s of a layer: alpha/rank or alpha/sqrt(rank). */
double lora_adapter_layer_scale(const lora_adapter *a, const lora_layer *l);
/* Number of trainable parameters (sum of rank*(in+out)). */
uint64_t lora_adapter_params(const lora_adapter *a);
/* Bytes of A and B at the storage dtype, uncompressed. */
uint64_t lora_adapter_raw_bytes(const lora_adapter *a);
/* Layer by name, or NULL. */
lora_layer *lora_adapter_find(const lora_adapter *a, const char *name);
/* Append an extra tensor; copies name and, unless data is NULL, the
 * nbytes = shape product x dtype size bytes at data (checked for overflow).
 * Returns the extra or NULL (e filled). */
lora_extra *lora_adapter_add_extra(lora_adapter *a, const char *name, lora_dtype dtype, size_t ndim,
                                   const size_t *shape, const void *data, lora_err *e);
/* Number of layers with a DoRA magnitude vector / a lora_B bias. */
size_t lora_adapter_dora_layers(const lora_adapter *a);
size_t lora_adapter_bias_layers(const lora_adapter *a);

#endif
