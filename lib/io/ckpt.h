/* ckpt: a checkpoint as one tensor set: a single .safetensors file, a
 * sharded set with model.safetensors.index.json, or a model directory
 * (with config.json), every shard validated by the safetensors reader. */
#ifndef LORA_CKPT_H
#define LORA_CKPT_H

#include <stddef.h>

#include "core/err.h"
#include "io/safetensors.h"

/* A model: one or more shards seen as one tensor set. */
typedef struct {
	char *path;          /* as given */
	char *dir;           /* directory holding the shards */
	char *index_path;    /* model.safetensors.index.json, or NULL */
	char *config_path;   /* config.json beside the weights, or NULL */
	char *name;          /* config "_name_or_path", else the directory or file base name */
	lora_st **shards;
	size_t nshards;
	const lora_st_tensor **tensors; /* all tensors sorted by name */
	size_t *tensor_shard;           /* shard index of tensors[i] */
	size_t ntensors;
} lora_ckpt;

/* Open a model given as a .safetensors file, a *.index.json file, or a
 * directory holding model.safetensors or model.safetensors.index.json (and
 * usually config.json). A sharded index must map every tensor to a shard
 * that holds it, and every tensor in the shards must appear in the index;
 * names are unique across shards. */
int lora_ckpt_open(lora_ckpt **out, const char *path, lora_err *e);
void lora_ckpt_close(lora_ckpt *m);
const lora_st_tensor *lora_ckpt_find(const lora_ckpt *m, const char *name);
/* 64-bit FNV-1a over the sorted (name, dtype, shape) list, as 16 hex digits
 * in buf (17 bytes): identifies a model's architecture without reading data. */
void lora_ckpt_fingerprint(const lora_ckpt *m, char buf[17]);

#endif
