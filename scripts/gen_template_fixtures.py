#!/usr/bin/env python3
"""Renders every chat template under tests/fixtures/templates/ against every conversation in
conversations.json with Python's jinja2, set up the way Hugging Face transformers'
apply_chat_template sets it up, into tests/fixtures/templates/expected.json.

The C++ engine (src/template/) must match each output byte for byte, and must raise wherever
jinja2 raised. Run: python3 scripts/gen_template_fixtures.py

With --tree DIR --out FILE it renders instead every template of a llama.cpp tree (DIR/templates/*.jinja
and the templates inline in DIR/tests/test-chat-template.cpp, as tests/py/llama_cpp_tree.py extracts
them) with the same conversations, into FILE; tests/py/test_fidelity_template.py runs it with
Debian's python3-jinja2 (/usr/bin/python3) and hands FILE to test_template.
"""
import argparse
import json
import pathlib
import re
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "tests" / "fixtures" / "templates"

# bos/eos texts each model's tokenizer passes to its template.
TOKENS = {
    "llama-3.1-tools": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-nemo-tools": ("<s>", "</s>"),
    "mixtral-8x7b-instruct": ("<s>", "</s>"),
    "qwen2.5-tools": ("", "<|im_end|>"),
    "qwen3": ("", "<|im_end|>"),
    "gemma3": ("<bos>", "<eos>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "phi-3.5-mini": ("<s>", "<|endoftext|>"),
    "deepseek-r1-distill-qwen": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}

# Fixed date so strftime_now-using templates stay reproducible (the C++ test sets the same).
FIXED_NOW = datetime(2024, 7, 26, 12, 0, 0)


class AssistantTracker(Extension):
    """transformers' {% generation %} tag: renders its body (the assistant mask is not needed here)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def make_env():
    # transformers.utils.chat_template_utils._compile_jinja_template
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def c_literal(src, i):
    """The text of the C++ string literal(s) at src[i] (adjacent literals concatenate) and the end offset."""
    out = bytearray()
    escapes = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", '"': b'"', "'": b"'", "0": b"\0"}
    while True:
        while src[i] in " \t\n":
            i += 1
        if src.startswith('u8"', i):
            i += 2
        if src[i] != '"':
            return out.decode("utf-8"), i
        i += 1
        while src[i] != '"':
            if src[i] != "\\":
                out += src[i].encode("utf-8")
                i += 1
            elif src[i + 1] in escapes:
                out += escapes[src[i + 1]]
                i += 2
            elif src[i + 1] == "x":
                j = i + 2
                while src[j] in "0123456789abcdefABCDEF":
                    j += 1
                out.append(int(src[i + 2:j], 16))
                i = j
            else:
                raise ValueError(f"escape {src[i:i + 4]!r} at {i}")
        i += 1


def tree_templates(tree):
    """[(name, source, bos, eos)] of a llama.cpp tree: templates/*.jinja, then test-chat-template.cpp's."""
    out = []
    for path in sorted((tree / "templates").glob("*.jinja")):
        out.append((path.name, path.read_text(encoding="utf-8"), "<s>", "</s>"))
    cpp = tree / "tests" / "test-chat-template.cpp"
    if cpp.exists():
        src = cpp.read_text(encoding="utf-8")
        for m in re.finditer(r"/\* \.template_str= \*/\s*(U8C\()?", src):
            line_start = src.rfind("\n", 0, m.start()) + 1
            if src[line_start:m.start()].lstrip().startswith("//"):
                continue  # commented out
            entry = src.rfind("/* .name= */", 0, m.start())
            name = c_literal(src, entry + len("/* .name= */"))[0]
            text = c_literal(src, m.end())[0]
            tail = src[m.end():m.end() + len(text) * 2 + 2000]
            tokens = {}
            for key in ("bos_token", "eos_token"):
                k = tail.find(f"/* .{key}= */")
                tokens[key] = c_literal(tail, k + len(f"/* .{key}= */"))[0] if k >= 0 else ""
            out.append((f"test-chat-template.cpp: {name}", text, tokens["bos_token"], tokens["eos_token"]))
    return out


def render_all(templates, convs, env):
    cases = []
    for name, source, bos, eos in templates:
        try:
            template = env.from_string(source)
        except Exception as e:  # a syntax error: the engine must refuse the template too
            template, parse_error = None, f"{type(e).__name__}: {e}"
        for conv_name, conv in convs["conversations"].items():
            tools = convs["tools"] if conv.get("tools") else None
            for add_gen in (True, False):
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": add_gen,
                        "bos_token": bos, "eos_token": eos}
                try:
                    if template is None:
                        raise jinja2.exceptions.TemplateSyntaxError(parse_error, 0)
                    case["output"] = template.render(messages=conv["messages"], tools=tools,
                                                     add_generation_prompt=add_gen,
                                                     bos_token=bos, eos_token=eos)
                except Exception as e:  # the engine must raise too
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    return cases


def main_tree(tree, out):
    convs = json.loads((DIR / "conversations.json").read_text())
    templates = tree_templates(pathlib.Path(tree))
    cases = render_all(templates, convs, make_env())
    sources = {name: source for name, source, _, _ in templates}
    pathlib.Path(out).write_text(json.dumps({"jinja2_version": jinja2.__version__, "templates": sources,
                                             "cases": cases}, ensure_ascii=False) + "\n", encoding="utf-8")
    n_err = sum(1 for c in cases if "error" in c)
    print(f"{out}: {len(templates)} templates, {len(cases)} cases ({n_err} raise), jinja2 {jinja2.__version__}")


def main():
    convs = json.loads((DIR / "conversations.json").read_text())
    env = make_env()
    cases = []
    for path in sorted(DIR.glob("*.jinja")):
        name = path.stem
        bos, eos = TOKENS[name]
        template = env.from_string(path.read_text())
        for conv_name, conv in convs["conversations"].items():
            tools = convs["tools"] if conv.get("tools") else None
            for add_gen in (True, False):
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": add_gen,
                        "bos_token": bos, "eos_token": eos}
                try:
                    case["output"] = template.render(messages=conv["messages"], tools=tools,
                                                     add_generation_prompt=add_gen,
                                                     bos_token=bos, eos_token=eos)
                except Exception as e:  # the engine must raise too
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    out = DIR / "expected.json"
    out.write_text(json.dumps({"jinja2_version": jinja2.__version__, "cases": cases},
                              ensure_ascii=False, indent=1) + "\n")
    n_err = sum(1 for c in cases if "error" in c)
    print(f"{out}: {len(cases)} cases ({n_err} raise)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", help="a llama.cpp tree as tests/py/llama_cpp_tree.py extracts it")
    ap.add_argument("--out", help="with --tree: where the rendered cases go")
    args = ap.parse_args()
    if args.tree:
        main_tree(args.tree, args.out)
    else:
        main()
