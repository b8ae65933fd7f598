#!/usr/bin/env node
/* Golden tok files for lora-tokenize's JSONL inputs, computed with Hugging
 * Face's `tokenizers` library (its Node binding) and written by the byte
 * layout of man/lora-data.5, independently of lib/.
 *
 *     npm install --prefix /tmp/ref tokenizers@0.23.2
 *     tests/ref/jsonl_ref.js /tmp/ref/node_modules
 *
 * The examples follow axolotl's InstructionPromptTokenizingStrategy: the
 * prompt encoded with special tokens (its labels -100 unless
 * train_on_inputs), the answer encoded with special tokens, the EOS
 * appended when it does not end with it, a leading BOS dropped; a "text"
 * example is encoded with special tokens and the EOS appended. The chats
 * are rendered as Qwen2.5's (its default system message when none is
 * given), Llama 3's and Mistral's templates render them, written out below
 * (tests/fixtures/chat checks lib/text/chat.c against the real templates),
 * and encoded as chats() says; the masks come from the library's offsets,
 * not by re-encoding prefixes as lib/text/tokenize.c does. */
'use strict';
const fs = require('fs');
const path = require('path');

const mods = process.argv[2];
if (!mods) {
	console.error('usage: jsonl_ref.js NODE_MODULES');
	process.exit(2);
}
const { Tokenizer } = require(path.join(mods, 'tokenizers'));
const fx = path.join(__dirname, '..', 'fixtures');
const dir = path.join(fx, 'jsonl');

const ALPACA_IN = 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n';
const ALPACA = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n';

function tok(docs, elem) {
	const n = docs.reduce((a, d) => a + d.ids.length, 0);
	const parts = [];
	const h = Buffer.alloc(24);
	h.write('LORATOK\n', 0, 'latin1');
	h.writeUInt32LE(1, 8);
	h.writeUInt32LE(elem, 12);
	h.writeUInt32LE(1, 16);
	parts.push(h);
	const ids = Buffer.alloc(n * elem), ends = Buffer.alloc(docs.length * 8), mask = Buffer.alloc(Math.ceil(n / 8));
	let k = 0;
	docs.forEach((d, i) => {
		d.ids.forEach((id, j) => {
			if (elem === 2) ids.writeUInt16LE(id, k * 2); else ids.writeUInt32LE(id, k * 4);
			if (d.mask[j]) mask[k >> 3] |= 1 << (k & 7);
			k++;
		});
		ends.writeBigUInt64LE(BigInt(k), i * 8);
	});
	const t = Buffer.alloc(24);
	t.writeBigUInt64LE(BigInt(n), 0);
	t.writeBigUInt64LE(BigInt(docs.length), 8);
	t.write('LORAEND\n', 16, 'latin1');
	return Buffer.concat([h, ids, ends, mask, t]);
}

const lines = (f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.length);

// plain: lora-tokenize --no-special, add_special_tokens=False and no EOS
async function examples(t, cfg, trainInputs, plain = false) {
	const bos = cfg.bos_token && !plain ? t.tokenToId(cfg.bos_token) : null, eos = plain ? null : t.tokenToId(cfg.eos_token);
	const enc = async (s) => (await t.encode(s, null, { addSpecialTokens: !plain })).getIds();
	const answer = async (s) => {
		let ids = await enc(s);
		if (ids.length && eos !== null && ids[ids.length - 1] !== eos) ids.push(eos);
		if (ids.length && ids[0] === bos) ids = ids.slice(1);
		return ids;
	};
	const docs = [];
	for (const l of lines('examples.jsonl')) {
		const o = JSON.parse(l);
		let p = null, c;
		if ('prompt' in o) p = o.prompt, c = o.completion;
		else if ('instruction' in o)
			p = o.input ? `${ALPACA_IN}### Instruction:\n${o.instruction}\n\n### Input:\n${o.input}\n\n### Response:\n`
			            : `${ALPACA}### Instruction:\n${o.instruction}\n\n### Response:\n`, c = o.output;
		if (p === null) {
			const ids = await enc(o.text);
			if (ids.length && eos !== null && ids[ids.length - 1] !== eos) ids.push(eos);
			docs.push({ ids, mask: ids.map(() => 1) });
			continue;
		}
		const pi = await enc(p), ci = await answer(c);
		docs.push({ ids: pi.concat(ci), mask: pi.map(() => (trainInputs ? 1 : 0)).concat(ci.map(() => 1)) });
	}
	return docs.filter((d) => d.ids.length);
}

// Python's str.isspace(), which Jinja's trim (str.strip) uses
const PY_SPACE = /[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
function pyStrip(s) {
	const c = [...s];
	let b = 0, e = c.length;
	while (b < e && PY_SPACE.test(c[b])) b++;
	while (e > b && PY_SPACE.test(c[e - 1])) e--;
	return c.slice(b, e).join('');
}

/* The templates, written out: each returns the rendered text as parts
 * {s, content, train}, content when the bytes are a message's, train for
 * the assistant's content and the end-of-turn token after it. */
function tplQwen25(m) {
	const p = [];
	const tpl = (s, train = false) => p.push({ s, content: false, train });
	if (m[0].role !== 'system')
		tpl('<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n');
	for (const x of m) {
		const a = x.role === 'assistant';
		tpl(`<|im_start|>${x.role}\n`);
		p.push({ s: x.content, content: true, train: a });
		tpl('<|im_end|>', a);
		tpl('\n');
	}
	return p;
}

// Meta-Llama-3-8B-Instruct's: the BOS, then each message's header and its
// content trimmed, closed by <|eot_id|>
function tplLlama3(m) {
	const p = [{ s: '<|begin_of_text|>', content: false, train: false }];
	for (const x of m) {
		const a = x.role === 'assistant';
		p.push({ s: `<|start_header_id|>${x.role}<|end_header_id|>\n\n`, content: false, train: false });
		p.push({ s: pyStrip(x.content), content: true, train: a });
		p.push({ s: '<|eot_id|>', content: false, train: a });
	}
	return p;
}

// Mistral-7B-Instruct-v0.2's: BOS, [INST] USER [/INST]ASSISTANT</s>
function tplMistral(m) {
	const p = [{ s: '<s>', content: false, train: false }];
	for (const x of m) {
		const a = x.role === 'assistant';
		if (!a) p.push({ s: '[INST] ', content: false, train: false });
		p.push({ s: x.content, content: true, train: a });
		p.push({ s: a ? '</s>' : ' [/INST]', content: false, train: a });
	}
	return p;
}

// the special tokens of each tokenizer loaded, by the Tokenizer
const specials = new Map();
function load(f) {
	const t = Tokenizer.fromFile(f);
	specials.set(t, JSON.parse(fs.readFileSync(f, 'utf8')).added_tokens.filter((a) => a.special).map((a) => a.content));
	return t;
}

const escape = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/* Chats of file rendered by render and encoded as apply_chat_template
 * encodes them: the whole text, special tokens matched, no post-processor;
 * a token gets loss when its offsets (in characters, as the library gives
 * them) overlap a trained part: the tokens from the one holding its first
 * character to the one holding its last, as transformers' assistant mask
 * (return_assistant_tokens_mask, by char_to_token) marks them. With lit
 * (lora-tokenize's --literal-content: special tokens only where the
 * template put them), the text is cut at the special tokens of the
 * template's parts, as the library cuts the whole text at added tokens,
 * and the stretches between them are encoded by lit, the tokenizer whose
 * special tokens no text matches (the library's encode_special_tokens). */
async function chats(t, file, render, trainInputs, lit) {
	const special = specials.get(t);
	special.sort((a, b) => b.length - a.length);
	const cut = new RegExp(`(${special.map(escape).join('|')})`);
	const docs = [];
	for (const l of lines(file)) {
		const parts = render(JSON.parse(l).messages);
		const train = [], pieces = [];
		let at = 0, gap = '', gapAt = 0;
		for (const x of parts) {
			const n = [...x.s].length;
			if (x.train) train.push([at, at + n]);
			if (lit && !x.content) {
				x.s.split(cut).forEach((y, k) => {
					if (k % 2) {
						pieces.push({ s: gap, at: gapAt }, { s: y, at: at, special: true });
						gap = '', gapAt = at + [...y].length;
					} else {
						gap += y;
					}
					at += [...y].length;
				});
			} else {
				gap += x.s, at += n;
			}
		}
		pieces.push({ s: gap, at: gapAt });
		const ids = [], offs = [];
		for (const p of pieces) {
			if (p.special) {
				ids.push(t.tokenToId(p.s)), offs.push([p.at, p.at + [...p.s].length]);
			} else if (p.s.length) {
				const e = await (lit || t).encode(p.s, null, { addSpecialTokens: false });
				e.getIds().forEach((id, k) => ids.push(id) && offs.push(e.getOffsets()[k].map((o) => o + p.at)));
			}
		}
		const mask = offs.map(([s, x]) => (trainInputs || train.some(([tb, te]) => s < te && Math.max(x, s + 1) > tb) ? 1 : 0));
		docs.push({ ids, mask });
	}
	return docs;
}

// The tokenizer.json at f with its special added tokens respelled so that
// no text matches them (kept, not removed: the library numbers the added
// tokens again when some are missing): for encoding, the same as the
// library's encode_special_tokens (split_special_tokens)
function withoutSpecial(f) {
	const j = JSON.parse(fs.readFileSync(f, 'utf8'));
	for (const a of j.added_tokens)
		if (a.special) a.content = '\u{10fffe}' + a.content;
	return Tokenizer.fromString(JSON.stringify(j));
}

(async () => {
	const tf = (n) => path.join(fx, 'tokenizers', `${n}.json`);
	const llama2 = load(tf('llama2')), qwen = load(tf('qwen')), llama3 = load(tf('llama3'));
	const cfg = (f) => JSON.parse(fs.readFileSync(f, 'utf8'));
	const c2 = cfg(path.join(dir, 'llama2.config.json'));
	const cq = cfg(path.join(fx, 'chat', 'qwen2.5.json'));
	const c3 = cfg(path.join(fx, 'chat', 'llama-tokens.json'));
	const out = (name, docs) => fs.writeFileSync(path.join(dir, name), tok(docs, 2));
	out('llama2.examples.tok', await examples(llama2, c2, false));
	out('llama2.examples.inputs.tok', await examples(llama2, c2, true));
	out('qwen.examples.tok', await examples(qwen, cq, false));
	out('qwen.chats.tok', await chats(qwen, 'chats.jsonl', tplQwen25, false));
	out('qwen.chats.inputs.tok', await chats(qwen, 'chats.jsonl', tplQwen25, true));
	out('llama3.examples.tok', await examples(llama3, c3, false));
	out('llama3.examples.inputs.tok', await examples(llama3, c3, true));
	out('llama3.examples.plain.tok', await examples(llama3, c3, false, true));
	out('llama3.chats.tok', await chats(llama3, 'chats.jsonl', tplLlama3, false));
	out('llama3.chats.inputs.tok', await chats(llama3, 'chats.jsonl', tplLlama3, true));
	out('llama2.turns.tok', await chats(llama2, 'turns.jsonl', tplMistral, false));
	out('llama2.turns.inputs.tok', await chats(llama2, 'turns.jsonl', tplMistral, true));
	out('llama2.turns.literal.tok', await chats(llama2, 'turns.jsonl', tplMistral, false, withoutSpecial(tf('llama2'))));
	const lq = withoutSpecial(tf('qwen')), l3 = withoutSpecial(tf('llama3'));
	out('qwen.specials.tok', await chats(qwen, 'specials.jsonl', tplQwen25, false));
	out('qwen.specials.literal.tok', await chats(qwen, 'specials.jsonl', tplQwen25, false, lq));
	out('llama3.specials.tok', await chats(llama3, 'specials.jsonl', tplLlama3, false));
	out('llama3.specials.literal.tok', await chats(llama3, 'specials.jsonl', tplLlama3, false, l3));
})();
