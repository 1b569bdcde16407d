"""Imports run one way (CONTRIBUTING.md, "Layers"): read from the source with ast, so a wrong
direction fails here even where no test happens to execute that import."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ("eald", "baselines")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """Every eald/baselines module `name` imports, at any depth (function-level too)."""
    is_pkg = (REPO / name.replace(".", "/") / "__init__.py").is_file()
    base = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                up = base.split(".")[: len(base.split(".")) - (node.level - 1)]
                mod = ".".join([*up, mod] if mod else up)
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, tree) for name, tree in MODULES.items()}

# (importer prefix, forbidden prefixes, why)
RULES = [
    ("eald.data", ("eald.mllm", "eald.judge", "eald.report", "eald.tasks", "baselines"),
     "data is the bottom layer"),
    ("eald.mllm", ("eald.judge",), "backbones and judges are independent"),
    ("eald.judge", ("eald.mllm",), "backbones and judges are independent"),
    ("eald.deid", ("eald.mllm", "eald.judge", "baselines"), "de-identification uses no models"),
    ("baselines", ("eald.mllm", "eald.judge", "eald.tasks.zeroshot"), "no zero-shot code"),
    ("eald.report", ("eald.mllm", "eald.judge", "baselines", "eald.deid"), "reports read files"),
    ("eald.mllm.video_llama_prompt", ("eald.mllm.video_llama",), "prompt <- model"),
    ("eald.mllm.video_llama", ("eald.mllm.video_llama_tiny",), "model <- tiny fixture"),
    ("eald.mllm.pandagpt", ("eald.mllm.pandagpt_tiny",), "model <- tiny fixture"),
]  # fmt: skip


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize(("importer", "forbidden", "why"), RULES)
def test_layer_rule(importer, forbidden, why):
    bad = sorted(f"{m} imports {d}" for m, deps in GRAPH.items() if _under(m, importer)
                 for d in deps if any(_under(d, f) for f in forbidden))  # fmt: skip
    assert not bad, f"{why}: " + "; ".join(bad)


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph: none larger than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_rules_see_imports():
    """The reader is not blind: known edges are found (relative, aliased, function-level)."""
    assert "eald.mllm.video_llama" in GRAPH["eald.mllm.video_llama_tiny"]
    assert "eald.mllm.video_llama_prompt" in GRAPH["eald.mllm.video_llama"]
    assert "eald.registry" in GRAPH["eald.config"]


def test_config_loads_no_torch():
    code = ("import sys, eald.config; bad = [m for m in ('torch', 'av', 'transformers') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
