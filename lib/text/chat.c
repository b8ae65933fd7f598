#include "text/chat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/path.h"
#include "core/rng.h"
#include "core/shape.h"
#include "core/utf8.h"

enum { LLAMA3, LLAMA31, LLAMA32, CHATML, QWEN25, QWEN3, MISTRAL, NFAMILY };

static const char *const family_name[NFAMILY] = {"llama3", "llama3.1", "llama3.2", "chatml",
                                                 "qwen2.5", "qwen3", "mistral"};
#define FAMILY_LIST "llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, mistral"

/* FNV-1a of the short templates recognised whole (surrounding whitespace
 * left out): Meta-Llama-3-8B-Instruct's, the plain ChatML one
 * (OpenHermes-2.5-Mistral-7B's) and Mistral-7B-Instruct-v0.2's. */
static const struct {
	uint64_t hash;
	int family;
} exact[] = {
	{0x0e60067a5537498eull, LLAMA3},
	{0xa41d6bae9b9141bcull, CHATML},
	{0x8c734b90b4f8d84dull, MISTRAL},
};

/* The lines of the long templates that decide the rendering of system,
 * user and assistant messages; every one must be present (and the
 * excluded text absent). Their revisions differ in the tool parts only. */
#define L3_MSG "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>'"
#define L3_SYS "{%- set system_message = messages[0]['content']|trim %}"
#define L3_CUT "{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
#define L3_TODAY "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}"
#define QW_MSG "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
#define QW_GEN "{{- '<|im_start|>assistant\\n' }}"
static const struct {
	int family;
	const char *need[8];
	const char *absent;
} marked[] = {
	{LLAMA32, {L3_MSG, L3_SYS, L3_CUT, L3_TODAY, "{%- set date_string = strftime_now(\"%d %b %Y\") %}"}, NULL},
	{LLAMA31, {L3_MSG, L3_SYS, L3_CUT, L3_TODAY, "{%- set date_string = \"26 Jul 2024\" %}"}, "strftime_now"},
	{QWEN25,
	 {QW_MSG, QW_GEN,
	  "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}",
	  "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"},
	 "<think>"},
	{QWEN3,
	 {QW_MSG, QW_GEN, "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}",
	  "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}",
	  "{%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}",
	  "{%- if loop.last or (not loop.last and reasoning_content) %}",
	  "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}",
	  "{%- if enable_thinking is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}"},
	 "You are Qwen"},
};

struct lora_chat {
	int family;
	char *bos, *eos;
	char date[32]; /* llama3.2's; "" for today's */
};

/* The text being rendered and its spans. */
typedef struct {
	char *s;
	size_t n, cap;
	lora_chat_span *sp;
	size_t ns, spcap;
	int oom;
} rendering;

static void put(rendering *o, const char *s, size_t n, int train, int content)
{
	if (!n || o->oom)
		return;
	if (lora_shape_grow(&o->s, &o->cap, o->n + n + 1, 1)) {
		o->oom = 1;
		return;
	}
	memcpy(o->s + o->n, s, n);
	lora_chat_span *last = o->ns ? &o->sp[o->ns - 1] : NULL;
	if (last && last->train == train && last->content == content) {
		last->end += n;
	} else {
		if (lora_shape_grow(&o->sp, &o->spcap, o->ns + 1, sizeof *o->sp)) {
			o->oom = 1;
			return;
		}
		o->sp[o->ns++] = (lora_chat_span){o->n, o->n + n, train, content};
	}
	o->n += n;
	o->s[o->n] = '\0';
}

/* Template text. */
static void tpl(rendering *o, const char *s, int train) { put(o, s, strlen(s), train, 0); }

/* Python's str.isspace(), which str.strip() and Jinja's trim use: bidi
 * classes WS, B and S and category Zs, so U+001C..U+001F are spaces and
 * U+180E, U+200B and U+FEFF are not (Unicode's White_Space differs). */
static int py_space(unsigned cp)
{
	return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
	       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
	       cp == 0x205f || cp == 0x3000;
}

/* Python's s.strip() of s[*b..*e) (valid UTF-8). */
static void py_strip(const char *s, size_t *b, size_t *e)
{
	unsigned cp;
	while (*b < *e) {
		int k = lora_utf8_decode(s + *b, &cp);
		if (!py_space(cp))
			break;
		*b += (size_t)k;
	}
	while (*e > *b) {
		size_t k = *e - 1;
		while (k > *b && ((unsigned char)s[k] & 0xc0) == 0x80)
			k--;
		lora_utf8_decode(s + k, &cp);
		if (!py_space(cp))
			break;
		*e = k;
	}
}

/* s.lstrip('\n') and s.rstrip('\n') of s[*b..*e). */
static void lstrip_nl(const char *s, size_t *b, size_t e)
{
	while (*b < e && s[*b] == '\n')
		++*b;
}
static void rstrip_nl(const char *s, size_t b, size_t *e)
{
	while (*e > b && s[*e - 1] == '\n')
		--*e;
}

/* Offset of the first (last) occurrence of w in s[b..e), or SIZE_MAX. */
static size_t find(const char *s, size_t b, size_t e, const char *w, int last)
{
	size_t k = strlen(w), at = SIZE_MAX;
	for (size_t i = b; i + k <= e; i++)
		if (!memcmp(s + i, w, k)) {
			at = i;
			if (!last)
				break;
		}
	return at;
}

static void content(rendering *o, const char *s, size_t b, size_t e, int train) { put(o, s + b, e - b, train, 1); }

static int is_user(const lora_chat_message *m) { return !strcmp(m->role, "user"); }
static int is_assistant(const lora_chat_message *m) { return !strcmp(m->role, "assistant"); }
static int is_system(const lora_chat_message *m) { return !strcmp(m->role, "system"); }

/* <|start_header_id|>ROLE<|end_header_id|>\n\nTRIMMED<|eot_id|> */
static void llama3_message(rendering *o, const lora_chat_message *m)
{
	int a = is_assistant(m);
	size_t b = 0, e = strlen(m->content);
	tpl(o, "<|start_header_id|>", 0);
	tpl(o, m->role, 0);
	tpl(o, "<|end_header_id|>\n\n", 0);
	py_strip(m->content, &b, &e);
	content(o, m->content, b, e, a);
	tpl(o, "<|eot_id|>", a);
}

static void llama3(const lora_chat *c, rendering *o, const lora_chat_message *m, size_t n)
{
	size_t i = 0;
	if (c->family != LLAMA3) {
		char today[32];
		const char *date = c->date;
		if (c->family == LLAMA31 && !*date) {
			date = "26 Jul 2024";
		} else if (!*date) {
			time_t t = time(NULL);
			struct tm tm;
			if (!localtime_r(&t, &tm) || !strftime(today, sizeof today, "%d %b %Y", &tm))
				strcpy(today, "26 Jul 2024");
			date = today;
		}
		tpl(o, c->bos, 0);
		tpl(o, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ", 0);
		tpl(o, date, 0);
		tpl(o, "\n\n", 0);
		if (is_system(&m[0])) {
			size_t b = 0, e = strlen(m[0].content);
			py_strip(m[0].content, &b, &e);
			content(o, m[0].content, b, e, 0);
			i = 1;
		}
		tpl(o, "<|eot_id|>", 0);
	}
	for (size_t k = i; k < n; k++) {
		if (k == 0 && c->family == LLAMA3)
			tpl(o, c->bos, 0);
		llama3_message(o, &m[k]);
	}
}

static void chatml_message(rendering *o, const lora_chat_message *m)
{
	int a = is_assistant(m);
	tpl(o, "<|im_start|>", 0);
	tpl(o, m->role, 0);
	tpl(o, "\n", 0);
	put(o, m->content, strlen(m->content), a, 1);
	tpl(o, "<|im_end|>", a);
	tpl(o, "\n", 0);
}

/* Qwen3's assistant message i: the reasoning before "</think>" (after the
 * last "<think>" there) and the answer after the last "</think>", the
 * reasoning kept in a think block only after the last query. */
static void qwen3_assistant(rendering *o, const char *s, int after_query, int last)
{
	size_t n = strlen(s), cb = 0, rb = 0, re = 0;
	size_t close = find(s, 0, n, "</think>", 0);
	if (close != SIZE_MAX) {
		cb = find(s, 0, n, "</think>", 1) + strlen("</think>");
		lstrip_nl(s, &cb, n);
		re = close;
		rstrip_nl(s, 0, &re);
		size_t open = find(s, 0, re, "<think>", 1);
		rb = open == SIZE_MAX ? 0 : open + strlen("<think>");
		lstrip_nl(s, &rb, re);
	}
	tpl(o, "<|im_start|>assistant\n", 0);
	if (after_query && (last || re > rb)) {
		lstrip_nl(s, &rb, re); /* strip('\n'): the left side is done */
		rstrip_nl(s, rb, &re);
		tpl(o, "<think>\n", 1);
		content(o, s, rb, re, 1);
		tpl(o, "\n</think>\n\n", 1);
		lstrip_nl(s, &cb, n);
	}
	content(o, s, cb, n, 1);
	tpl(o, "<|im_end|>", 1);
	tpl(o, "\n", 0);
}

static int starts_ends(const char *s, const char *pre, const char *suf)
{
	size_t n = strlen(s), a = strlen(pre), b = strlen(suf);
	return n >= a && n >= b && !memcmp(s, pre, a) && !memcmp(s + n - b, suf, b);
}

static void chatml(const lora_chat *c, rendering *o, const lora_chat_message *m, size_t n, unsigned flags)
{
	size_t i = 0, last_query = n - 1;
	if (c->family != CHATML) {
		if (is_system(&m[0])) {
			chatml_message(o, &m[0]);
			i = 1;
		} else if (c->family == QWEN25) {
			tpl(o, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
			       "<|im_end|>\n", 0);
		}
	}
	/* Qwen3: the last user message that is not a tool response */
	for (size_t k = n; k-- > 0;)
		if (is_user(&m[k]) && !starts_ends(m[k].content, "<tool_response>", "</tool_response>")) {
			last_query = k;
			break;
		}
	for (size_t k = i; k < n; k++) {
		if (c->family == QWEN3 && is_assistant(&m[k]))
			qwen3_assistant(o, m[k].content, k > last_query, k == n - 1);
		else
			chatml_message(o, &m[k]);
	}
	if (flags & LORA_CHAT_GENERATION_PROMPT) {
		tpl(o, "<|im_start|>assistant\n", 0);
		if (c->family == QWEN3 && (flags & LORA_CHAT_NO_THINKING))
			tpl(o, "<think>\n\n</think>\n\n", 0);
	}
}

static int mistral(const lora_chat *c, rendering *o, const lora_chat_message *m, size_t n, lora_err *e)
{
	tpl(o, c->bos, 0);
	for (size_t k = 0; k < n; k++) {
		if (is_user(&m[k]) != (k % 2 == 0))
			return lora_err_set(e, LORA_EINVAL,
			                    "message %zu (%s): the template refuses it: Conversation roles must alternate "
			                    "user/assistant/user/assistant/...", k + 1, m[k].role);
		if (is_user(&m[k])) {
			tpl(o, "[INST] ", 0);
			put(o, m[k].content, strlen(m[k].content), 0, 1);
			tpl(o, " [/INST]", 0);
		} else if (is_assistant(&m[k])) {
			put(o, m[k].content, strlen(m[k].content), 1, 1);
			tpl(o, c->eos, 1);
		} else {
			return lora_err_set(e, LORA_EINVAL,
			                    "message %zu (%s): the template refuses it: Only user and assistant roles are "
			                    "supported!", k + 1, m[k].role);
		}
	}
	return 0;
}

int lora_chat_render(const lora_chat *c, const lora_chat_message *m, size_t n, unsigned flags, char **text,
                     lora_chat_span **spans, size_t *nspans, lora_err *e)
{
	rendering o = {0};
	int rc = 0;
	*text = NULL;
	if (spans)
		*spans = NULL, *nspans = 0;
	if (!n)
		return lora_err_set(e, LORA_EINVAL, "no messages");
	for (size_t k = 0; k < n; k++) {
		if (!m[k].role || !m[k].content)
			return lora_err_set(e, LORA_EINVAL, "message %zu: no %s", k + 1, m[k].role ? "content" : "role");
		if (!is_system(&m[k]) && !is_user(&m[k]) && !is_assistant(&m[k]))
			return lora_err_set(e, LORA_EINVAL, "message %zu: unknown role '%.64s' (system, user or assistant)",
			                    k + 1, m[k].role);
		size_t len = strlen(m[k].content), bad = lora_utf8_bad(m[k].content, len);
		if (bad != len)
			return lora_err_set(e, LORA_EINVAL, "message %zu (%s): content is not UTF-8 at byte %zu", k + 1,
			                    m[k].role, bad);
	}
	switch (c->family) {
	case LLAMA3: case LLAMA31: case LLAMA32:
		llama3(c, &o, m, n);
		if (flags & LORA_CHAT_GENERATION_PROMPT)
			tpl(&o, "<|start_header_id|>assistant<|end_header_id|>\n\n", 0);
		break;
	case MISTRAL:
		rc = mistral(c, &o, m, n, e);
		break;
	default:
		chatml(c, &o, m, n, flags);
	}
	if (!rc && o.oom)
		rc = lora_err_nomem(e);
	if (!rc && !o.s && !(o.s = calloc(1, 1)))
		rc = lora_err_nomem(e);
	if (rc) {
		free(o.s);
		free(o.sp);
		return rc;
	}
	*text = o.s;
	if (spans)
		*spans = o.sp, *nspans = o.ns;
	else
		free(o.sp);
	return 0;
}

/* A special token's text: a string or an AddedToken object's "content";
 * NULL when absent or null. */
static int token_text(char **out, const cJSON *cfg, const char *key, const char *path, lora_err *e)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, key);
	*out = NULL;
	if (!t || cJSON_IsNull(t))
		return 0;
	if (cJSON_IsObject(t))
		t = cJSON_GetObjectItemCaseSensitive(t, "content");
	if (!cJSON_IsString(t))
		return lora_err_set(e, LORA_EFORMAT, "%s: %s: not a string nor a token with a \"content\" string", path,
		                    key);
	return (*out = strdup(t->valuestring)) ? 0 : lora_err_nomem(e);
}

static int recognise(const char *t)
{
	size_t b = 0, n = strlen(t);
	while (b < n && strchr(" \t\r\n", t[b]))
		b++;
	while (n > b && strchr(" \t\r\n", t[n - 1]))
		n--;
	uint64_t h = lora_rng_fnv1a(LORA_FNV_INIT, t + b, n - b);
	for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
		if (exact[i].hash == h)
			return exact[i].family;
	for (size_t i = 0; i < sizeof marked / sizeof *marked; i++) {
		int ok = !marked[i].absent || !strstr(t, marked[i].absent);
		for (size_t k = 0; ok && k < 8 && marked[i].need[k]; k++)
			ok = strstr(t, marked[i].need[k]) != NULL;
		if (ok)
			return marked[i].family;
	}
	return -1;
}

/* The template from cfg's chat_template (a string, or the "default" of a
 * list of {name, template}); *t NULL when there is none. */
static int template_of(const char **t, const cJSON *cfg, const char *path, lora_err *e)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *x;
	*t = NULL;
	if (!j || cJSON_IsNull(j))
		return 0;
	if (cJSON_IsString(j)) {
		*t = j->valuestring;
		return 0;
	}
	if (cJSON_IsArray(j))
		cJSON_ArrayForEach(x, j) {
			const cJSON *name = cJSON_GetObjectItemCaseSensitive(x, "name");
			const cJSON *tp = cJSON_GetObjectItemCaseSensitive(x, "template");
			if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(tp)) {
				*t = tp->valuestring;
				return 0;
			}
		}
	return lora_err_set(e, LORA_EFORMAT, "%s: chat_template: not a string nor a list with a \"default\" template",
	                    path);
}

static int setup(lora_chat *c, const cJSON *cfg, const char *tmpl, const char *path, const char *format,
                 lora_err *e)
{
	int rc;
	if ((rc = token_text(&c->bos, cfg, "bos_token", path, e)) || (rc = token_text(&c->eos, cfg, "eos_token", path, e)))
		return rc;
	if (format) {
		c->family = -1;
		for (int i = 0; i < NFAMILY; i++)
			if (!strcmp(format, family_name[i]))
				c->family = i;
		if (c->family < 0)
			return lora_err_set(e, LORA_EUSAGE, "unknown chat format '%.64s' (" FAMILY_LIST ")", format);
	} else if (!tmpl) {
		return lora_err_set(e, LORA_EFORMAT, "%s: no chat_template (name a chat format to use one of " FAMILY_LIST ")",
		                    path);
	} else if ((c->family = recognise(tmpl)) < 0) {
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: chat_template: not a template of a known family (" FAMILY_LIST
		                    "); name a chat format to render it as one of them", path);
	}
	int need_bos = c->family == LLAMA3 || c->family == LLAMA31 || c->family == LLAMA32 || c->family == MISTRAL;
	if (need_bos && !c->bos)
		return lora_err_set(e, LORA_EFORMAT, "%s: no bos_token, which the %s template writes", path,
		                    family_name[c->family]);
	if (c->family == MISTRAL && !c->eos)
		return lora_err_set(e, LORA_EFORMAT, "%s: no eos_token, which the mistral template writes", path);
	return 0;
}

int lora_chat_parse(lora_chat **out, const char *path, const char *json, size_t n, const char *format, lora_err *e)
{
	cJSON *cfg = NULL;
	const char *tmpl;
	lora_chat *c = calloc(1, sizeof *c);
	int rc = c ? 0 : lora_err_nomem(e);
	*out = NULL;
	if (!rc)
		rc = lora_json_parse(&cfg, path, "file", json, n, e);
	if (!rc)
		rc = template_of(&tmpl, cfg, path, e);
	if (!rc)
		rc = setup(c, cfg, tmpl, path, format, e);
	cJSON_Delete(cfg);
	if (rc)
		lora_chat_close(c);
	else
		*out = c;
	return rc;
}

int lora_chat_open(lora_chat **out, const char *config_json_path, const char *format, lora_err *e)
{
	cJSON *cfg = NULL;
	char *side = NULL, *dir = NULL, *tbuf = NULL;
	const char *tmpl = NULL;
	size_t tn;
	lora_chat *c = calloc(1, sizeof *c);
	int rc = c ? 0 : lora_err_nomem(e);
	*out = NULL;
	if (!rc)
		rc = lora_json_read_file(&cfg, config_json_path, 0, e);
	if (!rc)
		rc = template_of(&tmpl, cfg, config_json_path, e);
	/* newer tokenizers keep the template in a file beside the config */
	if (!rc && !tmpl && !format) {
		dir = lora_path_dir(config_json_path);
		side = dir ? lora_path_join(dir, "chat_template.jinja") : NULL;
		if (!side)
			rc = lora_err_nomem(e);
		else if (lora_path_exists(side) && !(rc = lora_json_slurp(&tbuf, &tn, side, 0, e)))
			tmpl = tbuf;
		if (!rc && tmpl && lora_utf8_bad(tbuf, tn) != tn)
			rc = lora_err_set(e, LORA_EFORMAT, "%s: not UTF-8", side);
	}
	if (!rc)
		rc = setup(c, cfg, tmpl, tbuf ? side : config_json_path, format, e);
	cJSON_Delete(cfg);
	free(tbuf);
	free(side);
	free(dir);
	if (rc)
		lora_chat_close(c);
	else
		*out = c;
	return rc;
}

int lora_chat_config_token(char **out, const char *config_json_path, const char *key, lora_err *e)
{
	cJSON *cfg = NULL;
	*out = NULL;
	int rc = lora_json_read_file(&cfg, config_json_path, 0, e);
	if (!rc)
		rc = token_text(out, cfg, key, config_json_path, e);
	cJSON_Delete(cfg);
	return rc;
}

const char *lora_chat_format(const lora_chat *c) { return family_name[c->family]; }

const char *lora_chat_end_of_turn(const lora_chat *c)
{
	switch (c->family) {
	case LLAMA3: case LLAMA31: case LLAMA32:
		return "<|eot_id|>";
	case MISTRAL:
		return c->eos;
	default:
		return "<|im_end|>";
	}
}

int lora_chat_set_date(lora_chat *c, const char *date, lora_err *e)
{
	if (!date) {
		c->date[0] = '\0';
		return 0;
	}
	size_t n = strlen(date);
	if (!n || n >= sizeof c->date || lora_utf8_bad(date, n) != n)
		return lora_err_set(e, LORA_EINVAL, "date '%.40s': not 1 to %zu bytes of UTF-8", date, sizeof c->date - 1);
	memcpy(c->date, date, n + 1);
	return 0;
}

void lora_chat_close(lora_chat *c)
{
	if (!c)
		return;
	free(c->bos);
	free(c->eos);
	free(c);
}
