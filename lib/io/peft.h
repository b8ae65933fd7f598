/* peft: PEFT LoRA adapters (a directory holding adapter_config.json and
 * adapter_model.safetensors), read into and written from lora_adapter.
 *
 * Saved keys are base_model.model.<module>.lora_A.weight (r x in) and
 * .lora_B.weight (out x r), plus .lora_magnitude_vector (out, DoRA) and
 * .lora_B.bias (out, lora_bias); the adapter name never appears. A layer's
 * rank and alpha come from rank_pattern / alpha_pattern as PEFT takes them:
 * the first key in file order that matches the module name as the Python
 * regex (.*\.)?(KEY)$, else a key equal to the name, else r / lora_alpha.
 * Every other tensor is kept as an extra, byte for byte, under its full
 * key. A string target_modules is a regex PEFT matches with re.fullmatch;
 * it is compiled (and so checked) on reading. All of these go through
 * core/pattern with its bounds.
 *
 * Only modules PEFT would give a LoRA layer are read, as PEFT 0.20's
 * check_target_module_exists decides from target_modules, exclude_modules,
 * modules_to_save, layers_to_transform and layers_pattern (lora-convert(1)
 * spells it out); the tensors of any other module, which PEFT drops on
 * loading, are skipped, and one lora_err_warn line counts and names them. */
#ifndef LORA_PEFT_H
#define LORA_PEFT_H

#include "core/adapter.h"
#include "core/err.h"

#define LORA_PEFT_CONFIG "adapter_config.json"
#define LORA_PEFT_WEIGHTS "adapter_model.safetensors"
#define LORA_PEFT_MAX_CONFIG (16u << 20)

/* 1 if path names a PEFT adapter: a directory holding adapter_config.json,
 * or a *.safetensors file with adapter_config.json beside it. */
int lora_peft_detect(const char *path);

/* Read a PEFT adapter given as its directory or as its safetensors file.
 * Validates the config (peft_type LORA, r, lora_alpha, patterns, flags) and
 * every tensor (pairs, 2-D factors, ranks against A, B and the config,
 * vector lengths, F32/F16/BF16 only, finite values). The storage dtype is
 * that of the LoRA tensors, or f32 when they mix dtypes. Layers are sorted
 * by module name, extras by key. Caller frees *out. */
int lora_peft_read(lora_adapter **out, const char *path, lora_err *e);

/* The adapter_config.json text PEFT would load for a (caller frees *text).
 * An imported config (a->peft_config) is returned unchanged when it still
 * describes a exactly; otherwise only the fields that disagree are
 * rewritten: r, lora_alpha, rank_pattern, alpha_pattern (all four
 * together), use_rslora, fan_in_fan_out, use_dora, lora_bias,
 * target_modules, base_model_name_or_path. */
int lora_peft_config(const lora_adapter *a, char **text, lora_err *e);

/* Write a as a PEFT adapter directory dir, tensors at a->dtype (extras
 * unchanged). Built in a temporary directory beside dir and renamed into
 * place. An existing dir needs force and must hold nothing but adapter
 * files (adapter_config.json, adapter_model.safetensors), which are then
 * replaced. */
int lora_peft_write(const lora_adapter *a, const char *dir, int force, lora_err *e);

/* PEFT's pattern rule: 1 if KEY applies to module (Python's
 * re.match(rf"(.*\.)?({KEY})$", module), or KEY equal to module), 0 if
 * not; LORA_EINVAL (e filled) if KEY is not a valid expression or matching
 * it passes a bound of core/pattern.h, which also says how Python's syntax
 * is read. */
int lora_peft_pattern_match(const char *key, const char *module, lora_err *e);

#endif
