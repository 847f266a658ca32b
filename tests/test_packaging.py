"""What a user who installs the package, not a clone, gets: every module, the chat template, the recipes, and a
command line that finds the packaged recipes from any folder."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package (pyproject's package-dir)
SOURCES = {"omnidrive_r1": "omnidrive_r1", "rewards": "omnidrive_r1/rewards", "tools": "omnidrive_r1/tools"}


def _source_modules() -> set[str]:
    """Installed paths of every Python module in the source tree."""
    modules = set()
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                modules.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    return modules


def test_pyproject_lists_every_package_of_the_source_tree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {p.replace(".", "/") for p in config["packages"]}
    packages = {m.rsplit("/", 1)[0] for m in _source_modules()}
    assert packages <= listed, f"add {sorted(packages - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["omnidrive_r1.recipes"] == "recipes"


def test_recipes_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from omnidrive_r1.cli import main
    from omnidrive_r1.config import RecipeError, find_recipe, packaged_recipes

    monkeypatch.chdir(tmp_path)
    assert {"toy/stage1.yaml", "toy/stage2.yaml", "omnidrive_r1/stage1.yaml", "omnidrive_r1/stage2.yaml"} <= \
        set(packaged_recipes())
    assert find_recipe("toy/stage1.yaml") == ROOT / "recipes/toy/stage1.yaml"
    assert find_recipe("recipes/toy/stage2.yaml") == ROOT / "recipes/toy/stage2.yaml"  # the README's spelling
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "stage1.yaml").write_text("preset: mine\n")
    assert find_recipe("toy/stage1.yaml") == Path("toy/stage1.yaml")  # a file of the user's wins
    with pytest.raises(RecipeError, match=r"recipe not found: toy/stage9.yaml .*toy/stage1.yaml"):
        find_recipe("toy/stage9.yaml")
    assert main(["recipes"]) == 0
    assert "omnidrive_r1/stage1.yaml" in capsys.readouterr().out


def _uv() -> list[str]:
    if shutil.which("uv"):
        return [shutil.which("uv")]
    for python in ("python3", sys.executable):
        if subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "uv"]
    pytest.skip("uv is not installed (make install installs it)")


def _run(args, **kw):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_the_wheel_installs_into_a_clean_environment_and_works_outside_a_clone(tmp_path):
    uv = _uv()
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *SOURCES, "recipes"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (ROOT / name).is_dir() else {}))
    _run([*uv, "build", "--wheel", "--offline", "--out-dir", tmp_path / "dist", src])
    wheel = next((tmp_path / "dist").glob("omnidrive_r1-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _source_modules() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert "omnidrive_r1/assets/qwen2_5_vl_tools.jinja" in names
    recipes = {p.relative_to(ROOT / "recipes").as_posix() for p in (ROOT / "recipes").rglob("*.yaml")}
    assert {f"omnidrive_r1/recipes/{r}" for r in recipes} <= names

    # a clean environment with this environment's versions, from uv's local cache (nothing downloaded)
    frozen = _run([*uv, "pip", "freeze", "--python", sys.executable]).splitlines()
    (tmp_path / "constraints.txt").write_text("\n".join(line for line in frozen if line and "@" not in line
                                                       and not line.startswith(("-e", "omnidrive"))))
    venv = tmp_path / "venv"
    _run([*uv, "venv", "--quiet", "--python", sys.executable, venv])
    _run([*uv, "pip", "install", "--quiet", "--offline", "--python", venv / "bin/python", wheel,
          "-c", tmp_path / "constraints.txt"])

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "OMNIDRIVE_CACHE": str(tmp_path / "cache")}
    where = _run([venv / "bin/python", "-c", "import omnidrive_r1, omnidrive_r1.toy.toydrive, omnidrive_r1.toy.base, "
                  "omnidrive_r1.toy.models, omnidrive_r1.tools.zoom_in, omnidrive_r1.rewards.clip_grounding; "
                  "print(omnidrive_r1.__file__)"], cwd=empty, env=env)
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout
    plan = _run([venv / "bin/omnidrive-r1", "train", "omnidrive_r1/stage1.yaml", "--plan"], cwd=empty, env=env)
    assert "| ZeRO | LoRA |" in plan and "fits 80 GB" in plan
    listing = _run([venv / "bin/omnidrive-r1", "recipes"], cwd=empty, env=env)
    assert "toy/stage1.yaml" in listing and str(venv) in listing
    _run([venv / "bin/omnidrive-r1", "data", "toydrive", "--out", "td", "--frames", "2"], cwd=empty, env=env)
    check = _run([venv / "bin/omnidrive-r1", "data", "check", "--drivelmm", "td/drivelmm/train.json"], cwd=empty,
                 env=env)
    assert "kept" in check and sorted(p.name for p in empty.iterdir()) == ["td"]
