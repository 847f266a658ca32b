"""`clip_grounding`: does each zoom crop show what the policy said it would? (`docs/rewards.md`)

For each tool call k of a trajectory, with t_k its `label` (else the last sentence written before the call):

    s_k = cos(CLIP_img(crop_k), CLIP_txt(t_k))        the crop matches the text
    b_k = cos(CLIP_img(full image), CLIP_txt(t_k))    ... better than the whole image does?
    g_k = clip((s_k - b_k) / margin, 0, 1)

A failed call scores g_k = 0. The trajectory scores the mean g_k over its calls, 0 without any call, and
(by default) 0 unless its answer is correct, so that zooming alone cannot be farmed. Per generation batch
there is one image pass over the distinct crops, one over the full images not yet cached, and one text
pass over the distinct texts.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

import torch

from omnidrive_r1.rewards.answer_accuracy import score as answer_score
from omnidrive_r1.tools import find_part
from omnidrive_r1.tools.zoom_in import ZoomInTool

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TAGS = re.compile(r"</?(think|answer)>")


def call_text(call) -> str:
    """What the crop should show: the call's label, else the last sentence written before the call."""
    if call.label and call.label.strip():
        return call.label.strip()
    text = _TAGS.sub(" ", call.reasoning or "").strip()
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    return sentences[-1].strip() if sentences else ""


class OpenClipEncoder:
    """open_clip model + preprocessing: `encode_images(list[PIL])`, `encode_texts(list[str])` -> unit rows.

    `model_name` is any open_clip name (`ViT-B-32` with `pretrained="openai"`, `hf-hub:org/repo`) or
    `local-dir:PATH`, a folder with `open_clip_config.json` and the weights (the toy preset's CLIP).
    """

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = None, device: str | None = None,
                 precision: str | None = None):
        import open_clip  # seconds to import: only when the CLIP reward is built

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision is None:
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        local = model_name.startswith("local-dir:")
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None if local else pretrained, device=self.device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.model = model.to(dtype=self.dtype).eval()

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device, self.dtype)
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)


class ClipGrounding:
    """TRL reward function (a callable object holding the CLIP model and the full-image cache).

    Args:
        model_name, pretrained: an open_clip model name and its weights (hub tag or local file).
        margin: how much better than the full image a crop must match its text to score 1.
        gate_on_correct: score 0 unless the answer is correct (answer_accuracy >= gate_threshold).
        encoder: anything with `encode_images` / `encode_texts` (tests inject a deterministic one).
        cache_size: full-image embeddings kept (one per prompt).
    """

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai", margin: float = 0.1,
                 gate_on_correct: bool = True, gate_threshold: float = 0.5, device: str | None = None,
                 precision: str | None = None, encoder=None, cache_size: int = 4096):
        if margin <= 0:
            raise ValueError(f"clip_grounding margin must be > 0, got {margin}")
        self.__name__ = "clip_grounding"
        self.margin, self.gate_on_correct, self.gate_threshold = margin, gate_on_correct, gate_threshold
        self.encoder = encoder or OpenClipEncoder(model_name, pretrained, device, precision)
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    def _full_key(self, image, idx) -> str:
        if idx is not None:
            return f"{idx}|{image.size}"
        return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()

    def _full_embeddings(self, images: dict[str, object]) -> dict[str, torch.Tensor]:
        missing = [k for k in images if k not in self.cache]
        if missing:
            for k, emb in zip(missing, self.encoder.encode_images([images[k] for k in missing])):
                self.cache[k] = emb
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
        for k in images:
            self.cache.move_to_end(k)
        return {k: self.cache[k] for k in images}

    def grounding_scores(self, items, log_metric=None) -> list[float]:
        """g_k for each (full-image key, full image, call, text) in one batch."""
        full = self._full_embeddings({key: image for key, image, _, _ in items})
        # rollouts of one prompt often repeat a label or even a whole call: encode each distinct one once
        crop_keys = [(key, call.box) for key, _, call, _ in items]
        crops = dict(zip(crop_keys, (call.crop for _, _, call, _ in items)))
        texts = list(dict.fromkeys(text for *_, text in items))
        crop_rows = dict(zip(crops, self.encoder.encode_images(list(crops.values()))))
        text_rows = dict(zip(texts, self.encoder.encode_texts(texts)))
        crop_emb = torch.stack([crop_rows[k] for k in crop_keys])
        text_emb = torch.stack([text_rows[text] for *_, text in items]).to(crop_emb.device)
        full_emb = torch.stack([full[key] for key, *_ in items]).to(crop_emb.device)
        s = (crop_emb * text_emb).sum(-1)
        b = (full_emb * text_emb).sum(-1)
        if log_metric is not None:
            log_metric("clip/crop_text_sim", float(s.mean()))
            log_metric("clip/full_text_sim", float(b.mean()))
            log_metric("clip/crop_full_sim", float((crop_emb * full_emb).sum(-1).mean()))
        return ((s - b) / self.margin).clamp(0, 1).tolist()

    def __call__(self, prompts, completions, completion_ids=None, environments=None, answer=None, is_mcq=None,
                 source=None, idx=None, log_metric=None, **kwargs):
        if environments is None:
            raise ValueError("clip_grounding needs the zoom tool: add `zoom_in` to the recipe's tools")
        if self.gate_on_correct and answer is None:
            raise ValueError("clip_grounding with gate_on_correct needs an `answer` column in the dataset "
                             "(or set gate_on_correct: false)")
        calls_per_rollout, items = [], []
        for i, env in enumerate(environments):
            part = find_part(env, ZoomInTool)
            calls = part.calls if part is not None else []  # `reasoning` is recorded by the tool machinery
            calls_per_rollout.append(calls)
            root = part.images[0].root if part is not None and part.images else None
            key = self._full_key(root, idx[i] if idx is not None else None) if calls else None
            for call in calls:
                text = call_text(call) if call.ok else ""
                if text:  # failed calls, and calls with nothing to ground against, score 0
                    items.append((key, root, call, text))
        g = dict(zip((id(call) for _, _, call, _ in items), self.grounding_scores(items, log_metric))) if items else {}

        rewards = []
        for i, calls in enumerate(calls_per_rollout):
            value = sum(g.get(id(c), 0.0) for c in calls) / len(calls) if calls else 0.0
            if value and self.gate_on_correct:
                correct = answer_score(completions[i], answer[i], bool(is_mcq[i]) if is_mcq else False,
                                       source[i] if source else None)
                value = value if correct >= self.gate_threshold else 0.0
            rewards.append(value)
        return rewards

REWARD = ClipGrounding
