#!/usr/bin/env python3
"""Fails when a module imports one in a higher layer (README, "Layers").

  python3 scripts/check-layers.py

Each top-level module of src/ has a layer; code may use modules of its own
layer or lower ones only. Every `crate::NAME` and `$crate::NAME` path is
checked, including those inside `use crate::{a, b::c}` groups.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# Highest first; modules of one layer may use each other.
LAYERS = [
    ("command line", ["main", "tools"]),
    ("engines", ["engine"]),
    ("symbolization", ["symbolize"]),
    ("unwinding", ["unwind"]),
    ("kernel access", ["bpf"]),
    ("host access", ["host"]),
    ("shared layouts", ["layouts"]),
    ("model, output", ["model", "output"]),
]
RANK = {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}
# Items of the crate root (src/main.rs): the command line's layer.
with open(os.path.join(ROOT, "main.rs")) as main_rs:
    ROOT_ITEMS = set(re.findall(r"^(?:pub )?(?:fn|struct|enum|const|static) (\w+)", main_rs.read(), re.M))


def top_module(path):
    relative = os.path.relpath(path, ROOT)
    first = relative.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def imported_modules(text):
    """(line number, top-level module) of every crate path in `text`."""
    text = re.sub(r"//[^\n]*", lambda m: " " * len(m.group(0)), text)  # comments, lengths kept
    for match in re.finditer(r"\$?crate::(\{|[a-z_][a-z0-9_]*)", text):
        line = text.count("\n", 0, match.start()) + 1
        if match.group(1) != "{":
            yield line, match.group(1)
            continue
        depth, start = 1, match.end()
        end = start
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        group, depth, item = text[start:end - 1], 0, ""
        for char in group + ",":
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            if char == "," and depth == 0:
                name = re.match(r"\s*([a-z_][a-z0-9_]*)", item)
                if name:
                    yield line, name.group(1)
                item = ""
            else:
                item += char


def main():
    # The parser itself: a group, a nested group, a macro path, a comment.
    found = [module for _, module in imported_modules(
        "use crate::{engine::a, model::{b, c}};\n// crate::tools\nx = $crate::tools::y;")]
    assert found == ["engine", "model", "tools"], found
    violations = 0
    for directory, _, files in os.walk(ROOT):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            module = top_module(path)
            if module not in RANK:
                print(f"{path}: module '{module}' is in no layer of scripts/check-layers.py")
                violations += 1
                continue
            with open(path) as source:
                text = source.read()
            for line, imported in imported_modules(text):
                if imported in ("self", "super"):
                    continue
                if imported in ROOT_ITEMS:
                    imported = "main"
                if imported not in RANK:
                    print(f"{path}:{line}: crate::{imported} is in no layer")
                    violations += 1
                elif RANK[imported] < RANK[module]:
                    print(f"{os.path.relpath(path, os.path.dirname(ROOT))}:{line}: {module} "
                          f"({LAYERS[RANK[module]][0]}) imports {imported} ({LAYERS[RANK[imported]][0]}), "
                          "a higher layer")
                    violations += 1
    if violations:
        print(f"{violations} imports run up a layer")
        return 1
    print("layers: every import runs downwards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
