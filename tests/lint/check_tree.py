#!/usr/bin/env python3
"""The mechanical parts of docs/hacking.md, checked on every test run.

  1. Layers: every #include "x.h" in a folder of the README's layer table
     ("Layout", the table between the two `layers` comments) names a
     header of the same folder or of a folder that row lists under "may
     include". So arrows point strictly downward, as the README draws them.
  2. No cycle between modules: module m (m.c and m.h) depends on module n
     when m.c or m.h includes n.h, or when m.c calls a function that n.c
     defines (a header shared by several files hides no call); that graph
     has no cycle, across folders or inside one. Calls through function
     pointers (hooks, callbacks) are not edges: that is how a lower module
     reaches a higher one.
  3. Banned functions (BANNED below) appear in no C file of the tree.
  4. Sizes, in product code (kv/, recovery/, fsck/): a .c file has at most
     FILE_LIMIT lines; a function body has at most FUNC_LIMIT lines unless
     the comment right above the function says why it is "one piece".

Usage: check_tree.py [SOURCE-ROOT]   (default: two folders up from here)
Exit status 0 when the tree passes, 1 with one line per finding
(path:line: what) when it does not, 2 when the README's table is missing.
"""
import os
import re
import sys

FILE_LIMIT = 600
FUNC_LIMIT = 80
PRODUCT = ("kv/", "recovery/", "fsck/")
# Unbounded or locale- and error-blind: use snprintf, memcpy with a length
# checked first, strtoll/strtoull with an end pointer and errno.
BANNED = ("sprintf", "vsprintf", "strcpy", "strcat", "strncpy", "strncat", "gets", "atoi", "atol",
          "atoll", "atof", "strtok", "sscanf", "tmpnam", "mktemp", "alloca")
C_EXT = (".c", ".h")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def layer_table(root):
    """{folder: set(folders it may include)} from README.md."""
    text = read(os.path.join(root, "README.md"))
    m = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    if not m:
        print("README.md: no layer table between <!-- layers --> and <!-- /layers -->")
        sys.exit(2)
    table = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        folder = cells[0].strip("`")
        allowed = set(re.findall(r"`([^`]+)`", cells[2]))
        table[folder] = allowed | {folder}
    return table


def folder_of(rel, table):
    """The table's folder that holds rel (the longest matching prefix)."""
    best = None
    for f in table:
        if rel.startswith(f + "/") and (best is None or len(f) > len(best)):
            best = f
    return best


def c_files(root):
    for top in ("kv", "recovery", "fsck", "fuzz", "tests"):
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(C_EXT):
                    yield os.path.relpath(os.path.join(d, name), root)


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def strip_comments_and_strings(src):
    """The source with comments and string/char literals blanked, lines kept."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(c + re.sub(r"[^\n]", " ", src[i + 1:j]) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_layers(root, files, table, findings):
    headers = {}
    for rel in files:
        if rel.endswith(".h"):
            headers.setdefault(os.path.basename(rel), []).append(rel)
    deps = {}
    for rel in files:
        src = read(os.path.join(root, rel))
        here = folder_of(rel, table)
        mod = os.path.splitext(rel)[0]
        deps.setdefault(mod, set())
        for lineno, line in enumerate(src.splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            name = os.path.basename(m.group(1))
            cands = headers.get(name, [])
            same = [h for h in cands if os.path.dirname(h) == os.path.dirname(rel)]
            if same:
                target = same[0]
            elif len(cands) == 1:
                target = cands[0]
            elif not cands:
                continue  # a system or generated header
            else:
                findings.append("%s:%d: \"%s\" names several headers: %s" % (rel, lineno, name, ", ".join(cands)))
                continue
            there = folder_of(target, table)
            if here is not None and there is not None and there not in table[here]:
                findings.append("%s:%d: includes %s: %s may not include %s (README.md, Layout)" %
                                (rel, lineno, target, here, there))
            tmod = os.path.splitext(target)[0]
            if tmod != mod:
                deps[mod].add(tmod)
    # Calls: name( in m.c, where n.c defines name (not static).
    defined = {}
    for rel in files:
        if rel.endswith(".c"):
            lines = strip_comments_and_strings(read(os.path.join(root, rel))).splitlines()
            for name, first, _ in functions(lines):
                if not lines[first].startswith("static") and name != "main":
                    defined.setdefault(name, os.path.splitext(rel)[0])
    word = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
    for rel in files:
        if not rel.endswith(".c"):
            continue
        mod = os.path.splitext(rel)[0]
        code = strip_comments_and_strings(read(os.path.join(root, rel)))
        own = {name for name, _, _ in functions(code.splitlines())}
        for w in set(word.findall(code)) - own:
            n = defined.get(w)
            if n and n != mod:
                deps[mod].add(n)
    # Cycles, by depth-first search over the module graph.
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(deps.get(m, ())):
            if state.get(n) == 1:
                cyc = stack[stack.index(n):] + [n]
                findings.append("%s: module cycle: %s" % (m, " -> ".join(cyc)))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m)


def check_banned(root, files, findings):
    pat = re.compile(r"\b(%s)\s*\(" % "|".join(BANNED))
    for rel in files:
        code = strip_comments_and_strings(read(os.path.join(root, rel)))
        for lineno, line in enumerate(code.splitlines(), 1):
            for m in pat.finditer(line):
                before = line[:m.start()].rstrip()
                if before.endswith(("->", ".")):
                    continue  # a member that happens to share the name
                findings.append("%s:%d: banned function %s() (docs/hacking.md, Banned functions)" %
                                (rel, lineno, m.group(1)))


FUNC_START = re.compile(r"^[A-Za-z_][\w \t\*]*\b(\w+)\s*\([^;]*$")


def functions(lines):
    """(name, first line index, last line index) of each function whose
    body opens with '{' alone at column 0 and closes with '}' at column 0,
    the layout of every function in this tree."""
    i = 0
    while i < len(lines):
        if lines[i] == "{" and i > 0:
            j = i - 1
            while j > 0 and not FUNC_START.match(lines[j]) and lines[j].startswith((" ", "\t")):
                j -= 1
            m = FUNC_START.match(lines[j])
            k = i + 1
            while k < len(lines) and lines[k] != "}" and not lines[k].startswith("};"):
                k += 1
            if m and not lines[j].startswith(("typedef", "struct", "enum", "union", "static const", "const")):
                yield m.group(1), j, k
            i = k + 1
        else:
            i += 1


def comment_above(lines, j):
    text = []
    k = j - 1
    while k >= 0 and (lines[k].strip().startswith(("/*", "*", "//")) or lines[k].strip().endswith("*/")):
        text.append(lines[k])
        k -= 1
    return "\n".join(reversed(text))


def check_sizes(root, files, findings):
    for rel in files:
        if not rel.startswith(PRODUCT) or not rel.endswith(".c"):
            continue
        lines = read(os.path.join(root, rel)).splitlines()
        if len(lines) > FILE_LIMIT:
            findings.append("%s:%d: %d lines, over the %d of docs/hacking.md (split it by job)" %
                            (rel, len(lines), len(lines), FILE_LIMIT))
        for name, first, last in functions(lines):
            body = last - first - 1
            if body > FUNC_LIMIT and "one piece" not in comment_above(lines, first).lower():
                findings.append("%s:%d: %s() has %d lines, over %d, and no comment says why it is one piece" %
                                (rel, first + 1, name, body, FUNC_LIMIT))


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    table = layer_table(root)
    files = list(c_files(root))
    findings = []
    for f in table:
        if not os.path.isdir(os.path.join(root, f)):
            findings.append("README.md: the layer table names %s, which does not exist" % f)
    check_layers(root, files, table, findings)
    check_banned(root, files, findings)
    check_sizes(root, files, findings)
    for f in findings:
        print(f)
    print("%d C files checked, %d findings" % (len(files), len(findings)))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
