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
 * are rendered as Qwen2.5's template renders them (its default system
 * message when none is given), encoded whole without the post-processor,
 * and a token gets loss when its offset starts in an assistant message's
 * content or the <|im_end|> after it (found by the library's offsets, not
 * by re-encoding prefixes as lib/text/tokenize.c does). */
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

async function examples(t, cfg, trainInputs) {
	const bos = cfg.bos_token ? t.tokenToId(cfg.bos_token) : null, eos = t.tokenToId(cfg.eos_token);
	const enc = async (s) => (await t.encode(s, null, { addSpecialTokens: true })).getIds();
	const answer = async (s) => {
		let ids = await enc(s);
		if (ids.length && ids[ids.length - 1] !== eos) ids.push(eos);
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
			if (ids.length && ids[ids.length - 1] !== eos) ids.push(eos);
			docs.push({ ids, mask: ids.map(() => 1) });
			continue;
		}
		const pi = await enc(p), ci = await answer(c);
		docs.push({ ids: pi.concat(ci), mask: pi.map(() => (trainInputs ? 1 : 0)).concat(ci.map(() => 1)) });
	}
	return docs.filter((d) => d.ids.length);
}

async function chats(t, trainInputs) {
	const docs = [];
	for (const l of lines('chats.jsonl')) {
		const m = JSON.parse(l).messages;
		let text = '';
		const train = [];
		if (m[0].role !== 'system')
			text += '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n';
		for (const x of m) {
			text += `<|im_start|>${x.role}\n`;
			const b = text.length;
			text += x.content + '<|im_end|>';
			if (x.role === 'assistant') train.push([b, text.length]);
			text += '\n';
		}
		const e = await t.encode(text, null, { addSpecialTokens: false });
		const ids = e.getIds(), off = e.getOffsets();
		docs.push({ ids, mask: off.map(([s]) => (trainInputs || train.some(([b, x]) => s >= b && s < x) ? 1 : 0)) });
	}
	return docs;
}

(async () => {
	const llama2 = Tokenizer.fromFile(path.join(fx, 'tokenizers', 'llama2.json'));
	const qwen = Tokenizer.fromFile(path.join(fx, 'tokenizers', 'qwen.json'));
	const c2 = JSON.parse(fs.readFileSync(path.join(dir, 'llama2.config.json'), 'utf8'));
	const cq = JSON.parse(fs.readFileSync(path.join(fx, 'chat', 'qwen2.5.json'), 'utf8'));
	const out = (name, docs) => fs.writeFileSync(path.join(dir, name), tok(docs, 2));
	out('llama2.examples.tok', await examples(llama2, c2, false));
	out('llama2.examples.inputs.tok', await examples(llama2, c2, true));
	out('qwen.examples.tok', await examples(qwen, cq, false));
	out('qwen.chats.tok', await chats(qwen, false));
	out('qwen.chats.inputs.tok', await chats(qwen, true));
})();
