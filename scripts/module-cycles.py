#!/usr/bin/env python3
"""Finds import circles between the modules (files) of each crate in the workspace.

A file depends on another when it names an item of that file's module: through `use`, or a path in
code (`crate::a::b`, `super::x`, or a child module's name). A module that only declares another
(`mod x;`) does not depend on it. Test modules inside a file (`#[cfg(test)] mod tests { .. }`) are
left out: they may look at anything. Prints each circle and exits 1 if there is one.

    scripts/module-cycles.py [CRATE_DIR...]      (default: every workspace member)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def modules(src):
    """Module path (tuple) -> file, for one crate's src/."""
    out = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        # src/bin/* and, beside a lib.rs, main.rs are crates of their own that use the library.
        if rel.parts[0] == "bin" or (rel == pathlib.Path("main.rs") and (src / "lib.rs").exists()):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def strip(text):
    """Comments, string literals and inline test modules removed."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def use_paths(text):
    """(position, path) of every path a `use` names, braces expanded."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        tree = re.sub(r"\s*([{},]|::)\s*", r"\1", re.sub(r"\s+", " ", m.group(1).strip()))
        paths.extend((m.start(), p) for p in expand(tree))
    return paths


def inline_modules(text):
    """(start, end, name) of every `mod name { .. }` written inside the file."""
    spans = []
    for m in re.finditer(rf"\bmod\s+({IDENT})\s*\{{", text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        spans.append((m.start(), i, m.group(1)))
    return spans


def expand(tree):
    depth = 0
    for i, c in enumerate(tree):
        if c == "{" and depth == 0:
            prefix = tree[:i]
            inner = tree[i + 1 : tree.rindex("}")]
            out, start, d = [], 0, 0
            for j, ch in enumerate(inner + ","):
                if ch in "{":
                    d += 1
                elif ch in "}":
                    d -= 1
                elif ch == "," and d == 0:
                    part = inner[start:j]
                    start = j + 1
                    if part:
                        out.extend(prefix + p for p in expand(part))
            return out
        depth += c == "{"
    return [tree.split(" as ")[0]]


def resolve(here, path, mods):
    """The module a path points into (the file module that holds it), or None for another crate."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        base = here
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        rest = parts
    elif here + (parts[0],) in mods:
        base, rest = here, parts
    else:
        return None
    target = base
    for p in rest:
        target = target + (p,)
    # The file that holds it: the longest prefix that is a file module.
    while target not in mods:
        target = target[:-1]
    return target


def graph(crate):
    mods = modules(crate / "src")
    edges = {m: set() for m in mods}
    for mod, f in mods.items():
        text = strip(f.read_text())
        spans = inline_modules(text)
        paths = use_paths(text)
        for pattern in (rf"\b(?:crate|super|self)(?:::{IDENT})+", rf"(?<![:\w])({IDENT}(?:::{IDENT})+)"):
            paths += [(m.start(), m.group(0)) for m in re.finditer(pattern, text)]
        for pos, p in paths:
            inside = tuple(name for start, end, name in sorted(spans) if start < pos < end)
            t = resolve(mod + inside, p, mods)
            if t is not None and t != mod:
                edges[mod].add(t)
    return mods, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def members():
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    return [ROOT / p.strip().strip('"') for p in m.group(1).split(",") if p.strip()]


def main():
    crates = [pathlib.Path(a) for a in sys.argv[1:]] or members()
    found = 0
    for crate in crates:
        mods, edges = graph(crate)
        for comp in cycles(edges):
            found += 1
            names = sorted("::".join(m) or "(crate root)" for m in comp)
            print(f"{crate.name}: import circle between {', '.join(names)}")
            for m in sorted(comp):
                inside = sorted("::".join(t) or "(crate root)" for t in edges[m] if t in comp)
                print(f"    {'::'.join(m) or '(crate root)'} -> {', '.join(inside)}")
    print(f"{len(crates)} crates checked, {found} circles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
