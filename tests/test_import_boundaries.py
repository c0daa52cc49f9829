"""Dependency rules (docs/CONVENTIONS.md: layers), checked two ways.

1. Dynamically: in a fresh interpreter where ``torch``, ``transformers`` and ``peft`` cannot be imported
   (an import hook that raises ImportError),
   the torch-free core and every module of ``diagecg.runtime`` (found with pkgutil, so new modules are
   covered automatically) import.
2. Statically (ast): core never imports training/export/runtime (cli.py only inside command bodies),
   core outside ``diagecg/nn/`` never imports torch & co, runtime imports only that torch-free core
   (not ``diagecg.nn``, ``cli``, training or export), and export never imports training.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "diagecg"
BLOCKED = ("torch", "transformers", "peft")
TORCH_LIKE = (*BLOCKED, "safetensors", "accelerate", "bitsandbytes", "torchvision", "torchaudio")
# what the runtime must never import: torch-backed core, the CLI and the training/export stages. Every
# other core module is torch-free by test_core_imports_no_stage_and_no_torch (the contract modules of §3).
# diagecg.datasets is torch-free core, but reading the shared data is never the runtime's business
RUNTIME_FORBIDDEN = ("diagecg.nn", "diagecg.cli", "diagecg.datasets", "diagecg.training", "diagecg.export")
STAGE_PACKAGES = ("diagecg.training", "diagecg.export", "diagecg.runtime")
# runtime modules that need an optional extra at import: without it installed they may fail on exactly those
_SERVE_EXTRA = ("fastapi", "starlette", "pydantic", "multipart")
OPTIONAL_EXTRA_MODULES = {
    f"diagecg.runtime.{name}": _SERVE_EXTRA for name in ("serve_app", "serve_models", "serve_service")
}

# --- 1. dynamic: import without torch -------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import importlib, importlib.abc, json, pkgutil, sys, traceback
    # Block with an import hook rather than sys.modules["torch"] = None: scipy >= 1.15 looks torch up in
    # sys.modules when scipy.stats is imported and crashes on a None entry (AttributeError: 'NoneType'
    # object has no attribute 'Tensor'); a torch-free install has no entry at all.
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is blocked: the runtime must not need it")
            return None
    sys.meta_path.insert(0, Block())
    failures = {{}}
    def probe(name):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:  # a module of an optional extra that is not installed
            if (e.name or "").partition(".")[0] not in {optional!r}.get(name, ()):
                failures[name] = traceback.format_exc(limit=-3)
        except BaseException:
            failures[name] = traceback.format_exc(limit=-3)
    modules = {core!r}
    for name in modules:
        probe(name)
    runtime = probe("diagecg.runtime")
    walked = []
    if runtime is not None:
        for info in pkgutil.walk_packages(runtime.__path__, "diagecg.runtime."):
            walked.append(info.name)
            probe(info.name)
        for attr in getattr(runtime, "__all__", []):
            try:
                getattr(runtime, attr)
            except BaseException:
                failures["diagecg.runtime." + attr] = traceback.format_exc(limit=-3)
    import diagecg
    for attr in ("read_record", "preprocess", "load_bundle"):
        if attr in diagecg.__all__:
            try:
                getattr(diagecg, attr)
            except BaseException:
                failures["diagecg." + attr] = traceback.format_exc(limit=-3)
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {blocked!r})
    print(json.dumps({{"failures": failures, "walked": walked, "loaded": loaded}}))
    """
)


def test_core_and_runtime_import_without_torch() -> None:
    core = [
        "diagecg",
        "diagecg.constants",
        "diagecg.types",
        "diagecg.errors",
        "diagecg.config",
        "diagecg.io",
        "diagecg.record",
        "diagecg.header",
        "diagecg.leads",
        "diagecg.quality",
        "diagecg.features",
        "diagecg.delineation",
        "diagecg.preprocess",
        "diagecg.plot",
        "diagecg.vocab",
        "diagecg.prompts",
        "diagecg.native_stderr",
        "diagecg.llm_meta",
    ]
    bundle = sorted((CORE / "bundle").glob("*.py"))
    core += ["diagecg.bundle", *(f"diagecg.bundle.{p.stem}" for p in bundle if p.stem != "__init__")]
    datasets = sorted((CORE / "datasets").glob("*.py"))
    core += ["diagecg.datasets", *(f"diagecg.datasets.{p.stem}" for p in datasets if p.stem != "__init__")]
    readers = sorted((CORE / "formats").glob("*.py"))  # torch-free; optional deps imported when read
    core += ["diagecg.formats", *(f"diagecg.formats.{p.stem}" for p in readers if p.stem != "__init__")]
    script = _PROBE.format(blocked=BLOCKED, core=core, optional=OPTIONAL_EXTRA_MODULES)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {f"diagecg.runtime.{p.stem}" for p in (REPO / "runtime").glob("*.py") if p.stem != "__init__"}
    missed = expected - set(result["walked"])
    assert not missed, f"pkgutil missed runtime modules: {missed}"
    assert not result["failures"], "imports that fail without torch/transformers/peft:\n" + "\n".join(
        f"--- {k}\n{v}" for k, v in result["failures"].items()
    )
    assert result["loaded"] == []


# torch-free pieces of diagecg eval: what it asks, how answers are scored, the folds a checkpoint used
EVAL_TORCH_FREE = (
    "diagecg.training.eval_data",
    "diagecg.training.qa_scoring",
    "diagecg.training.eval_folds",
    "diagecg.eval_results",
    "diagecg.llm_meta",
)

_BENCH_PROBE = textwrap.dedent(
    """
    import importlib, importlib.util, json, sys
    for name in {modules!r}:
        importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("ecg_dependence", "bench/ecg_dependence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(json.dumps(sorted(m for m in sys.modules if m.partition(".")[0] in {torch_like!r})))
    """
)


def test_bundle_bench_scores_and_formats_without_torch() -> None:
    """bench/ecg_dependence.py measures the exported bundle through the torch-free runtime: drawing diagecg
    eval's records and findings and printing its tables must not import torch (torch is installed here, so
    the probe looks at what was imported rather than blocking it)."""
    script = _BENCH_PROBE.format(modules=EVAL_TORCH_FREE, torch_like=TORCH_LIKE)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# --- 2. static: who imports whom -------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    """Installed module name of a source file (package-dir mapping: training/ -> diagecg.training)."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("training", "export", "runtime"):
        parts = ["diagecg", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``path``; relative imports are resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package, top_level_only)


def _imports_in(source: str, package: str, top_level_only: bool = False) -> list[tuple[str, int]]:
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[str, int]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from diagecg import io` imports diagecg.io
            found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return found


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


CORE_FILES = [p for p in _sources(CORE) if "nn" not in p.relative_to(CORE).parts[:-1] and p.name != "cli.py"]


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_no_stage_and_no_torch(path: Path) -> None:
    bad = [
        (n, line)
        for n, line in _imports(path)
        if _under(n, STAGE_PACKAGES) or _under(n, TORCH_LIKE) or _under(n, ("diagecg.nn",))
    ]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: core must stay torch-free and stage-free"


@pytest.mark.parametrize("path", _sources(CORE / "nn"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_nn_imports_no_stage(path: Path) -> None:
    bad = [(n, line) for n, line in _imports(path) if _under(n, STAGE_PACKAGES)]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_cli_imports_stages_only_inside_commands() -> None:
    bad = [
        (n, line)
        for n, line in _imports(CORE / "cli.py", top_level_only=True)
        if _under(n, STAGE_PACKAGES) or _under(n, TORCH_LIKE) or _under(n, ("diagecg.nn",))
    ]
    assert not bad, f"diagecg/cli.py imports {bad} at module level; import stages inside command bodies"


@pytest.mark.parametrize("path", _sources(REPO / "runtime"), ids=lambda p: str(p.relative_to(REPO)))
def test_runtime_uses_only_torch_free_core(path: Path) -> None:
    bad = [(n, line) for n, line in _imports(path) if _under(n, TORCH_LIKE) or _under(n, RUNTIME_FORBIDDEN)]
    assert not bad, (
        f"{path.relative_to(REPO)} imports {bad}; the runtime uses only the torch-free core "
        f"(never {', '.join(RUNTIME_FORBIDDEN)}, torch, transformers or peft)"
    )


@pytest.mark.parametrize("path", _sources(REPO / "export"), ids=lambda p: str(p.relative_to(REPO)))
def test_export_never_imports_training(path: Path) -> None:
    bad = [(n, line) for n, line in _imports(path) if _under(n, ("diagecg.training",))]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}; checkpoints describe themselves"


def test_record_path_runs_one_way() -> None:
    """``diagecg.io`` -> ``diagecg.formats`` -> a reader -> ``diagecg.record``, never back: a reader that
    imported ``diagecg.io`` (which dispatches to the readers) would close a circle that only the readers'
    lookup by module name hides."""
    bad = [
        (str(p.relative_to(REPO)), n, line)
        for p in _sources(CORE / "formats")
        for n, line in _imports(p)
        if _under(n, ("diagecg.io",))
    ]
    bad += [
        ("diagecg/record.py", n, line)
        for n, line in _imports(CORE / "record.py")
        if _under(n, ("diagecg.io", "diagecg.formats"))
    ]
    assert not bad, f"imports against the record path: {bad}"


def _import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circles() -> None:
    """No two modules of the package import each other, directly or around a longer circle, counting the
    imports inside functions too (those only hide a circle from the interpreter, not from a reader)."""
    stages = ("training", "export", "runtime")
    paths = [*_sources(CORE), *(p for stage in stages for p in _sources(REPO / stage))]
    modules = {_module_name(p): p for p in paths}
    graph = {m: {n for n, _ in _imports(p) if n in modules and n != m} for m, p in modules.items()}
    assert _import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not _import_cycles(graph), f"import circles: {_import_cycles(graph)}"


def test_static_checker_sees_violations() -> None:
    """The ast walker must catch nested, relative and from-imports (else the rules above prove nothing)."""
    src = "def f():\n    import torch\n\nfrom ..training import ptbxl\nfrom diagecg import nn\n"
    names = {n for n, _ in _imports_in(src, "diagecg.runtime")}
    assert {"torch", "diagecg.training", "diagecg.training.ptbxl", "diagecg.nn"} <= names
    assert {n for n, _ in _imports_in(src, "diagecg.runtime", top_level_only=True)} >= {"diagecg.training"}
    assert "torch" not in {n for n, _ in _imports_in(src, "diagecg.runtime", top_level_only=True)}
