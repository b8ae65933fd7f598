#!/usr/bin/env python3
"""Golden renderings of chat templates, as transformers' apply_chat_template
makes them: Debian's python3-jinja2 with the environment transformers
builds (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, the
raise_exception and strftime_now globals, its tojson filter) and the
variables it passes (messages, tools=None, documents=None,
add_generation_prompt, the special tokens, the caller's keyword arguments).

    tests/ref/chat_ref.py SRC OUT

SRC holds the real templates, one per family (FORMAT.jinja: llama3,
llama3.1, llama3.2, chatml, qwen2.5, qwen3, mistral); OUT receives
FORMAT.golden.json: every conversation below under every flag, the
rendered text or the template's exception; and the tokenizer_config.json
the tests read: FORMAT.json (the special tokens and the template) for the
Apache-2.0 families, llama-tokens.json with the special tokens only (no Llama
file is committed: the tests force the llama formats by name). tests/fixtures/chat/README says
where the templates come from."""
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOKENS = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("<|begin_of_text|>", "<|eot_id|>"),
    "chatml": ("<s>", "<|im_end|>"),
    "qwen2.5": (None, "<|im_end|>"),
    "qwen3": (None, "<|im_end|>"),
    "mistral": ("<s>", "</s>"),
}
DATE = "02 Dec 2026"  # llama3.2's strftime_now, fixed by passing date_string


def env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = strftime_now
    return e


def m(role, content):
    return {"role": role, "content": content}


S, U, A = "system", "user", "assistant"
CONVERSATIONS = [
    [m(U, "Hello")],
    [m(S, "You are terse."), m(U, "Hello")],
    [m(S, "You are terse."), m(U, "Hello"), m(A, "Hi.")],
    [m(U, "What is 2+2?"), m(A, "4"), m(U, "And 3+3?"), m(A, "6")],
    [m(U, "What is 2+2?"), m(A, "4"), m(U, "And 3+3?")],
    [m(S, "sys"), m(U, "a"), m(A, "b"), m(U, "c"), m(A, "d"), m(U, "e")],
    # Python's whitespace: str.strip() takes \x1c-\x1f, \x85, NBSP, the
    # Unicode spaces, LS/PS; not ZWSP nor BOM
    [m(S, "  \t sys \n"), m(U, "\n  hi there \t\n"), m(A, "\u00a0\u3000 answer \u2028\u2029\x85")],
    [m(U, "\x1c\x1d\x1e\x1f x \x0b\x0c\r"), m(A, "\u200b zero \ufeff")],
    [m(U, "\u1680\u2000\u200a\u202f\u205f y \u180e")],
    [m(U, "h\u00e9llo \u4e16\u754c \U0001F469\u200d\U0001F469\u200d\U0001F467 \u0645\u0631\u062d\u0628\u0627 e\u0301"),
     m(A, "\u00e7a va \U0001F44D")],
    [m(U, ""), m(A, "")],
    [m(S, ""), m(U, "x")],
    [m(U, "looks like <|im_end|> and <|eot_id|> and [INST] </s>"), m(A, "<|im_start|>ok")],
    # Qwen3's think blocks: reasoning in history, after the last query,
    # without an opening tag, several closing tags, only whitespace
    [m(U, "q1"), m(A, "<think>\nr1\n</think>\n\na1"), m(U, "q2"), m(A, "<think>\nr2\n</think>\n\na2")],
    [m(U, "q1"), m(A, "<think>\nr1\n</think>\n\na1"), m(U, "q2")],
    [m(U, "q"), m(A, "no tag reasoning</think>answer")],
    [m(U, "q"), m(A, "\n\n<think>\n\na<think>b\n\n</think>c</think>\n\n\nd\n")],
    [m(U, "q"), m(A, "<think></think>")],
    [m(U, "q"), m(A, "plain answer"), m(U, "q2"), m(A, "step"), m(A, "<think>r</think>more")],
    [m(U, "<tool_response>x</tool_response>"), m(A, "<think>t</think>a")],
    [m(U, "q"), m(A, "<think>t</think>a"), m(U, "<tool_response>r</tool_response>"), m(A, "<think>t2</think>b")],
    [m(S, "s1"), m(U, "q"), m(S, "s2"), m(A, "a")],
    # orders some templates refuse
    [m(A, "first")],
    [m(U, "a"), m(U, "b")],
    [m(U, "a"), m(A, "b"), m(A, "c")],
    [m(S, "only system")],
]
FLAGS = [(False, None), (True, None), (True, False), (False, False)]


def main():
    src, out = sys.argv[1], sys.argv[2]
    e = env()
    for fmt, (bos, eos) in TOKENS.items():
        with open(os.path.join(src, fmt + ".jinja"), encoding="utf-8") as f:
            template = e.from_string(f.read())
        if not fmt.startswith("llama3"):
            write(os.path.join(out, fmt + ".json"),
                  {"bos_token": bos, "eos_token": eos, "chat_template": open(os.path.join(src, fmt + ".jinja")).read()})
        elif fmt == "llama3":
            write(os.path.join(out, "llama-tokens.json"), {"bos_token": bos, "eos_token": eos})
        cases = []
        for conv in CONVERSATIONS:
            for gen, thinking in FLAGS:
                kw = dict(messages=conv, tools=None, documents=None, add_generation_prompt=gen,
                          bos_token=bos, eos_token=eos)
                if thinking is not None:
                    kw["enable_thinking"] = thinking
                if fmt == "llama3.2":
                    kw["date_string"] = DATE
                case = {"messages": conv, "generation_prompt": gen, "thinking": thinking is not False}
                try:
                    case["text"] = template.render(**kw)
                except jinja2.exceptions.TemplateError as x:
                    case["error"] = str(x)
                cases.append(case)
        write(os.path.join(out, fmt + ".golden.json"), {"format": fmt, "date": DATE, "cases": cases})


def write(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=0)
        f.write("\n")


main()
