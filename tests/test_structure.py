"""The layout stays honest: no import circle, no product module that only tests use, nothing in the code that
points outside the repository."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"omnidrive_r1": "omnidrive_r1", "rewards": "omnidrive_r1.rewards", "tools": "omnidrive_r1.tools"}
ENTRY_POINTS = {"omnidrive_r1.cli", "omnidrive_r1.bench.__main__", "omnidrive_r1.bench.paper", "omnidrive_r1.toy.report", "omnidrive_r1.toy.ablate", "omnidrive_r1.rehearse"}  # the console script and `python -m` tools


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join([package, *parts])
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every module `name` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(name.split(".")[: -node.level] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _top_level_names(path: Path) -> set[str]:
    """What a module defines or imports at its top level (`if`/`try` blocks included)."""
    names = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(path.read_text()).body)
    return names


def test_every_import_of_the_package_names_something_it_defines_even_inside_functions():
    """`from omnidrive_r1.x import y` anywhere (a function's body included, where nothing runs it until that
    function is called) names a module of the package and something it defines: a bench part once imported a
    constant its module no longer had, and no test called that function."""
    modules = _modules()
    broken = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("omnidrive_r1"):
                continue
            if node.module not in modules:
                broken.append(f"{name}:{node.lineno}: no module {node.module}")
                continue
            defined = _top_level_names(modules[node.module])
            for alias in node.names:
                if alias.name not in defined and f"{node.module}.{alias.name}" not in modules:
                    broken.append(f"{name}:{node.lineno}: {node.module} defines no {alias.name}")
    assert not broken, "imports that would fail when run:\n" + "\n".join(broken)


def test_the_import_check_sees_a_missing_name_inside_a_function(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from omnidrive_r1.plan import QWEN2_5_VL_7B\n")
    assert "QWEN2_5_VL_7B" not in _top_level_names(ROOT / "omnidrive_r1" / "plan.py")
    assert "plans" in _top_level_names(ROOT / "omnidrive_r1" / "plan.py")


def test_no_import_circle_even_through_imports_inside_functions():
    modules = _modules()
    graph = {name: {m for m in _imports(path, name) if m in modules and m != name}
             for name, path in modules.items()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


LAB = ("omnidrive_r1.toy", "omnidrive_r1.bench", "omnidrive_r1.rehearse")  # the proving ground, above the product
TOP = ("omnidrive_r1.cli",)  # the command line sits above both


def _layer(name: str) -> int:
    """0: the product, 1: the lab, 2: the command line."""
    def under(prefixes):
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    return 2 if under(TOP) else 1 if under(LAB) else 0


def test_the_product_imports_nothing_from_the_lab_and_no_import_runs_back_up():
    modules = _modules()
    upward = sorted(f"{name} -> {m}" for name, path in modules.items() for m in _imports(path, name)
                    if m in modules and _layer(m) > _layer(name))
    assert not upward, "imports that run back up (product < lab < command line): " + ", ".join(upward)


def test_the_structure_test_sees_an_import_inside_a_function(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from omnidrive_r1.toy.toydrive import generate\n")
    found = _imports(path, "omnidrive_r1.train")
    assert "omnidrive_r1.toy.toydrive" in found and _layer("omnidrive_r1.toy.toydrive") > _layer("omnidrive_r1.train")


# imports a product module may make inside a function, and why; every other import sits at the module's top
OPTIONAL = {  # heavy, or only some runs need them
    "vllm": "installed on GPU machines and in .venv-vllm only",
    "wandb": "seconds to import, and only runs that report to it need it",
    "peft": "seconds to import, and only LoRA runs need it",
    "open_clip": "seconds to import, and only the CLIP reward needs it",
    "matplotlib": "only plots need it, and the backend is chosen before pyplot loads",
}
HEAVY = {"torch", "transformers", "trl", "datasets", "PIL", "accelerate", "omnidrive_r1"}
COMMAND_LINE = "omnidrive_r1.cli"  # each command imports what it runs: `omnidrive-r1 --help` starts at once


def _light_modules() -> set[str]:
    """The product modules the command line's parser imports before any command runs."""
    code = ("import sys\nfrom omnidrive_r1.cli import build_parser\nbuild_parser().format_help()\n"
            "print(' '.join(m for m in sys.modules if m.startswith('omnidrive_r1')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import inside a function of `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and not sub.level:
                    found.add((sub.lineno, sub.module.split(".")[0]))
                elif isinstance(sub, ast.Import):
                    found.update((sub.lineno, a.name.split(".")[0]) for a in sub.names)
    return sorted(found)


def test_the_command_line_builds_its_parser_without_loading_torch():
    code = ("import sys\nfrom omnidrive_r1.cli import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'PIL') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_imports_sit_at_the_top_unless_a_reason_keeps_them_in_a_function():
    """Allowed inside a function: the command line's own imports, optional heavy dependencies (`OPTIONAL`), and in
    the light modules the parser reads, the heavy ones (`HEAVY`). Anything else, in the product and in the lab, goes
    to the module's top, where a broken import fails at once instead of when the function first runs (the bench's
    broken import of a name `plan` no longer defined went unseen that way)."""
    light = _light_modules()
    assert "omnidrive_r1.policies" in light and "omnidrive_r1.train" not in light
    stray = []
    for name, path in _modules().items():
        if name == COMMAND_LINE:
            continue
        for line, package in _function_imports(path):
            if package in OPTIONAL or (name in light and package in HEAVY):
                continue
            stray.append(f"{path.relative_to(ROOT)}:{line} ({package})")
    assert not stray, "imports inside functions with no reason to be there: " + ", ".join(stray)


def test_the_import_check_sees_an_import_inside_a_method(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import json\n\nclass A:\n    def f(self):\n        from PIL import Image\n        import torch.nn\n")
    assert _function_imports(path) == [(5, "PIL"), (6, "torch")]


def test_the_readme_map_on_its_first_screen_names_every_folder_and_the_lab():
    first_screen = (ROOT / "README.md").read_text().splitlines()[:50]
    text = "\n".join(first_screen)
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name in {"omnidrive_r1", "docs", "recipes", "rewards", "tools", "tests"}]
    folders += [p.name for p in (ROOT / "omnidrive_r1").iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    assert all(f"{name}/" in text for name in folders), [n for n in folders if f"{n}/" not in text]
    for prefix in LAB:  # each part of the lab is named as such on the map
        path = prefix.replace(".", "/") + ("/" if (ROOT / prefix.replace(".", "/")).is_dir() else ".py")
        assert any(path in line and "the lab" in line for line in first_screen), path


def test_every_product_module_is_used_by_the_product():
    modules = _modules()
    used = set(ENTRY_POINTS)
    for name, path in modules.items():
        used |= {m for m in _imports(path, name) if m in modules and m != name}
    packages = {n for n, p in modules.items() if p.name == "__init__.py"}
    plugins = {n for n in modules if n.startswith(("omnidrive_r1.rewards.", "omnidrive_r1.tools.",
                                                   "omnidrive_r1.eval.benchmarks.", "omnidrive_r1.policies."))}
    unused = sorted(set(modules) - used - packages - plugins)  # plug-ins are found by name, not imported
    assert not unused, f"modules no product code imports: {unused}"


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_nothing_points_outside_the_repository():
    pattern = re.compile(r"DESIGN\.md|\.\./shared|/work/")
    offenders = [str(p.relative_to(ROOT)) for folder in ("omnidrive_r1", "rewards", "tools", "tests", "recipes", "docs")
                 for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".jinja")
                 and p.name != "test_structure.py" and pattern.search(p.read_text(errors="ignore"))]
    offenders += [n for n in ("README.md", "Makefile") if pattern.search((ROOT / n).read_text())]
    assert not offenders, offenders


def test_every_document_the_code_and_docs_point_to_exists():
    files = [p for folder in ("omnidrive_r1", "rewards", "tools", "recipes", "docs") for p in (ROOT / folder).rglob("*")
             if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".jinja")]
    files += [ROOT / "README.md", ROOT / "Makefile"]
    generated = {"docs/toy_results.md"}  # written by `make toy-report` (omnidrive_r1/toy/report.py)
    assert all(g in (ROOT / "omnidrive_r1/toy/report.py").read_text() for g in generated)
    missing = {(str(p.relative_to(ROOT)), ref) for p in files
               for ref in re.findall(r"docs/[\w-]+\.md", p.read_text(errors="ignore"))
               if not (ROOT / ref).exists() and ref not in generated}
    assert not missing, sorted(missing)


def test_the_accelerate_configs_parse_and_the_two_node_one_spans_two_machines():
    from accelerate.commands.config.config_args import ClusterConfig

    for path in (ROOT / "recipes/accelerate").glob("*.yaml"):
        config = ClusterConfig.from_yaml_file(str(path))
        assert config.distributed_type == "DEEPSPEED" and config.deepspeed_config["zero_stage"] in (2, 3), path
    two = ClusterConfig.from_yaml_file(str(ROOT / "recipes/accelerate/zero3_2nodes.yaml"))
    assert (two.num_machines, two.num_processes, two.rdzv_backend) == (2, 16, "static")
