/* chat: chat templates, rendered byte for byte as transformers'
 * apply_chat_template renders the model's Jinja template, for the families
 * people fine-tune:
 *   llama3     Llama 3 (8B/70B Instruct): <|start_header_id|>ROLE<|end_header_id|>\n\n
 *              TRIMMED CONTENT<|eot_id|>, the BOS before the first message;
 *   llama3.1   Llama 3.1 and 3.3: a system block first with "Cutting Knowledge Date:
 *              December 2023" and "Today Date: 26 Jul 2024", the system message
 *              (trimmed) moved into it;
 *   llama3.2   the same with today's date (strftime_now("%d %b %Y"), local time);
 *   chatml     plain ChatML: <|im_start|>ROLE\nCONTENT<|im_end|>\n;
 *   qwen2.5    ChatML with Qwen2.5's default system message when none is given;
 *   qwen3      ChatML with Qwen3's <think> handling: an assistant message's reasoning
 *              (before "</think>") is kept only after the last user query, and the
 *              last assistant message always gets a (possibly empty) think block;
 *              LORA_CHAT_NO_THINKING (enable_thinking=False) gives the generation
 *              prompt an empty think block;
 *   mistral    Mistral-7B-Instruct v0.1/v0.2: BOS, [INST] USER [/INST]ASSISTANT</s>,
 *              user and assistant alternating from a user message, no system message.
 * "Trimmed" is Jinja's trim, Python's str.strip(): the characters Python calls
 * whitespace, which include U+001C..U+001F and not U+180E, U+200B or U+FEFF.
 *
 * The families are built in rather than interpreted from the Jinja text: a
 * template the module recognises is rendered by code written for it, which
 * knows which bytes come from which message (the spans a loss mask needs and
 * that an interpreter would have to trace through every string operation),
 * and an unknown template is an error rather than a Jinja subset run on a
 * template it may not fully understand. Recognition is exact for the short
 * templates (llama3, chatml, mistral: the text, surrounding whitespace aside)
 * and by the lines that define the rendering for the long ones (llama3.1,
 * llama3.2, qwen2.5, qwen3), whose revisions differ in the tool-calling
 * parts only; tool calls, tool results and documents are not supported.
 *
 * The rendered text holds the template's own special tokens as text (the
 * BOS of llama3 and mistral among them): encode it with special tokens
 * matched and without the post-processor's BOS/EOS, as apply_chat_template
 * does. */
#ifndef LORA_CHAT_H
#define LORA_CHAT_H

#include <stddef.h>

#include "core/err.h"

typedef struct {
	const char *role;    /* "system", "user" or "assistant" */
	const char *content; /* UTF-8, NUL-terminated */
} lora_chat_message;

/* A byte range of the rendered text. Spans partition the text in order.
 * train: assistant content and the end-of-turn token(s) that close it (these
 * get loss; for qwen3 also the <think> block the template writes around the
 * reasoning of an assistant message, which the model generates);
 * content: the bytes come from a message's content (not from the template),
 * so a caller can choose to tokenize them without matching special tokens. */
typedef struct {
	size_t begin, end;
	int train, content;
} lora_chat_span;

typedef struct lora_chat lora_chat;

#define LORA_CHAT_GENERATION_PROMPT 1u /* add_generation_prompt */
#define LORA_CHAT_NO_THINKING 2u       /* enable_thinking=False (Qwen3) */

/* Read tokenizer_config.json at config_json_path (its chat_template: a
 * string, or the list's "default"; without one, chat_template.jinja beside
 * it; bos_token and eos_token, strings or AddedToken objects) and choose the
 * family: format names one (the names above), or NULL recognises the
 * template. Messages read "<path>: ...". Returns 0, LORA_EIO, LORA_EFORMAT
 * (not JSON, no template, a template no family matches, a token the family
 * needs missing), LORA_EUSAGE (an unknown format name), LORA_ENOMEM. Free
 * with lora_chat_close. */
int lora_chat_open(lora_chat **out, const char *config_json_path, const char *format, lora_err *e);
/* The same from the n bytes of a tokenizer_config.json, named path in
 * messages (no chat_template.jinja is looked for). */
int lora_chat_parse(lora_chat **out, const char *path, const char *json, size_t n, const char *format, lora_err *e);

/* Render messages m[0..n) with flags (LORA_CHAT_*) into a new
 * NUL-terminated *text (caller frees) and, when spans is not NULL, a new
 * array *spans of *nspans spans (caller frees). Returns 0, LORA_EINVAL (no
 * messages, content not UTF-8, an unknown role, an order the template
 * refuses: the message names the message, "message 2: ...", and quotes the
 * template's own exception; callers add their file and line), LORA_ENOMEM. */
int lora_chat_render(const lora_chat *c, const lora_chat_message *m, size_t n, unsigned flags, char **text,
                     lora_chat_span **spans, size_t *nspans, lora_err *e);

/* The text of a special token of the tokenizer_config.json at path (key
 * "eos_token", "bos_token": a string or an AddedToken object) into a new
 * *out (caller frees), NULL when absent or null. Returns 0, LORA_EIO,
 * LORA_EFORMAT, LORA_ENOMEM. */
int lora_chat_config_token(char **out, const char *config_json_path, const char *key, lora_err *e);

/* The family's name (one of the format names above). */
const char *lora_chat_format(const lora_chat *c);

/* The token that ends an assistant turn ("<|eot_id|>", "<|im_end|>", the
 * EOS for mistral): generation stops there. */
const char *lora_chat_end_of_turn(const lora_chat *c);

/* The date llama3.2 writes ("26 Jul 2024" form; at most 31 bytes), instead
 * of today's: apply_chat_template's date_string. NULL restores today's. */
int lora_chat_set_date(lora_chat *c, const char *date, lora_err *e);

void lora_chat_close(lora_chat *c);

#endif
