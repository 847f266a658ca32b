"""Model families behind one seam (omnidrive_r1/policies/): the structure that keeps them there, and what each
family decides (geometry, template, processor, LoRA targets, --plan)."""

import ast
import re
from pathlib import Path

import pytest

from omnidrive_r1 import policies

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "omnidrive_r1"
# Files that may name a family, and why. Everything else reaches a family through omnidrive_r1.policies.
ALLOWED = {
    "omnidrive_r1/bench/vision.py": "measures Qwen2.5-VL's windowed vision attention, which only that family has",
    "omnidrive_r1/toy/tiny_families.py": "the lab's tiny stand-in of each family (a small config and processor per "
                                         "model type), kept out of the product's family files",
}
FAMILY_NAME = re.compile(r"qwen2_?5|qwen3_?vl|qwen2_?vl", re.I)


def _product_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("omnidrive_r1/policies/") or rel in ALLOWED:
            continue
        yield rel, ast.parse(path.read_text())


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _is(node, value) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == value


def _pixel_figure(node, figures) -> bool:
    """A family's pixel limit: a published one or a default, or any multiple of 28 x 28 from 4 of them up."""
    return (isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 3136
            and (node.value in figures or node.value % 784 == 0))


def test_no_module_outside_the_family_files_names_a_family_or_a_pixel_factor():
    model_types = {t for f in policies.families() for t in f.model_types}
    figures = {n for f in policies.families() for n in (f.min_pixels, f.max_pixels, f.image_pixels()[1])}
    found = []
    for rel, tree in _product_files():
        docs = _docstrings(tree)
        # a recipe folder may be named after a family (recipes/qwen3_vl): `preset=` names a folder, not a family
        docs |= {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "preset"}
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 0)
            names = []
            if isinstance(node, ast.Name):
                names = [node.id]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if node.value in model_types or re.search(r"Qwen2_5_VL|Qwen3VL|Qwen2VL", node.value):
                    found.append(f"{rel}:{line}: the string {node.value!r}")
            found += [f"{rel}:{line}: {n}" for n in names if FAMILY_NAME.search(n)]
            # pixel factors: 28 or 784 anywhere; 32 as a factor (32 * 32, factor=32, min_side=32)
            if _is(node, 28) or _is(node, 784):
                found.append(f"{rel}:{line}: the number {node.value}")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and _is(node.left, 32) and _is(node.right, 32):
                found.append(f"{rel}:{line}: 32 * 32")
            if isinstance(node, ast.keyword) and node.arg in ("factor", "min_side") and _is(node.value, 32):
                found.append(f"{rel}:{line}: {node.arg}=32")
            if _pixel_figure(node, figures):
                found.append(f"{rel}:{line}: the pixel figure {node.value}")
    assert not found, "family-specific code outside omnidrive_r1/policies/:\n" + "\n".join(found)


def test_the_processor_is_built_in_one_place():
    found = []
    for rel, tree in _product_files():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            target = fn.value.id if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) else \
                fn.id if isinstance(fn, ast.Name) else ""
            called = fn.attr if isinstance(fn, ast.Attribute) else ""
            if target.endswith("Processor") and (called == "from_pretrained" or not called):
                found.append(f"{rel}:{node.lineno}: {target}{'.' + called if called else ''}(...)")
    assert not found, "processors built outside omnidrive_r1.policies.build_processor:\n" + "\n".join(found)


def test_every_supported_model_type_has_one_family_and_an_unknown_one_is_named():
    types = [t for f in policies.families() for t in f.model_types]
    assert sorted(types) == ["qwen2_5_vl", "qwen3_vl"] and len(set(types)) == len(types)
    assert policies.get("qwen3_vl").factor == 32 and policies.get("qwen2_5_vl").factor == 28
    with pytest.raises(Exception, match="model_type 'llava' is not supported; supported: qwen2_5_vl, qwen3_vl"):
        policies.get("llava")


@pytest.mark.parametrize("family", policies.families(), ids=lambda f: f.name)
def test_the_toy_bases_boxes_land_on_each_cameras_board_in_every_family(family):
    """The toy world is the same for every family (its frame is seen on the same 20 x 7 grid); only the numbers
    the policy writes differ: each camera's on-target box, in the family's convention, maps onto that camera's
    board cell in the original frame."""
    from omnidrive_r1.coordinates import zoom_box
    from omnidrive_r1.toy.toydrive import CAMERA_SIZE, SLOTS, cell_boxes, slot_boxes, toy_pixels

    size = (3 * CAMERA_SIZE[0], 2 * CAMERA_SIZE[1])
    lo, hi, _ = toy_pixels(family)
    grid = cell_boxes(size)
    for camera, (c, r) in SLOTS.items():
        box = zoom_box(size, slot_boxes(size, family)[camera]["on_target"], min_pixels=lo, max_pixels=hi,
                       factor=family.factor, coordinates=family.coordinates)
        cell = grid[r][c]
        assert all(abs(a - b) <= 1 for a, b in zip(box, cell)), (camera, box, cell)
