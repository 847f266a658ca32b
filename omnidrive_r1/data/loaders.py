"""DriveLMM-o1 JSON and DeepEyes parquet -> the rows the GRPO trainer consumes.

Every loader returns a `datasets.Dataset` with the same columns:

    idx       str    DriveLMM-o1 "<scene>_<sample>_<qnum>" / DeepEyes "<data_source>-<index>"
    prompt    list   conversational prompt: system turn, then the user's question (one image goes first)
    image     Image  the policy's input (the stitched 2x3 frame for DriveLMM-o1), decoded lazily to PIL
    question  str    the question text
    answer    str    ground truth: DriveLMM-o1 `final_answer` (TRAIN rows: the final-answer part of `answer`),
                     DeepEyes `reward_model.ground_truth`
    steps     str    DriveLMM-o1 reference reasoning (TRAIN rows: the reasoning part of `answer`; "" for DeepEyes)
    is_mcq    bool   DriveLMM-o1: qnum in {2,3,4,5,8}; DeepEyes: a single-letter answer
    gt_box    list   ground-truth box of the decisive detail in original image pixels, or None
    source    str    "drivelmm" or the DeepEyes data_source

Both return `(dataset, LoadReport)`. Bad input stops with a `DataError` that names the file and the row;
with `skip_bad=True` bad rows are skipped, counted by reason in the returned `LoadReport` and logged.

DriveLMM-o1 files come in the shapes the published ones have (`docs/data.md`): a JSON list of rows or an
object keyed by idx; TEST rows with `steps` and `final_answer`, TRAIN rows with one `answer` that holds both;
frames stitched here from the six nuScenes cameras, or read pre-stitched from a folder (`stitched_dir`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from omnidrive_r1.data.stitch import CAMERAS, stitched_path
from omnidrive_r1.disk_cache import cache_root
from omnidrive_r1.errors import UserError
from omnidrive_r1.prompts import SYSTEM_PROMPT

log = logging.getLogger(__name__)

DRIVELMM_FIELDS = ("idx", "question")
STITCHED_SUFFIXES = (".png", ".jpg", ".jpeg")
# TRAIN rows: "**Step-by-Step Reasoning**:\n\n<steps>\n\n**Final Answer**: <answer>"
_TRAIN_STEPS = re.compile(r"^\s*\*\*Step-by-Step Reasoning\*\*\s*:\s*")
_TRAIN_FINAL = re.compile(r"\*\*Final Answer\*\*\s*:|\*\*Final Answer:\*\*")
DRIVELMM_MCQ_QNUMS = frozenset({2, 3, 4, 5, 8})
DEEPEYES_COLUMNS = ("data_source", "prompt", "images", "reward_model", "extra_info")


class DataError(UserError):
    """A data file or one of its rows cannot be used; the message names the file and the row."""


@dataclass
class LoadReport:
    path: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        s = f"{self.path}: kept {self.rows_kept} of {self.rows_read} rows"
        if self.skipped:
            s += " (skipped: " + ", ".join(f"{n} {why}" for why, n in self.skipped.most_common()) + ")"
        return s


class RowError(Exception):
    """One row cannot be used; `reason` is the short label it is counted under when bad rows are skipped."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _check_limit(limit) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive number of rows, got {limit!r}")


def _unique(idx: str, i: int, seen: dict) -> None:
    """Refuse a second row with an idx already seen: results are keyed by idx, so one would replace the other."""
    if idx in seen:
        raise RowError("duplicate idx", f"duplicate idx {idx!r}: row {seen[idx]} has it already")
    seen[idx] = i


def conversation(question: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The conversational prompt for one image and a question. Contents stay strings: TRL puts the image
    placeholder before the first user turn's text (`prepare_multimodal_messages`)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    return messages


def _open_image(path: Path) -> Image.Image:
    if not path.exists():
        raise RowError("missing image", f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise RowError("unreadable image", f"cannot read image {path}: {e}") from e


def _finish(rows: list[dict], report: LoadReport, path: Path):
    if not rows:
        raise DataError(f"{path}: no usable rows ({report.summary()})")
    if report.skipped:
        log.warning(report.summary())
    features = datasets.Features({
        "idx": datasets.Value("string"),
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "steps": datasets.Value("string"),
        "is_mcq": datasets.Value("bool"),
        "gt_box": datasets.Sequence(datasets.Value("float32")),
        "source": datasets.Value("string"),
    })
    return datasets.Dataset.from_list(rows, features=features), report


def read_drivelmm_rows(path: str | Path) -> list:
    """The raw rows of a DriveLMM-o1 JSON file, or a `DataError` naming what is wrong with the file.

    The file is a list of rows (what the official evaluation reads) or an object keyed by idx (what the
    official preparation reads); a keyed row without an `idx` of its own takes its key."""
    return _read_drivelmm_json(Path(path))


def split_train_answer(answer: str) -> tuple[str, str]:
    """`(steps, final_answer)` from a TRAIN row's `answer`; `RowError` when it has no final-answer part.

    >>> split_train_answer("**Step-by-Step Reasoning**:\\n\\n1. A car ahead.\\n\\n**Final Answer**: B) Stop.")
    ('1. A car ahead.', 'B) Stop.')
    """
    marks = list(_TRAIN_FINAL.finditer(answer))
    final = answer[marks[-1].end():].strip() if marks else ""
    if not final:
        raise RowError("no final answer", "field 'answer' has no '**Final Answer**: ...' part (TRAIN rows hold "
                                           "'**Step-by-Step Reasoning**: <steps> **Final Answer**: <answer>')")
    return _TRAIN_STEPS.sub("", answer[:marks[-1].start()]).strip(), final


def drivelmm_truth(raw: dict) -> tuple[str, str]:
    """`(steps, final_answer)` of a DriveLMM-o1 row, TEST-shaped (`steps`, `final_answer`) or TRAIN-shaped
    (`answer`). Raises `RowError` naming the field that is missing or malformed."""
    if "final_answer" in raw:
        return _text_field(raw, "steps", required=False), _text_field(raw, "final_answer")
    if "answer" in raw:
        return split_train_answer(_text_field(raw, "answer"))
    raise RowError("missing field", "missing field 'final_answer' (TEST rows, with 'steps') or 'answer' (TRAIN "
                                     "rows: reasoning and final answer in one text)")


def duplicate_idx_error(path: str | Path, rows: list) -> DataError | None:
    """The error `data check` gives for a file whose rows share an idx (results are keyed by idx), or None."""
    seen: dict = {}
    for i, raw in enumerate(rows):
        idx = raw.get("idx") if isinstance(raw, dict) else None
        if not isinstance(idx, str):
            continue
        try:
            _unique(idx, i, seen)
        except RowError as e:
            return DataError(f"{path}, row {i} (idx {idx!r}): {e}. Every row needs its own idx: remove or rename "
                             "the duplicate.")
    return None


def _read_drivelmm_json(path: Path) -> list:
    if not path.exists():
        raise DataError(f"DriveLMM-o1 file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if isinstance(data, dict):  # keyed by idx, as the official preparation script reads the file
        odd = next((k for k, v in data.items() if not isinstance(v, dict)), None)
        if odd is not None:
            raise DataError(f"{path}: expected a JSON list of rows or an object of rows keyed by idx; this object's "
                            f"key {odd!r} holds {type(data[odd]).__name__}, not a row")
        data = [row if "idx" in row else {**row, "idx": key} for key, row in data.items()]
    elif not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows or an object of rows keyed by idx, "
                        f"got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: the file holds no rows")
    return data


def load_drivelmm(path: str | Path, images_root: str | Path | None = None, *, cache_dir: str | Path | None = None,
                  skip_bad: bool = False, limit: int | None = None, system_prompt: str | None = SYSTEM_PROMPT,
                  progress: bool = True, stitched_dir: str | Path | None = None):
    """Load a DriveLMM-o1 JSON file; camera paths are relative to `images_root` (default: the JSON's folder).

    The six cameras of each frame are stitched once into the 2x3 grid and cached under `cache_dir`
    (default: `<cache>/stitched`), so later epochs and runs read one JPEG per frame. With `stitched_dir` the
    frames are read from there instead, as public pipelines store them: `<idx without its question
    number>.png` (or .jpg); the camera files are then not needed.
    Returns `(dataset, LoadReport)`.
    """
    path = Path(path)
    root = Path(images_root) if images_root else path.parent
    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "stitched"
    _check_limit(limit)
    data = _read_drivelmm_json(path)
    if limit:
        data = data[:limit]
    report = LoadReport(str(path), rows_read=len(data))
    if stitched_dir is not None and not Path(stitched_dir).is_dir():
        raise DataError(f"stitched frames folder not found: {stitched_dir}")
    frames = _StitchedFrames(Path(stitched_dir)) if stitched_dir is not None else None
    rows, seen = [], {}
    for i, raw in enumerate(tqdm(data, desc=f"loading {path.name}", disable=not progress)):
        try:
            row = _drivelmm_row(raw, root, cache_dir, system_prompt, frames)
            _unique(row["idx"], i, seen)
            rows.append(row)
        except RowError as e:
            where = f"{path}, row {i}" + (f" (idx {raw.get('idx')!r})" if isinstance(raw, dict) else "")
            if not skip_bad:
                raise DataError(f"{where}: {e}. Fix the row, or pass skip_bad to skip bad rows.") from None
            report.skipped[e.reason] += 1
            log.debug("skipping %s: %s", where, e)
    report.rows_kept = len(rows)
    return _finish(rows, report, path)


def _text_field(raw: dict, key: str, required: bool = True) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        got = "empty" if isinstance(value, str) else type(value).__name__
        raise RowError("bad field type", f"field {key!r} must be {'non-empty ' if required else ''}text, got {got}")
    return value


def _box_field(value) -> list[float] | None:
    """An optional ground-truth box: four finite numbers with x1 < x2 and y1 < y2."""
    if value is None:
        return None
    ok = (isinstance(value, (list, tuple)) and len(value) == 4
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok or not (value[0] < value[2] and value[1] < value[3]):
        raise RowError("bad field type", f"gt_box must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, got {value!r:.80}")
    return [float(v) for v in value]


def _inside(root: Path, relative: str) -> Path:
    """`root / relative`, refused when it resolves outside `root` (`..` or an absolute path elsewhere)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise RowError("path outside images root", f"image path {relative!r} resolves to {path}, outside the "
                                                   f"images root {root}; set images_root to the folder that holds it")
    return path


class _StitchedFrames:
    """Pre-stitched 2x3 frames in one folder, named by the idx without its question number. Each file is
    decoded once per load, so a broken one is named here and not halfway through training."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.checked: dict[str, Path] = {}

    def find(self, idx: str) -> Path:
        frame_id = idx.rsplit("_", 1)[0]
        if frame_id not in self.checked:
            candidates = [self.folder / f"{frame_id}{suffix}" for suffix in STITCHED_SUFFIXES]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise RowError("missing image", f"no stitched frame for idx {idx!r}: looked for "
                                                 f"{candidates[0]} (and {', '.join(STITCHED_SUFFIXES[1:])})")
            _open_image(found)
            self.checked[frame_id] = found
        return self.checked[frame_id]


def _camera_paths(raw: dict, root: Path) -> list[Path]:
    if "image" not in raw:
        raise RowError("missing field", "missing field 'image' (the six camera paths; or pass a folder of "
                                         "pre-stitched frames)")
    cams = raw["image"]
    if not isinstance(cams, list) or len(cams) != len(CAMERAS):
        n = len(cams) if isinstance(cams, list) else type(cams).__name__
        raise RowError("wrong camera count", f"'image' must list {len(CAMERAS)} camera paths ({', '.join(CAMERAS)}), got {n}")
    if not all(isinstance(c, str) and c.strip() for c in cams):
        raise RowError("bad field type", f"every camera path in 'image' must be non-empty text, got {cams!r:.120}")
    paths = [_inside(root, p) for p in cams]
    for p in paths:
        if not p.exists():
            raise RowError("missing image", f"image file not found: {p}")
    return paths


def _drivelmm_row(raw, root: Path, cache_dir: Path, system_prompt, frames: _StitchedFrames | None = None) -> dict:
    if not isinstance(raw, dict):
        raise RowError("not an object", f"expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in DRIVELMM_FIELDS if k not in raw]
    if missing:
        raise RowError("missing field", f"missing field(s) {missing}")
    idx = _text_field(raw, "idx")
    question = _text_field(raw, "question")
    steps, answer = drivelmm_truth(raw)
    try:
        qnum = int(idx.rsplit("_", 1)[-1])
    except ValueError:
        raise RowError("bad idx", f"idx {idx!r} does not end in _<question number>") from None
    gt_box = _box_field(raw.get("gt_box"))
    if frames is not None:
        frame = frames.find(idx)
    else:
        frame = stitched_path(_camera_paths(raw, root), cache_dir, _open_image)
    return {
        "idx": idx,
        "prompt": conversation(question, system_prompt),
        "image": str(frame),
        "question": question,
        "answer": answer,
        "steps": steps,
        "is_mcq": qnum in DRIVELMM_MCQ_QNUMS,
        "gt_box": gt_box,
        "source": "drivelmm",
    }


def load_deepeyes(path: str | Path, *, sources: list[str] | None = None, skip_bad: bool = False,
                  limit: int | None = None, system_prompt: str | None = SYSTEM_PROMPT):
    """Load a DeepEyes parquet file (optionally only some `data_source` values, e.g. the fine-grained
    V*-style subset for stage 1). Returns `(dataset, LoadReport)`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"DeepEyes file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable parquet file ({e})") from e
    missing = [c for c in DEEPEYES_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; DeepEyes files have {list(DEEPEYES_COLUMNS)}")
    _check_limit(limit)
    data = table.to_pylist()
    if sources:
        present = sorted({str(r.get("data_source")) for r in data})
        unknown = sorted(set(sources) - set(present))
        if unknown:
            raise DataError(f"{path}: no rows with data_source {unknown}; the file has {present}")
        data = [r for r in data if r.get("data_source") in set(sources)]
    if limit:
        data = data[:limit]
    report = LoadReport(str(path), rows_read=len(data))
    rows, seen = [], {}
    for i, raw in enumerate(data):
        try:
            row = _deepeyes_row(raw, i, system_prompt)
            _unique(row["idx"], i, seen)
            rows.append(row)
        except RowError as e:
            extra = raw.get("extra_info") if isinstance(raw, dict) else None
            index = extra.get("index", i) if isinstance(extra, dict) else i
            where = f"{path}, row {i} (idx {raw.get('data_source', 'deepeyes')}-{index})"
            if not skip_bad:
                raise DataError(f"{where}: {e}. Fix the row, or pass skip_bad to skip bad rows.") from None
            report.skipped[e.reason] += 1
    report.rows_kept = len(rows)
    return _finish(rows, report, path)


def _deepeyes_row(raw: dict, i: int, system_prompt) -> dict:
    images = raw.get("images") or []
    if len(images) != 1:
        raise RowError("wrong image count", f"expected one image, got {len(images)}")
    blob = images[0].get("bytes") if isinstance(images[0], dict) else None
    if not blob:
        raise RowError("missing image", "the image has no bytes")
    try:  # a full decode: `verify` passes a truncated image that fails later, inside training's dataloader
        with Image.open(io.BytesIO(blob)) as im:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RowError("unreadable image", f"cannot decode the image bytes: {e}") from None
    extra = raw.get("extra_info") or {}
    reward = raw.get("reward_model") or {}
    if not isinstance(extra, dict) or not isinstance(reward, dict):
        raise RowError("bad field type", "extra_info and reward_model must be objects")
    answer = reward.get("ground_truth", extra.get("answer"))
    if answer is None:
        raise RowError("missing field", "no reward_model.ground_truth and no extra_info.answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise RowError("bad field type", f"the ground truth must be text or a number, got {answer!r:.60}")
    question = extra.get("question")
    if question is None:
        turns = [m for m in (raw.get("prompt") or []) if isinstance(m, dict) and m.get("role") == "user"]
        if not turns or not isinstance(turns[-1].get("content"), str):
            raise RowError("missing field", "no extra_info.question and no user turn with text in prompt")
        question = turns[-1]["content"].replace("<image>", "").strip()
    if not isinstance(question, str) or not question.strip():
        raise RowError("bad field type", f"the question must be non-empty text, got {question!r:.60}")
    answer = str(answer)
    gt_box = _box_field(extra.get("gt_box"))
    return {
        "idx": f"{raw.get('data_source', 'deepeyes')}-{extra.get('index', i)}",
        "prompt": conversation(question, system_prompt),
        "image": {"bytes": blob, "path": None},
        "question": question,
        "answer": answer,
        "steps": "",
        "is_mcq": len(answer.strip()) == 1 and answer.strip().upper() in "ABCDEF",
        "gt_box": gt_box,
        "source": str(raw.get("data_source", "deepeyes")),
    }
