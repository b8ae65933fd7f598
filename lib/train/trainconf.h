/* trainconf: lora-train's configuration, from a YAML file and from flags.
 *
 * One table (lora_trainconf_keys) lists every key with its type, field,
 * range, default, help and the lora-train flag that sets it; parsing,
 * validation, defaults, the JSON dump, lora-train's option table and its
 * --help all come from it, so they cannot drift apart. Key names
 * follow axolotl's where the two overlap, so the training part of an
 * axolotl file reads unchanged.
 *
 * The file is one YAML mapping of keys to scalars; lora_target_modules also
 * takes a sequence of names. Everything else YAML can say is refused with a
 * line number: anchors and aliases (no alias bombs), tags, nested mappings
 * or sequences, several documents, files over 1 MiB. A null value (`key:`,
 * `~`, `null`) leaves the key at its current value, as axolotl treats None.
 * Unknown keys are errors that suggest the nearest known key. `adapter`
 * is accepted only as `lora`; base_model, datasets, output_dir and
 * lora_model_dir are refused with a pointer to the flag or operand that
 * replaces them. Scalars are read by their text whether quoted or not
 * (`learning_rate: "2e-4"` is a number), as axolotl's lenient parsing does.
 *
 * Defaults are axolotl's, or Hugging Face's where axolotl defers to them
 * (cosine schedule, AdamW betas 0.9/0.999, epsilon 1e-8, max_grad_norm 1,
 * seed 42, PEFT's r 8 and lora_alpha 8), and the LoRA paper's targets
 * q_proj and v_proj; the adapter keys take lora-init's defaults from
 * ops/init.h, the one place they are written. axolotl has no default
 * learning rate; 2e-4 is the one of its LoRA examples and of the QLoRA
 * paper for 7B-13B models.
 *
 * Two keys are ours: sgd_momentum (axolotl has no SGD momentum key) and the
 * acceptance of a comma-separated string for lora_target_modules.
 *
 * This is the only module that includes yaml.h. */
#ifndef LORA_TRAINCONF_H
#define LORA_TRAINCONF_H

#include <stddef.h>

#include "core/err.h"
#include "train/optim.h"

#define LORA_TRAINCONF_MAX_BYTES (1u << 20)

typedef struct {
	char **items; /* owned, each non-empty, without commas or blanks */
	size_t n;
} lora_trainconf_list;

typedef struct {
	int adapter;                       /* always 0: "lora" */
	long long lora_r;
	double lora_alpha;
	double lora_dropout;
	lora_trainconf_list lora_target_modules;
	int lora_target_linear;            /* 1: every linear module ("all-linear") */
	int peft_use_rslora;               /* 1: scale by alpha/sqrt(r) */
	long long sequence_len;
	long long micro_batch_size;
	int sample_packing;                /* tok files: rows of whole documents, not one each */
	long long gradient_accumulation_steps;
	double num_epochs;                 /* fractional epochs allowed, as in axolotl */
	long long max_steps;               /* -1: not set, num_epochs decides */
	double learning_rate;
	int lr_scheduler;                  /* lora_optim_sched_kind */
	long long warmup_steps;
	double weight_decay;
	double max_grad_norm;              /* 0: no clipping */
	int optimizer;                     /* lora_optim_kind */
	double adam_beta1, adam_beta2, adam_epsilon;
	double sgd_momentum;
	long long seed;
	long long eval_steps;              /* 0: off */
	long long save_steps;              /* 0: off */
	int compute;                       /* lora_llama_compute: auto, f32, bf16 */
} lora_trainconf;

typedef enum {
	LORA_TC_INT,  /* long long in [ilo, ihi] */
	LORA_TC_NUM,  /* finite double in the range said by lo, hi and flags */
	LORA_TC_BOOL, /* int 0/1: true/false, yes/no, on/off */
	LORA_TC_ENUM, /* int: index of the name in choices */
	LORA_TC_LIST, /* lora_trainconf_list: a YAML sequence or "a,b,c" */
} lora_trainconf_type;

enum {
	LORA_TC_LO_OPEN = 1,  /* NUM: lo itself is out of range */
	LORA_TC_HI_OPEN = 2,  /* NUM: hi itself is out of range */
	LORA_TC_NONZERO = 4,  /* INT: 0 is out of range (max_steps: -1 or >= 1) */
};

typedef struct {
	const char *key;
	lora_trainconf_type type;
	size_t offset;        /* of the field in lora_trainconf */
	long long ilo, ihi;   /* INT bounds, inclusive */
	double lo, hi;        /* NUM bounds */
	unsigned flags;
	const char *choices;  /* ENUM: space-separated names, stored as their index */
	const char *aliases;  /* ENUM: space-separated "other=name" also accepted, or NULL */
	const char *def;      /* default, written as in YAML */
	const char *what;     /* the accepted values, e.g. "a positive integer" */
	const char *help;     /* one line for the manual */
	char shortopt;        /* lora-train's flag for the key: its letter or 0, */
	const char *flag;     /* its long name, or NULL when only the file and --set reach the key, */
	const char *metavar;  /* and its value's name; NULL for a BOOL flag, which takes
	                         no value and sets true */
} lora_trainconf_key;

/* The key table, in documentation order; *n receives its length. */
const lora_trainconf_key *lora_trainconf_keys(size_t *n);

/* Fill c with every default. 0 or LORA_ENOMEM. */
int lora_trainconf_init(lora_trainconf *c, lora_err *e);
/* Release what c owns (the target list); c can be initialised again. */
void lora_trainconf_free(lora_trainconf *c);

/* Apply the YAML file at path over c. Errors are one line naming the file
 * and line ("run.yaml:3: unknown key 'learning_rat' (did you mean
 * 'learning_rate'?)"); syntax errors add libyaml's column. Returns 0,
 * LORA_EIO (cannot read), LORA_EFORMAT (anything wrong in the file) or
 * LORA_ENOMEM. c changes only on success. */
int lora_trainconf_load(lora_trainconf *c, const char *path, lora_err *e);
/* Set one key from text, as a flag does, with the file's validation and
 * messages without the file and line ("'lora_r' must be a positive
 * integer, got 'x'"). Lists are comma-separated. Returns 0, LORA_EUSAGE
 * or LORA_ENOMEM; c changes only on success. Apply the file first, then
 * the flags, so that flags win. */
int lora_trainconf_set(lora_trainconf *c, const char *key, const char *value, lora_err *e);

/* lora-train's flags. set_flag sets key i of the table from its flag's
 * value: NULL (a BOOL flag) sets true, and "all-linear" for
 * lora_target_modules sets lora_target_linear instead, as PEFT spells it.
 * set_pair takes --set's "KEY=VALUE". Both return as lora_trainconf_set;
 * a pair without '=' or key is LORA_EUSAGE. */
int lora_trainconf_set_flag(lora_trainconf *c, size_t i, const char *value, lora_err *e);
int lora_trainconf_set_pair(lora_trainconf *c, const char *pair, lora_err *e);

/* Apply a configuration recorded by lora_trainconf_json (a checkpoint's),
 * key by key through lora_trainconf_set. Returns 0, LORA_EFORMAT when json
 * is not an object, or lora_trainconf_set's error. */
int lora_trainconf_set_json(lora_trainconf *c, const char *json, lora_err *e);

/* The whole effective configuration as a compact JSON object, every key
 * of the table in order (enums by name, lists as arrays, integers exact).
 * Caller frees with free(); NULL when out of memory. */
char *lora_trainconf_json(const lora_trainconf *c);

/* The target list for lora_targets_init: "all-linear" when
 * lora_target_linear is set, else the modules joined by commas. Caller
 * frees; NULL when out of memory. */
char *lora_trainconf_targets(const lora_trainconf *c);
/* The optimizer hyperparameters the configuration describes. */
void lora_trainconf_optim(const lora_trainconf *c, lora_optim_conf *o);
/* The schedule for a run of total optimizer steps (computed by the
 * caller from max_steps or num_epochs and the data). */
void lora_trainconf_schedule(const lora_trainconf *c, long total, lora_optim_schedule *s);

#endif
