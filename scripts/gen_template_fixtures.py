#!/usr/bin/env python3
"""Renders every chat template under tests/fixtures/templates/ against every conversation in
conversations.json with Python's jinja2, set up the way Hugging Face transformers'
apply_chat_template sets it up, into tests/fixtures/templates/expected.json.

The C++ engine (src/template/) must match each output byte for byte, and must raise wherever
jinja2 raised. Run: python3 scripts/gen_template_fixtures.py
"""
import json
import pathlib
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
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


def make_env():
    # transformers.utils.chat_template_utils._compile_jinja_template
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


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
    main()
