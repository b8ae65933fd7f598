#include "text/jsonl.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"

/* axolotl's AlpacaPrompter (instruct style) */
#define ALPACA_INPUT                                                                                                \
	"Below is an instruction that describes a task, paired with an input that provides further context. Write a " \
	"response that appropriately completes the request.\n\n"
#define ALPACA_NO_INPUT \
	"Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"

static const char *const roles[] = {"system", "user", "assistant"};

/* The string value of key, or NULL with *bad set when it is there but not
 * a string. */
static const char *str(const cJSON *o, const char *key, int *bad)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (v && !cJSON_IsString(v))
		*bad = 1;
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int need(const char *s, int bad, const char *where, const char *key, const char *kind, lora_err *e)
{
	if (bad)
		return lora_err_set(e, LORA_EFORMAT, "%s: '%s' is not a string", where, key);
	if (!s)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s example without '%s'", where, kind, key);
	return 0;
}

static int messages(lora_jsonl_example *x, const cJSON *arr, const char *where, lora_err *e)
{
	if (!cJSON_IsArray(arr))
		return lora_err_set(e, LORA_EFORMAT, "%s: 'messages' is not an array", where);
	size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
	if (!n)
		return lora_err_set(e, LORA_EFORMAT, "%s: 'messages' is empty", where);
	if (!(x->msgs = calloc(n, sizeof *x->msgs)))
		return lora_err_nomem(e);
	/* messages are counted from 1, as lora_chat_render counts them */
	for (const cJSON *m = arr->child; m; m = m->next, i++) {
		int bad = 0, known = 0;
		if (!cJSON_IsObject(m))
			return lora_err_set(e, LORA_EFORMAT, "%s: message %zu is not an object", where, i + 1);
		const char *role = str(m, "role", &bad), *content = str(m, "content", &bad);
		if (bad || !role || !content)
			return lora_err_set(e, LORA_EFORMAT, "%s: message %zu needs string 'role' and 'content'", where, i + 1);
		for (size_t r = 0; r < sizeof roles / sizeof *roles; r++)
			known |= !strcmp(role, roles[r]);
		if (!known)
			return lora_err_set(e, LORA_EFORMAT, "%s: message %zu: unknown role '%.40s' (system, user or assistant)",
			                    where, i + 1, role);
		x->msgs[i] = (lora_jsonl_message){role, content};
	}
	x->nmsgs = n;
	x->kind = LORA_JSONL_MESSAGES;
	return 0;
}

static int alpaca(lora_jsonl_example *x, const cJSON *o, const char *where, lora_err *e)
{
	int bad = 0, rc;
	const char *ins = str(o, "instruction", &bad);
	if ((rc = need(ins, bad, where, "instruction", "an instruction", e)))
		return rc;
	const char *in = str(o, "input", &bad);
	if ((rc = need(in ? in : "", bad, where, "input", "an instruction", e)))
		return rc;
	const char *out = str(o, "output", &bad);
	if ((rc = need(out, bad, where, "output", "an instruction", e)))
		return rc;
	size_t len = strlen(ALPACA_INPUT) + strlen(ins) + (in ? strlen(in) : 0) + 64;
	if (!(x->rendered = malloc(len)))
		return lora_err_nomem(e);
	if (in && *in) /* Python's `if input:` */
		snprintf(x->rendered, len, ALPACA_INPUT "### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n", ins, in);
	else
		snprintf(x->rendered, len, ALPACA_NO_INPUT "### Instruction:\n%s\n\n### Response:\n", ins);
	x->kind = LORA_JSONL_PROMPT;
	x->prompt = x->rendered;
	x->completion = out;
	return 0;
}

int lora_jsonl_parse(lora_jsonl_example *x, const char *where, const char *line, size_t n, lora_err *e)
{
	cJSON *o;
	int rc, bad = 0;
	memset(x, 0, sizeof *x);
	if (n > LORA_JSONL_MAX_LINE)
		return lora_err_set(e, LORA_EFORMAT, "%s: longer than the limit (%zu bytes)", where, LORA_JSONL_MAX_LINE);
	if ((rc = lora_json_parse(&o, where, "the line", line, n, e)))
		return rc;
	x->root = o;
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
	if (msgs)
		return messages(x, msgs, where, e);
	if (cJSON_GetObjectItemCaseSensitive(o, "prompt") || cJSON_GetObjectItemCaseSensitive(o, "completion")) {
		x->prompt = str(o, "prompt", &bad);
		if ((rc = need(x->prompt, bad, where, "prompt", "a prompt/completion", e)))
			return rc;
		x->completion = str(o, "completion", &bad);
		if ((rc = need(x->completion, bad, where, "completion", "a prompt/completion", e)))
			return rc;
		x->kind = LORA_JSONL_PROMPT;
		return 0;
	}
	if (cJSON_GetObjectItemCaseSensitive(o, "instruction") || cJSON_GetObjectItemCaseSensitive(o, "output"))
		return alpaca(x, o, where, e);
	x->text = str(o, "text", &bad);
	if (bad)
		return lora_err_set(e, LORA_EFORMAT, "%s: 'text' is not a string", where);
	if (!x->text)
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: none of the keys text, prompt/completion, instruction/output, messages", where);
	x->kind = LORA_JSONL_TEXT;
	return 0;
}

void lora_jsonl_free(lora_jsonl_example *x)
{
	cJSON_Delete(x->root);
	free(x->msgs);
	free(x->rendered);
	memset(x, 0, sizeof *x);
}
