/* tokenizer: encoding and decoding against the Hugging Face tokenizers
 * library. test_tokenizer DIR [NAME...] reads DIR/NAME.golden.json for each
 * fixture (or each NAME: the real tokenizers checked by hand)
 * (written by tests/ref/tokenizer_ref.js from the library's own answers):
 * every text's ids with and without special tokens, its decoding with
 * special tokens kept and skipped, and decodings of cut id sequences. Then
 * the errors: unsupported components named, bad files, invalid UTF-8, ids
 * out of range, and the Oniguruma-dialect regular expressions. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/json.h"
#include "core/pattern.h"
#include "core/unicode.h"
#include "core/utf8.h"
#include "text/tokenizer.h"

static const char *const names[] = {"llama3", "qwen", "gpt2", "smollm", "llama2", "mistral", "metaspace", "features"};

/* 1 if ids[0..n) equal the JSON array want. */
static int same_ids(const uint32_t *ids, size_t n, const cJSON *want)
{
	if ((size_t)cJSON_GetArraySize(want) != n)
		return 0;
	size_t i = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, want) {
		if (!cJSON_IsNumber(it) || it->valuedouble != ids[i++])
			return 0;
	}
	return 1;
}

static void check_decode(const char *name, lora_tokenizer *t, const uint32_t *ids, size_t n, int skip,
                         const char *want)
{
	lora_err e = {0};
	char *s = NULL;
	size_t len = 0;
	int rc = lora_tokenizer_decode(t, ids, n, skip, &s, &len, &e);
	CHECK(rc == 0 && len == strlen(want) && !memcmp(s, want, len), "%s: decode (skip %d) of %zu ids: '%s', want '%s' (%s)",
	      name, skip, n, s ? s : "", want, rc ? e.msg : "");
	free(s);
}

static void check_case(const char *name, lora_tokenizer *t, const cJSON *c)
{
	const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
	for (int special = 1; special >= 0; special--) {
		lora_tokenizer_ids ids = {0};
		lora_err e = {0};
		int rc = lora_tokenizer_encode(t, text, strlen(text), special, &ids, &e);
		const cJSON *want = cJSON_GetObjectItem(c, special ? "ids" : "plain");
		CHECK(rc == 0 && same_ids(ids.id, ids.n, want), "%s: '%s' (special %d): %zu ids, not the library's %d%s%s",
		      name, text, special, ids.n, cJSON_GetArraySize(want), rc ? ": " : "", rc ? e.msg : "");
		if (special) {
			check_decode(name, t, ids.id, ids.n, 0, cJSON_GetObjectItem(c, "decoded")->valuestring);
			check_decode(name, t, ids.id, ids.n, 1, cJSON_GetObjectItem(c, "skipped")->valuestring);
		}
		lora_tokenizer_ids_free(&ids);
	}
}

static void check_fixture(const char *dir, const char *name)
{
	char path[512];
	cJSON *g = NULL;
	lora_tokenizer *t = NULL;
	lora_err e = {0};
	snprintf(path, sizeof path, "%s/%s.golden.json", dir, name);
	int rc = lora_json_read_file(&g, path, 0, &e);
	CHECK(rc == 0, "%s", e.msg);
	snprintf(path, sizeof path, "%s/%s.json", dir, name);
	rc = rc ? rc : lora_tokenizer_open(&t, path, &e);
	CHECK(rc == 0, "%s", e.msg);
	if (rc)
		goto out;
	const cJSON *c, *cases = cJSON_GetObjectItem(g, "cases"), *decodes = cJSON_GetObjectItem(g, "decodes");
	CHECK(cJSON_GetArraySize(cases) >= 60 && cJSON_GetArraySize(decodes) >= 150, "%s: golden file too small", name);
	cJSON_ArrayForEach(c, cases)
		check_case(name, t, c);
	cJSON_ArrayForEach(c, decodes) {
		const cJSON *ids = cJSON_GetObjectItem(c, "ids"), *it;
		uint32_t *v = malloc(((size_t)cJSON_GetArraySize(ids) + 1) * sizeof *v);
		size_t n = 0;
		cJSON_ArrayForEach(it, ids)
			v[n++] = (uint32_t)it->valuedouble;
		check_decode(name, t, v, n, 0, cJSON_GetObjectItem(c, "text")->valuestring);
		free(v);
	}
	/* the same ids again, now from the word cache */
	check_case(name, t, cJSON_GetArrayItem(cases, 4));
out:
	lora_tokenizer_free(t);
	cJSON_Delete(g);
}

/* The error line of parsing json as "t.json" ("" if it parses). */
static const char *parse_error(const char *json)
{
	static lora_err e;
	lora_tokenizer *t = NULL;
	e.msg[0] = 0;
	if (!lora_tokenizer_parse(&t, "t.json", json, strlen(json), &e))
		lora_tokenizer_free(t);
	return e.msg;
}

#define MODEL "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"

static void check_errors(void)
{
	static const struct {
		const char *json, *msg;
	} bad[] = {
		{"{" MODEL ",\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", "t.json: pre_tokenizer type 'Whitespace' is not supported"},
		{"{" MODEL ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Punctuation\"}]}}",
		 "t.json: pre_tokenizer type 'Punctuation' is not supported"},
		{"{" MODEL ",\"normalizer\":{\"type\":\"Lowercase\"}}", "t.json: normalizer type 'Lowercase' is not supported"},
		{"{" MODEL ",\"decoder\":{\"type\":\"WordPiece\"}}", "t.json: decoder type 'WordPiece' is not supported"},
		{"{" MODEL ",\"post_processor\":{\"type\":\"RobertaProcessing\"}}", "t.json: post_processor type 'RobertaProcessing' is not supported"},
		{"{" MODEL ",\"normalizer\":{\"prepend\":\"x\"}}", "t.json: normalizer has no type"},
		{"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "t.json: model type 'Unigram' is not supported"},
		{"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "t.json: model type 'WordPiece' is not supported"},
		{"{" MODEL ",\"truncation\":{\"max_length\":5}}", "t.json: truncation is not supported (it must be null)"},
		{"{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{},\"merges\":[]}}", "t.json: model: BPE dropout is not supported"},
		{"{\"model\":{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"vocab\":{},\"merges\":[]}}",
		 "t.json: model: BPE continuing_subword_prefix is not supported"},
		{"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
		 "t.json: model merges: merge 1: token 'b' is not in the vocabulary"},
		{"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
		 "t.json: model merges: merge 1: token 'ab' is not in the vocabulary"},
		{"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b c\"]}}",
		 "t.json: model merges: merge 1: 'a b c' is not two tokens separated by a space"},
		{"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\",[\"a\",\"b\"]]}}",
		 "t.json: model merges: merge 2: strings and pairs are mixed"},
		{"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "t.json: model vocab: id 0 is given to 'a' and 'b'"},
		{"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "t.json: model vocab: 'a' has no id in [0, 16777215]"},
		{"{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"a\":0},\"merges\":[]}}",
		 "t.json: model: unk_token '<unk>' is not in the vocabulary"},
		{"{" MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},\"behavior\":\"Isolated\"}}",
		 "t.json: pre_tokenizer Split pattern '\\w+' is not a valid regular expression: the escape \\w is not supported at offset 0"},
		{"{" MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}}",
		 "t.json: pre_tokenizer Split: 'behavior' is not a split behavior"},
		{"{" MODEL ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{}}}",
		 "t.json: post_processor TemplateProcessing: special token '<s>' has no ids"},
		{"{" MODEL ",\"version\":\"2.0\"}", "t.json: unknown tokenizer version"},
		{"{\"model\":{}}", "t.json: model has no type"},
		{"[]", "t.json: file is not a JSON object"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *got = parse_error(bad[i].json);
		CHECK(!strcmp(got, bad[i].msg), "error %zu: '%s', want '%s'", i, got, bad[i].msg);
	}
	CHECK(!*parse_error("{" MODEL "}"), "the minimal tokenizer.json parses");

	/* a bare model: no decoder joins tokens with spaces; bad text, bad ids */
	lora_tokenizer *t;
	lora_err e = {0};
	const char *json = "{" MODEL "}";
	CHECK(!lora_tokenizer_parse(&t, "t.json", json, strlen(json), &e), "%s", e.msg);
	lora_tokenizer_ids ids = {0};
	CHECK(lora_tokenizer_encode(t, "abba\xff", 5, 1, &ids, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "text is not valid UTF-8 at byte 4"), "%s", e.msg);
	ids.n = 0;
	CHECK(!lora_tokenizer_encode(t, "abbac", 5, 1, &ids, &e) && ids.n == 3 && ids.id[0] == 2 && ids.id[1] == 1 &&
	          ids.id[2] == 0, "ab b a(c dropped, no unk): %zu ids", ids.n);
	char *s;
	size_t len;
	CHECK(!lora_tokenizer_decode(t, ids.id, ids.n, 0, &s, &len, &e) && !strcmp(s, "ab b a"), "joined with spaces");
	free(s);
	uint32_t out_of_range = 3;
	CHECK(lora_tokenizer_decode(t, &out_of_range, 1, 0, &s, &len, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "t.json: token id 3 is not in the vocabulary"), "%s", e.msg);
	CHECK(lora_tokenizer_vocab_size(t) == 3 && lora_tokenizer_token_id(t, "ab") == 2 &&
	          lora_tokenizer_token_id(t, "ba") == -1, "vocab size, token ids");
	lora_tokenizer_ids_free(&ids);
	lora_tokenizer_free(t);
}

/* The Oniguruma dialect: \s is White_Space exactly, refusals. */
static void check_onig(void)
{
	lora_pattern *p;
	lora_pattern_scan *sc;
	lora_err e = {0};
	CHECK(!lora_pattern_compile_onig(&p, "^\\s$", "re", &e), "%s", e.msg);
	CHECK(!lora_pattern_scan_new(&sc, p, &e), "%s", e.msg);
	int wrong = 0;
	for (unsigned cp = 0; cp < 0x110000; cp++) {
		char s[8];
		size_t n, ms, me;
		if (cp >= 0xd800 && cp < 0xe000)
			continue;
		n = (size_t)lora_utf8_encode(s, cp);
		int rc = lora_pattern_scan_find(sc, s, n, 0, &ms, &me, &e);
		if (rc != lora_unicode_is_space(cp) && wrong++ < 5)
			CHECK(0, "\\s on U+%04X: %d", cp, rc);
	}
	CHECK(!wrong, "\\s is White_Space");
	CHECK(lora_unicode_is_space(0x85) && !lora_unicode_is_space(0xfeff) && !lora_unicode_is_space(0x180e) &&
	          !lora_unicode_is_space(0x1c) && lora_unicode_is_space(0x3000), "White_Space spot checks");
	lora_pattern_scan_free(sc);
	lora_pattern_free(p);
	static const char *const refused[] = {"\\w", "\\b", "\\h", "(a)\\1", "[a[b]]", "[a&&b]", "(?m:a)", "\\p{Han}", "[\\S]"};
	for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
		p = NULL;
		CHECK(lora_pattern_compile_onig(&p, refused[i], "re", &e) == LORA_EINVAL, "'%s' refused", refused[i]);
		lora_pattern_free(p);
	}
}

/* Streamed text, one id at a time after a prompt: every piece is whole
 * characters, and the pieces make what the whole sequence decodes to past
 * the prompt's text. The texts hold characters the small vocabularies
 * have no token for, which come as several byte tokens (byte-level, or
 * SentencePiece's byte fallback), and special tokens. */
static void check_stream(const char *dir, const char *name, const char *prompt, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s.json", dir, name);
	lora_tokenizer *t = NULL;
	lora_err e = {0};
	lora_tokenizer_ids p = {0}, g = {0}, all = {0};
	lora_tokenizer_stream st = {0};
	char *whole = NULL, *head = NULL, *got = calloc(1, 1);
	size_t nwhole = 0, nhead = 0, ngot = 0;
	int rc = lora_tokenizer_open(&t, path, &e);
	if (!rc)
		rc = lora_tokenizer_encode(t, prompt, strlen(prompt), 1, &p, &e);
	if (!rc)
		rc = lora_tokenizer_encode(t, text, strlen(text), 0, &g, &e);
	if (!rc)
		rc = lora_tokenizer_stream_init(&st, t, p.id, p.n, &e);
	for (size_t i = 0; !rc && i < p.n + g.n; i++)
		rc = lora_tokenizer_ids_push(&all, i < p.n ? p.id[i] : g.id[i - p.n]);
	for (size_t i = 0; !rc && i <= g.n; i++) {
		const char *piece;
		size_t n;
		rc = i < g.n ? lora_tokenizer_stream_push(&st, g.id[i], &piece, &n, &e)
		             : lora_tokenizer_stream_finish(&st, &piece, &n, &e);
		CHECK(rc || lora_utf8_bad(piece, n) == n, "%s: stream piece %zu is not whole characters", name, i);
		if (!rc && n) {
			got = realloc(got, ngot + n + 1);
			memcpy(got + ngot, piece, n);
			got[ngot += n] = '\0';
		}
	}
	if (!rc)
		rc = lora_tokenizer_decode(t, all.id, all.n, 0, &whole, &nwhole, &e);
	if (!rc)
		rc = lora_tokenizer_decode(t, p.id, p.n, 0, &head, &nhead, &e);
	CHECK(rc == 0 && nhead <= nwhole && !memcmp(whole, head, nhead) && ngot == nwhole - nhead &&
	      !memcmp(got, whole + nhead, ngot), "%s: streamed '%s', decoded whole '%s' after '%s' (%s)", name, got,
	      whole ? whole : "", head ? head : "", rc ? e.msg : "");
	free(whole), free(head), free(got);
	lora_tokenizer_stream_free(&st);
	lora_tokenizer_ids_free(&p), lora_tokenizer_ids_free(&g), lora_tokenizer_ids_free(&all);
	lora_tokenizer_free(t);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "tests/fixtures/tokenizers";
	if (argc > 2) {
		for (int i = 2; i < argc; i++)
			check_fixture(dir, argv[i]);
		DONE();
	}
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		check_fixture(dir, names[i]);
	check_errors();
	check_onig();
	const char *texts[] = {" w\u00f6rld \U0001F44D\u200d\U0001F525 \u4e16\u754c\n\n  caf\u00e9 \u0645\u0631\u062d\u0628\u0627 x",
	                       "<|im_end|> <s> [INST] \xcc\x81\xe0\xa4\x95\xe0\xa5\x8d\xe0\xa4\xb7 \xf0\x9f\xa6\x80", "a"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		for (size_t k = 0; k < sizeof texts / sizeof *texts; k++)
			check_stream(dir, names[i], "Hello there", texts[k]);
	check_stream(dir, "qwen", "", texts[0]);
	DONE();
}
