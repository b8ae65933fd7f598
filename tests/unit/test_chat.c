/* chat: templates rendered against Python's jinja2 under transformers'
 * environment. test_chat DIR reads DIR/FORMAT.golden.json (written by
 * tests/ref/chat_ref.py from the real templates): every conversation under
 * every flag gives the golden text, or the template's exception. The
 * spans partition the text, content spans are bytes of a message's
 * content, and a few conversations have their spans written out by hand.
 * Then recognition, the errors of the config reader and our refusals. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/json.h"
#include "core/path.h"
#include "text/chat.h"

static const char *const names[] = {"llama3", "llama3.1", "llama3.2", "chatml", "qwen2.5", "qwen3", "mistral"};

static char *fixture(const char *dir, const char *name, const char *suffix)
{
	char file[64];
	snprintf(file, sizeof file, "%s%s", name, suffix);
	return lora_path_join(dir, file);
}

/* The spans of text: in order, covering it, content spans inside some
 * message's content. */
static void check_spans(const char *what, const char *text, const lora_chat_span *sp, size_t n,
                        const lora_chat_message *m, size_t nm)
{
	size_t at = 0;
	int ok = 1;
	for (size_t i = 0; i < n && ok; i++) {
		ok = sp[i].begin == at && sp[i].end > sp[i].begin;
		at = sp[i].end;
		if (ok && sp[i].content) {
			size_t len = sp[i].end - sp[i].begin;
			int found = 0;
			for (size_t k = 0; k < nm && !found; k++)
				for (const char *p = m[k].content; !found && strlen(p) >= len; p++)
					found = !memcmp(p, text + sp[i].begin, len);
			ok = found;
		}
	}
	CHECK(ok && at == strlen(text), "%s: spans do not partition the text into template and content", what);
}

static void check_case(const char *name, const lora_chat *c, const cJSON *cs, int idx)
{
	const cJSON *msgs = cJSON_GetObjectItem(cs, "messages"), *it;
	size_t n = (size_t)cJSON_GetArraySize(msgs), k = 0;
	lora_chat_message *m = calloc(n ? n : 1, sizeof *m);
	cJSON_ArrayForEach(it, msgs) {
		m[k].role = cJSON_GetObjectItem(it, "role")->valuestring;
		m[k++].content = cJSON_GetObjectItem(it, "content")->valuestring;
	}
	unsigned flags = (cJSON_IsTrue(cJSON_GetObjectItem(cs, "generation_prompt")) ? LORA_CHAT_GENERATION_PROMPT : 0) |
	                 (cJSON_IsTrue(cJSON_GetObjectItem(cs, "thinking")) ? 0 : LORA_CHAT_NO_THINKING);
	const cJSON *want = cJSON_GetObjectItem(cs, "text"), *err = cJSON_GetObjectItem(cs, "error");
	char *text = NULL;
	lora_chat_span *sp = NULL;
	size_t nsp = 0;
	lora_err e = {0};
	int rc = lora_chat_render(c, m, n, flags, &text, &sp, &nsp, &e);
	char what[96];
	snprintf(what, sizeof what, "%s case %d (flags %u)", name, idx, flags);
	if (want) {
		CHECK(rc == 0 && !strcmp(text, want->valuestring), "%s: rendered\n'%s'\nwant\n'%s' (%s)", what,
		      text ? text : "", want->valuestring, rc ? e.msg : "");
		if (!rc)
			check_spans(what, text, sp, nsp, m, n);
	} else {
		CHECK(rc == LORA_EINVAL && strstr(e.msg, err->valuestring) && !text && !sp,
		      "%s: rc %d '%s', want the template's exception '%s'", what, rc, e.msg, err->valuestring);
	}
	free(text);
	free(sp);
	free(m);
}

static void check_golden(const char *dir, const char *name)
{
	/* The Llama templates are not in the repository: their formats are
	 * named, with llama-tokens.json's tokens. A DIR that holds the real configs
	 * (NAME.json with the template) has them recognised. */
	char *cfg = fixture(dir, name, ".json");
	const char *format = NULL;
	if (!lora_path_is_file(cfg)) {
		free(cfg);
		cfg = fixture(dir, "llama-tokens", ".json");
		format = name;
	}
	char *gold = fixture(dir, name, ".golden.json");
	cJSON *g = NULL;
	lora_chat *c = NULL;
	lora_err e = {0};
	int rc = lora_chat_open(&c, cfg, format, &e);
	CHECK(rc == 0 && !strcmp(lora_chat_format(c), name), "%s: opened as %s (%s)", name, rc ? "-" : lora_chat_format(c),
	      e.msg);
	if (!rc && !lora_json_read_file(&g, gold, 0, &e)) {
		/* llama3.2's goldens pass date_string; llama3.1's keep the template's */
		if (!strcmp(name, "llama3.2"))
			lora_chat_set_date(c, cJSON_GetObjectItem(g, "date")->valuestring, &e);
		const cJSON *cs;
		int i = 0;
		cJSON_ArrayForEach(cs, cJSON_GetObjectItem(g, "cases")) check_case(name, c, cs, i++);
		CHECK(i >= 100, "%s: %d cases", name, i);
	}
	cJSON_Delete(g);
	lora_chat_close(c);
	free(cfg);
	free(gold);
}

/* Render and compare text and spans written as "T" train, "C" content,
 * "TC" both, "-" neither, one letter group per span. */
static void check_spans_exact(const char *dir, const char *name, const lora_chat_message *m, size_t n, unsigned flags,
                              const char *const *want_text, const char *const *want_kind)
{
	char *cfg = fixture(dir, strncmp(name, "llama3", 6) ? name : "llama-tokens", ".json");
	lora_chat *c = NULL;
	lora_err e = {0};
	char *text = NULL;
	lora_chat_span *sp = NULL;
	size_t nsp = 0, k = 0;
	int rc = lora_chat_open(&c, cfg, name, &e);
	if (!rc)
		rc = lora_chat_render(c, m, n, flags, &text, &sp, &nsp, &e);
	CHECK(rc == 0, "%s: %s", name, e.msg);
	for (k = 0; !rc && k < nsp && want_text[k]; k++) {
		size_t len = sp[k].end - sp[k].begin;
		char kind[3] = "-";
		if (sp[k].train || sp[k].content)
			snprintf(kind, sizeof kind, "%s%s", sp[k].train ? "T" : "", sp[k].content ? "C" : "");
		CHECK(len == strlen(want_text[k]) && !memcmp(text + sp[k].begin, want_text[k], len) &&
		      !strcmp(kind, want_kind[k]), "%s: span %zu is '%.*s' (%s), want '%s' (%s)", name, k, (int)len,
		      text + sp[k].begin, kind, want_text[k], want_kind[k]);
	}
	CHECK(rc || (k == nsp && !want_text[k]), "%s: %zu spans", name, nsp);
	free(text);
	free(sp);
	lora_chat_close(c);
	free(cfg);
}

static void check_hand_spans(const char *dir)
{
	const lora_chat_message conv[] = {{"system", " S "}, {"user", "U"}, {"assistant", "\tA\n"}};
	check_spans_exact(dir, "llama3", conv, 3, LORA_CHAT_GENERATION_PROMPT,
	                  (const char *const[]){"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n", "S",
	                                        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n", "U",
	                                        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "A", "<|eot_id|>",
	                                        "<|start_header_id|>assistant<|end_header_id|>\n\n", NULL},
	                  (const char *const[]){"-", "C", "-", "C", "-", "TC", "T", "-"});
	check_spans_exact(dir, "qwen2.5", conv + 1, 2, 0,
	                  (const char *const[]){"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
	                                        "helpful assistant.<|im_end|>\n<|im_start|>user\n",
	                                        "U", "<|im_end|>\n<|im_start|>assistant\n", "\tA\n", "<|im_end|>", "\n", NULL},
	                  (const char *const[]){"-", "C", "-", "TC", "T", "-"});
	const lora_chat_message think[] = {{"user", "q"}, {"assistant", "<think>r</think>\n\na"}};
	check_spans_exact(dir, "qwen3", think, 2, 0,
	                  (const char *const[]){"<|im_start|>user\n", "q", "<|im_end|>\n<|im_start|>assistant\n",
	                                        "<think>\n", "r", "\n</think>\n\n", "a", "<|im_end|>", "\n", NULL},
	                  (const char *const[]){"-", "C", "-", "T", "TC", "T", "TC", "T", "-"});
	check_spans_exact(dir, "mistral", think, 2, 0,
	                  (const char *const[]){"<s>[INST] ", "q", " [/INST]", "<think>r</think>\n\na", "</s>", NULL},
	                  (const char *const[]){"-", "C", "-", "TC", "T"});
}

static void check_open(const char *dir, const char *name, const char *format, const char *json, int want_rc,
                       const char *want_msg)
{
	lora_chat *c = NULL;
	lora_err e = {0};
	int rc = json ? lora_chat_parse(&c, name, json, strlen(json), format, &e) : lora_chat_open(&c, name, format, &e);
	CHECK(rc == want_rc && (rc ? !strcmp(e.msg, want_msg) && !c : !strcmp(lora_chat_format(c), want_msg)),
	      "%s: rc %d '%s', want %d '%s'", name, rc, rc ? e.msg : lora_chat_format(c), want_rc, want_msg);
	lora_chat_close(c);
	(void)dir;
}

static void check_errors(const char *dir)
{
	char *cfg = fixture(dir, "qwen3", ".json");
	const char *fam = "(llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, mistral)";
	char msg[512];
	snprintf(msg, sizeof msg, "%s: no bos_token, which the mistral template writes", cfg);
	check_open(dir, cfg, "mistral", NULL, LORA_EFORMAT, msg);
	check_open(dir, cfg, "chatml", NULL, 0, "chatml");
	check_open(dir, cfg, "qwen4", NULL, LORA_EUSAGE, "unknown chat format 'qwen4' (llama3, llama3.1, llama3.2, "
	                                                 "chatml, qwen2.5, qwen3, mistral)");
	free(cfg);
	snprintf(msg, sizeof msg, "t.json: chat_template: not a template of a known family %s; name a chat format to "
	                          "render it as one of them", fam);
	check_open(dir, "t.json", NULL, "{\"chat_template\": \"{{ messages }}\"}", LORA_EFORMAT, msg);
	/* a ChatML template with one byte more is not the one known */
	check_open(dir, "t.json", NULL,
	           "{\"chat_template\": \"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\\\n' + "
	           "message['content'] + '<|im_end|>' + '\\\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
	           "'<|im_start|>assistant\\\\n' }}{% endif %} \\n\"}", 0, "chatml");
	check_open(dir, "t.json", NULL,
	           "{\"chat_template\": \"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\\\n' + "
	           "message['content'] + '<|im_end|>' + '\\\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
	           "'<|im_start|>assistant\\\\n' }}{% endif %}.\"}", LORA_EFORMAT, msg);
	snprintf(msg, sizeof msg, "t.json: no chat_template (name a chat format to use one of %s", fam + 1);
	check_open(dir, "t.json", NULL, "{\"bos_token\": \"<s>\"}", LORA_EFORMAT, msg);
	check_open(dir, "t.json", "llama3", "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}}", 0, "llama3");
	check_open(dir, "t.json", "llama3", "{\"bos_token\": 7}", LORA_EFORMAT,
	           "t.json: bos_token: not a string nor a token with a \"content\" string");
	check_open(dir, "t.json", "llama3.2", "{\"bos_token\": null}", LORA_EFORMAT,
	           "t.json: no bos_token, which the llama3.2 template writes");
	check_open(dir, "t.json", NULL, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}",
	           LORA_EFORMAT, "t.json: chat_template: not a string nor a list with a \"default\" template");
	check_open(dir, "t.json", NULL, "[1]", LORA_EFORMAT, "t.json: file is not a JSON object");
	check_open(dir, "/nonexistent/tokenizer_config.json", NULL, NULL, LORA_EIO,
	           "/nonexistent/tokenizer_config.json: No such file or directory");

	/* our refusals, and the template's */
	lora_chat *c = NULL;
	lora_err e = {0};
	char *mcfg = fixture(dir, "mistral", ".json");
	CHECK(lora_chat_open(&c, mcfg, NULL, &e) == 0, "mistral: %s", e.msg);
	free(mcfg);
	if (!c)
		return;
	char *text = (char *)"x";
	struct {
		lora_chat_message m[2];
		size_t n;
		const char *msg;
	} bad[] = {
		{{{"user", "a"}}, 0, "no messages"},
		{{{"user", "a"}, {"tool", "b"}}, 2, "message 2: unknown role 'tool' (system, user or assistant)"},
		{{{"User", "a"}}, 1, "message 1: unknown role 'User' (system, user or assistant)"},
		{{{"user", "a\xff"}}, 1, "message 1 (user): content is not UTF-8 at byte 1"},
		{{{"user", "a"}, {"user", NULL}}, 2, "message 2: no content"},
		{{{"system", "s"}, {"user", "a"}}, 2, "message 1 (system): the template refuses it: Conversation roles "
		                                       "must alternate user/assistant/user/assistant/..."},
		{{{"user", "u"}, {"system", "s"}}, 2, "message 2 (system): the template refuses it: Only user and "
		                                       "assistant roles are supported!"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		int rc = lora_chat_render(c, bad[i].m, bad[i].n, 0, &text, NULL, NULL, &e);
		CHECK(rc == LORA_EINVAL && !strcmp(e.msg, bad[i].msg) && !text, "refusal %zu: rc %d '%s', want '%s'", i, rc,
		      e.msg, bad[i].msg);
	}
	CHECK(!strcmp(lora_chat_end_of_turn(c), "</s>"), "mistral's end of turn: %s", lora_chat_end_of_turn(c));
	lora_chat_close(c);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "tests/fixtures/chat";
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		check_golden(dir, names[i]);
	check_hand_spans(dir);
	check_errors(dir);
	DONE();
}
