/* jsonl: one line of a JSONL dataset read as a training example, the way
 * axolotl's dataset types read them.
 *
 * A line is a JSON object (core/json's strict rules) holding one of:
 *   "messages": [{"role": R, "content": S}, ...]  a chat, R one of system,
 *               user, assistant (rendered later by the chat template);
 *   "prompt" and "completion": strings, the prompt verbatim;
 *   "instruction", optional "input", "output": strings, the prompt
 *               rendered as axolotl's alpaca type renders it (its system
 *               line, "### Instruction:", "### Input:" when input is not
 *               empty, "### Response:");
 *   "text": a string, trained on whole (axolotl's completion type).
 * The first of these that the object has decides; other keys are ignored.
 * A key of the chosen kind that is missing or not a string is an error. */
#ifndef LORA_JSONL_H
#define LORA_JSONL_H

#include <stddef.h>

#include "core/err.h"

/* Longest line read (bytes): a longer one is an error, not a buffer. */
#define LORA_JSONL_MAX_LINE ((size_t)16 << 20)

typedef enum { LORA_JSONL_TEXT, LORA_JSONL_PROMPT, LORA_JSONL_MESSAGES } lora_jsonl_kind;

/* Laid out as lora_chat_message (text/chat.h). */
typedef struct {
	const char *role, *content;
} lora_jsonl_message;

typedef struct {
	lora_jsonl_kind kind;
	const char *text;          /* TEXT */
	const char *prompt;        /* PROMPT: the prompt (rendered for alpaca keys) */
	const char *completion;    /* PROMPT: what is trained on */
	lora_jsonl_message *msgs;  /* MESSAGES */
	size_t nmsgs;
	void *root;                /* the parsed line, which the strings point into */
	char *rendered;            /* an alpaca prompt */
} lora_jsonl_example;

/* Read the n bytes of line (without its line break) into x. Messages read
 * "<where>: <what is wrong>" (where names the line for the caller, e.g.
 * "data.jsonl: line 3 (byte 120)"). Returns 0, LORA_EFORMAT or
 * LORA_ENOMEM; free x with lora_jsonl_free either way. */
int lora_jsonl_parse(lora_jsonl_example *x, const char *where, const char *line, size_t n, lora_err *e);
void lora_jsonl_free(lora_jsonl_example *x);

#endif
