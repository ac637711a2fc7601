#!/usr/bin/env python3
"""Report dependency cycles between the modules of each crate of the workspace.

For every crate (shared/src, services/*/src, tools/*/src, or the src directories given as
arguments) the script builds two kinds of graphs:

- the top-level graph: the crate root's modules (`foo.rs` or `foo/` next to lib.rs);
- one graph per top-level module that is a directory: its direct child modules
  (`grpc/tokens.rs` -> `grpc/convert.rs` is an edge inside `grpc`).

An edge A -> B exists when a file of A names B: `crate::B` in a `use` (groups and nested
braces included) or in a path, or, inside a directory module, `super::B`, `self::B` and
`crate::M::B`. A name the parent re-exports or imports (`pub use b::Thing;` in lib.rs or
mod.rs, then `crate::Thing` or `super::Thing`) counts as a reference to the module it
comes from. `#[cfg(test)]` items (the `mod tests { ... }` blocks) are ignored: tests may
reach anywhere. The crate root (lib.rs, or main.rs for a binary-only crate) is not scanned:
it only declares the modules; main.rs next to a lib.rs is a separate binary crate.

Every strongly connected component of more than one module is reported with its simple
cycles and, for every edge inside it, where the reference is. Exit status: 0 when no crate
has a cycle, 1 when one has, 2 on a usage error.

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_CYCLES_PER_COMPONENT = 50
MAX_LOCATIONS_PER_EDGE = 3

# ---------------------------------------------------------------------------------------
# Lexing: Rust source -> tokens (identifiers and punctuation), without comments, strings,
# chars and numbers, each with its line number.
# ---------------------------------------------------------------------------------------

IDENT_RE = re.compile(r"r#[A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*")
NUMBER_RE = re.compile(r"[0-9][0-9A-Za-z_]*(\.[0-9][0-9A-Za-z_]*)?")
RAW_STRING_RE = re.compile(r'(b|c)?r(#*)"')
LIFETIME_RE = re.compile(r"'[A-Za-z_][A-Za-z0-9_]*(?!')")
PATH_ATTRIBUTE_RE = re.compile(r'#\[\s*path\s*=\s*"([^"]+)"\s*\]')


@dataclass
class Token:
    text: str
    line: int


def lex(source: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    line = 1
    n = len(source)
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            depth = 0
            while i < n:
                if source.startswith("/*", i):
                    depth += 1
                    i += 2
                elif source.startswith("*/", i):
                    depth -= 1
                    i += 2
                    if depth == 0:
                        break
                else:
                    if source[i] == "\n":
                        line += 1
                    i += 1
        elif (m := RAW_STRING_RE.match(source, i)) and (
            i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")
        ):
            closing = '"' + m.group(2)
            end = source.find(closing, m.end())
            end = n if end < 0 else end + len(closing)
            line += source.count("\n", i, end)
            i = end
        elif c == '"' or (c in "bc" and source.startswith('"', i + 1)):
            i = i + 1 if c == '"' else i + 2
            while i < n and source[i] != '"':
                if source[i] == "\\":
                    i += 1
                if i < n and source[i] == "\n":
                    line += 1
                i += 1
            i += 1
        elif c == "'" or (c == "b" and source.startswith("'", i + 1)):
            start = i + 1 if c == "'" else i + 2
            if c == "'" and (m := LIFETIME_RE.match(source, i)):
                i = m.end()  # a lifetime or a label
            else:
                j = start
                if j < n and source[j] == "\\":
                    j += 2
                    while j < n and source[j] != "'":
                        j += 1
                else:
                    j += 1
                i = j + 1
        elif c.isdigit():
            m = NUMBER_RE.match(source, i)
            i = m.end() if m else i + 1
        elif (m := IDENT_RE.match(source, i)) is not None:
            text = m.group(0)
            tokens.append(Token(text[2:] if text.startswith("r#") else text, line))
            i = m.end()
        elif source.startswith("::", i):
            tokens.append(Token("::", line))
            i += 2
        else:
            tokens.append(Token(c, line))
            i += 1
    return tokens


# ---------------------------------------------------------------------------------------
# Parsing: the references to `crate::`, `super::` and `self::` paths, the `mod`
# declarations and the imports of a file, outside `#[cfg(test)]` items.
# ---------------------------------------------------------------------------------------


@dataclass
class Reference:
    path: list[str]  # absolute module path inside the crate, e.g. ["grpc", "convert", "x"]
    line: int
    text: str  # as written, for the report


@dataclass
class ParsedFile:
    references: list[Reference] = field(default_factory=list)
    # `mod name;` declarations of the file's own module (not of inline modules).
    declared_modules: list[str] = field(default_factory=list)
    # Names imported by the file's own module: name -> absolute path it comes from.
    imports: dict[str, list[str]] = field(default_factory=dict)


def is_cfg_test(tokens: list[Token], i: int) -> int:
    """If tokens[i:] is `#[cfg(test)]` or `#![cfg(test)]`, the index after it, else 0."""
    texts = [t.text for t in tokens[i : i + 8]]
    if texts[:7] == ["#", "[", "cfg", "(", "test", ")", "]"]:
        return i + 7
    if texts[:8] == ["#", "!", "[", "cfg", "(", "test", ")", "]"]:
        return i + 8
    return 0


def skip_attribute(tokens: list[Token], i: int) -> int:
    """tokens[i] is `#`: the index after the attribute `#[...]` / `#![...]`."""
    j = i + 1
    if j < len(tokens) and tokens[j].text == "!":
        j += 1
    if j >= len(tokens) or tokens[j].text != "[":
        return i + 1
    depth = 0
    while j < len(tokens):
        if tokens[j].text == "[":
            depth += 1
        elif tokens[j].text == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


def skip_item(tokens: list[Token], i: int) -> int:
    """The index after the item starting at tokens[i] (ends with `;` or a `{...}` block)."""
    depth = 0  # of () and []
    j = i
    while j < len(tokens):
        t = tokens[j].text
        if t == "#" and depth == 0:
            j = skip_attribute(tokens, j)
            continue
        if t in "([":
            depth += 1
        elif t in ")]":
            depth -= 1
        elif t == ";" and depth == 0:
            return j + 1
        elif t == "{" and depth == 0:
            return matching_brace(tokens, j) + 1
        j += 1
    return j


def matching_brace(tokens: list[Token], i: int) -> int:
    depth = 0
    j = i
    while j < len(tokens):
        if tokens[j].text == "{":
            depth += 1
        elif tokens[j].text == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return j


def parse_use_tree(tokens: list[Token], i: int, prefix: list[str], out: list[tuple]) -> int:
    """Parses a use tree at tokens[i]; appends (segments, alias, line) to out. Returns the
    index after the tree."""
    segments = list(prefix)
    line = tokens[i].line if i < len(tokens) else 0
    while i < len(tokens):
        t = tokens[i].text
        if t == "{":
            i += 1
            while i < len(tokens) and tokens[i].text != "}":
                if tokens[i].text == ",":
                    i += 1
                    continue
                i = parse_use_tree(tokens, i, segments, out)
            return i + 1
        if t == "*":
            out.append((segments + ["*"], None, tokens[i].line))
            return i + 1
        if t == "::":
            i += 1
            continue
        if IDENT_RE.fullmatch(t):
            segments.append(t)
            line = tokens[i].line
            i += 1
            if i < len(tokens) and tokens[i].text == "::":
                continue
            alias = None
            if i + 1 < len(tokens) and tokens[i].text == "as":
                alias = tokens[i + 1].text
                i += 2
            out.append((segments, alias, line))
            return i
        return i  # `,`, `}`, `;` or something unexpected: the tree ends
    return i


def resolve(segments: list[str], module: list[str]) -> list[str] | None:
    """The absolute path of `crate::`/`super::`/`self::` segments used in `module`."""
    if not segments:
        return None
    head = segments[0]
    if head in ("crate", "$crate"):
        return segments[1:]
    if head == "self":
        return module + segments[1:]
    if head == "super":
        base = list(module)
        k = 0
        while k < len(segments) and segments[k] == "super":
            if not base:
                return None
            base.pop()
            k += 1
        return base + segments[k:]
    return None


def parse_file(source: str, module: list[str]) -> ParsedFile:
    tokens = lex(source)
    parsed = ParsedFile()
    # Inline modules: (name, index of the closing brace).
    inline: list[tuple[str, int]] = []
    i = 0
    n = len(tokens)

    def current_module() -> list[str]:
        return module + [name for name, _ in inline]

    while i < n:
        while inline and i > inline[-1][1]:
            inline.pop()
        t = tokens[i].text
        if t == "#":
            after = is_cfg_test(tokens, i)
            if after:
                if tokens[i + 1].text == "!":  # `#![cfg(test)]`: the whole module
                    if not inline:
                        return ParsedFile()
                    i = inline[-1][1]
                    continue
                i = skip_item(tokens, after)
                continue
            i = skip_attribute(tokens, i)
            continue
        if t == "mod" and i + 2 < n and IDENT_RE.fullmatch(tokens[i + 1].text):
            name = tokens[i + 1].text
            if tokens[i + 2].text == ";":
                if not inline:
                    parsed.declared_modules.append(name)
                i += 3
                continue
            if tokens[i + 2].text == "{":
                inline.append((name, matching_brace(tokens, i + 2)))
                i += 3
                continue
        if t == "use":
            trees: list[tuple] = []
            j = parse_use_tree(tokens, i + 1, [], trees)
            for segments, alias, line in trees:
                absolute = resolve(segments, current_module())
                if absolute is None:
                    # `use child::X;` in a module that declares `mod child;`.
                    if not inline and segments and segments[0] in parsed.declared_modules:
                        absolute = module + segments
                    else:
                        continue
                if segments[-1] == "self":  # `use crate::a::{self}`
                    segments = segments[:-1]
                    absolute = absolute[:-1]
                text = "::".join(segments)
                parsed.references.append(Reference(absolute, line, text))
                name = alias or (segments[-1] if segments[-1] != "*" else None)
                if name and name != "_" and not inline:
                    parsed.imports[name] = absolute
            i = j
            continue
        if t in ("crate", "$crate", "super", "self") and i + 1 < n and tokens[i + 1].text == "::":
            # `pub(in crate::x)` is a visibility, not a dependency.
            if i >= 2 and tokens[i - 1].text == "in" and tokens[i - 2].text == "(":
                i += 1
                continue
            segments = [t]
            line = tokens[i].line
            j = i + 1
            while j + 1 < n and tokens[j].text == "::" and IDENT_RE.fullmatch(tokens[j + 1].text):
                segments.append(tokens[j + 1].text)
                j += 2
            if j + 1 < n and tokens[j].text == "::" and tokens[j + 1].text == "{":
                # A use-like group outside `use` (macros): treat it as a use tree.
                trees = []
                j = parse_use_tree(tokens, j + 1, segments, trees)
                for segs, _alias, ln in trees:
                    absolute = resolve(segs, current_module())
                    if absolute is not None:
                        parsed.references.append(Reference(absolute, ln, "::".join(segs)))
            else:
                absolute = resolve(segments, current_module())
                if absolute is not None:
                    parsed.references.append(Reference(absolute, line, "::".join(segments)))
            i = j
            continue
        i += 1
    return parsed


# ---------------------------------------------------------------------------------------
# Crates: module tree, files, graphs.
# ---------------------------------------------------------------------------------------


@dataclass
class ModuleFile:
    path: Path
    module: list[str]  # e.g. ["grpc", "tokens"]; [] for the crate root
    parsed: ParsedFile


@dataclass
class Crate:
    name: str
    src: Path
    root: ModuleFile
    files: list[ModuleFile]  # every module file but the root
    top_modules: list[str]
    dir_modules: dict[str, list[str]]  # top-level module -> its child modules
    mod_files: dict[str, ModuleFile]  # top-level module -> its own file
    warnings: list[str]


def module_file(directory: Path, name: str) -> tuple[Path | None, Path]:
    """The file of module `name` declared in a module whose children live in `directory`,
    and the directory of its own children."""
    flat = directory / f"{name}.rs"
    nested = directory / name / "mod.rs"
    if flat.is_file():
        return flat, directory / name
    if nested.is_file():
        return nested, directory / name
    return None, directory / name


def load_crate(src: Path, display_root: Path) -> Crate | None:
    root_path = src / "lib.rs"
    if not root_path.is_file():
        root_path = src / "main.rs"
    if not root_path.is_file():
        return None
    warnings: list[str] = []
    root = ModuleFile(root_path, [], parse_file(root_path.read_text(encoding="utf-8"), []))
    files: list[ModuleFile] = []
    mod_files: dict[str, ModuleFile] = {}
    dir_modules: dict[str, list[str]] = {}

    def walk(directory: Path, parent: list[str], names: list[str]) -> None:
        for name in names:
            path, children_dir = module_file(directory, name)
            module = parent + [name]
            if path is None:
                warnings.append(
                    f"module {'::'.join(module)} is declared but neither "
                    f"{display(directory / (name + '.rs'), display_root)} nor "
                    f"{display(directory / name / 'mod.rs', display_root)} exists"
                )
                continue
            parsed = parse_file(path.read_text(encoding="utf-8"), module)
            mf = ModuleFile(path, module, parsed)
            files.append(mf)
            if len(module) == 1:
                mod_files[name] = mf
                if parsed.declared_modules:
                    dir_modules[name] = list(parsed.declared_modules)
            walk(children_dir, module, parsed.declared_modules)

    walk(src, [], root.parsed.declared_modules)
    top_modules = [name for name in root.parsed.declared_modules if name in mod_files]

    # Files that no `mod` declaration reaches (a tree in the middle of a move, say). Files
    # named by `#[path = "..."]` (test modules here) are not followed, and not warned about.
    reached = {mf.path.resolve() for mf in files} | {root_path.resolve()}
    for mf in [root] + files:
        for target in PATH_ATTRIBUTE_RE.findall(mf.path.read_text(encoding="utf-8")):
            reached.add((mf.path.parent / target).resolve())
    for path in sorted(src.rglob("*.rs")):
        if path.resolve() in reached or path.name == "main.rs" and path.parent == src:
            continue
        if "bin" in path.relative_to(src).parts[:1]:
            continue
        warnings.append(f"{display(path, display_root)} is not declared by any module (ignored)")

    name = src.parent.name
    manifest = src.parent / "Cargo.toml"
    if manifest.is_file():
        m = re.search(r'(?m)^\s*name\s*=\s*"([^"]+)"', manifest.read_text(encoding="utf-8"))
        if m:
            name = m.group(1)
    return Crate(
        name=name,
        src=src,
        root=root,
        files=files,
        top_modules=top_modules,
        dir_modules=dir_modules,
        mod_files=mod_files,
        warnings=warnings,
    )


def display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


@dataclass
class Graph:
    title: str  # "top level" or "inside grpc"
    nodes: list[str]
    # (a, b) -> [(file, line, text)]
    edges: dict[tuple[str, str], list[tuple[str, int, str]]] = field(default_factory=dict)

    def add(self, a: str, b: str, where: tuple[str, int, str]) -> None:
        if a == b or a not in self.nodes or b not in self.nodes:
            return
        locations = self.edges.setdefault((a, b), [])
        if all(where[:2] != seen[:2] for seen in locations):  # one entry per line
            locations.append(where)


def owner_in(names: list[str], imports: dict[str, list[str]], path: list[str], depth: int) -> str | None:
    """Which of `names` (modules at `depth` of the path) `path` lands in, following the
    parent's imports when path[depth] is an item the parent imports."""
    if len(path) <= depth:
        return None
    head = path[depth]
    if head in names:
        return head
    target = imports.get(head)
    if target is None:
        return None
    if target[:depth] == path[:depth] and len(target) > depth and target[depth] in names:
        return target[depth]
    return None


def build_graphs(crate: Crate, display_root: Path) -> list[Graph]:
    top = Graph("top level", list(crate.top_modules))
    inner = {m: Graph(f"inside {m}", list(children)) for m, children in crate.dir_modules.items()}
    root_imports = crate.root.parsed.imports
    for mf in crate.files:
        own_top = mf.module[0]
        own_child = mf.module[1] if len(mf.module) > 1 else None
        where_file = display(mf.path, display_root)
        for ref in mf.parsed.references:
            where = (where_file, ref.line, ref.text)
            target_top = owner_in(crate.top_modules, root_imports, ref.path, 0)
            if target_top is None:
                continue
            if target_top != own_top:
                top.add(own_top, target_top, where)
                continue
            graph = inner.get(own_top)
            if graph is None or own_child is None:
                continue
            parent_imports = crate.mod_files[own_top].parsed.imports
            target_child = owner_in(graph.nodes, parent_imports, ref.path, 1)
            if target_child is not None:
                graph.add(own_child, target_child, where)
    return [top] + [inner[m] for m in crate.top_modules if m in inner]


# ---------------------------------------------------------------------------------------
# Cycles.
# ---------------------------------------------------------------------------------------


def strongly_connected(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    for start in nodes:
        if start in index:
            continue
        # Iterative Tarjan: (node, iterator over successors).
        work = [(start, iter(succ.get(start, [])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ.get(nxt, []))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def simple_cycles(component: list[str], succ: dict[str, list[str]], limit: int) -> tuple[list[list[str]], bool]:
    """Simple cycles inside a component, each starting at its smallest node; at most
    `limit` (the flag says whether more were left out)."""
    members = sorted(component)
    inside = set(members)
    cycles: list[list[str]] = []
    truncated = False
    for start_index, start in enumerate(members):
        allowed = set(members[start_index:])
        path = [start]
        on_path = {start}

        def dfs(node: str) -> bool:
            nonlocal truncated
            for nxt in sorted(succ.get(node, [])):
                if nxt not in inside or nxt not in allowed:
                    continue
                if nxt == start:
                    if len(cycles) >= limit:
                        truncated = True
                        return False
                    cycles.append(path + [start])
                elif nxt not in on_path:
                    path.append(nxt)
                    on_path.add(nxt)
                    keep_going = dfs(nxt)
                    path.pop()
                    on_path.discard(nxt)
                    if not keep_going:
                        return False
            return True

        if not dfs(start):
            break
    cycles.sort(key=lambda c: (len(c), c))
    return cycles, truncated


def report(crate: Crate, graphs: list[Graph], show_edges: bool = False) -> int:
    """Prints the crate's cycles; returns how many components have one."""
    for warning in crate.warnings:
        print(f"warning: {crate.name}: {warning}")
    if show_edges:
        for graph in graphs:
            print(f"{crate.name}, {graph.title}: {len(graph.nodes)} modules, {len(graph.edges)} edges")
            for (a, b), locations in sorted(graph.edges.items()):
                file, line, text = locations[0]
                print(f"  {a} -> {b}  ({file}:{line} {text})")
    found = 0
    lines: list[str] = []
    for graph in graphs:
        succ: dict[str, list[str]] = {}
        for a, b in graph.edges:
            succ.setdefault(a, []).append(b)
        components = [c for c in strongly_connected(graph.nodes, succ) if len(c) > 1]
        components.sort(key=lambda c: sorted(c))
        for component in components:
            found += 1
            members = sorted(component)
            lines.append(f"  {graph.title}: {{{', '.join(members)}}}")
            cycles, truncated = simple_cycles(component, succ, MAX_CYCLES_PER_COMPONENT)
            for cycle in cycles:
                lines.append(f"    cycle: {' -> '.join(cycle)}")
            if truncated:
                lines.append(f"    (more cycles left out; showing the first {MAX_CYCLES_PER_COMPONENT})")
            lines.append("    edges:")
            for (a, b), locations in sorted(graph.edges.items()):
                if a in component and b in component:
                    shown = ", ".join(
                        f"{file}:{line} {text}" for file, line, text in locations[:MAX_LOCATIONS_PER_EDGE]
                    )
                    more = len(locations) - MAX_LOCATIONS_PER_EDGE
                    suffix = f" (+{more} more)" if more > 0 else ""
                    lines.append(f"      {a} -> {b}: {shown}{suffix}")
    if found:
        print(f"module cycles in {crate.name} ({crate.src}): {found} strongly connected component(s)")
        print("\n".join(lines))
    else:
        print(f"no module cycles in {crate.name}")
    return found


def default_crates(workspace: Path) -> list[Path]:
    crates = [workspace / "shared" / "src", workspace / "policy-engine" / "src"]
    crates += sorted(p for p in (workspace / "services").glob("*/src") if p.is_dir())
    crates += sorted(p for p in (workspace / "tools").glob("*/src") if p.is_dir())
    return [p for p in crates if p.is_dir()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "src",
        nargs="*",
        type=Path,
        help="crate src directories (default: shared/src, policy-engine/src, services/*/src, tools/*/src)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the workspace root (default: this script's parent directory)",
    )
    parser.add_argument(
        "--edges", action="store_true", help="also print every edge of every graph"
    )
    args = parser.parse_args(argv)
    workspace: Path = args.workspace
    sources = args.src or default_crates(workspace)
    if not sources:
        print(f"no crates found under {workspace}", file=sys.stderr)
        return 2
    cyclic = 0
    for src in sources:
        crate = load_crate(src, workspace)
        if crate is None:
            print(f"{src}: neither lib.rs nor main.rs", file=sys.stderr)
            return 2
        if report(crate, build_graphs(crate, workspace), args.edges):
            cyclic += 1
    return 1 if cyclic else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
