"""`ClipGRPOTrainer`: TRL's GRPOTrainer with the few fixes our multimodal tool setup needs."""

from __future__ import annotations

from trl import GRPOTrainer

from omnidrive_r1.protocol import text_of


def conversation_text(messages) -> str:
    """A conversation as readable text, images shown as <image>."""
    if isinstance(messages, str):
        return messages
    lines = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join("<image>" if b.get("type") == "image" else (b.get("text") or "") for b in content)
        text = text_of(content)
        for call in m.get("tool_calls") or []:
            fn = call.get("function", call)
            text += f"\n<tool_call>{fn.get('name')} {fn.get('arguments')}</tool_call>"
        lines.append(f"[{m.get('role')}] {text}")
    return "\n".join(lines)


class ClipGRPOTrainer(GRPOTrainer):
    def log(self, logs, start_time=None):
        # TRL logs prompts and completions as message lists; with image blocks ({"type": "image"}) next to text
        # blocks, wandb's Table refuses the rows ("incompatible types"). Text is also easier to read there.
        for key in ("prompt", "completion"):
            buffer = self._logs[key]
            for i, item in enumerate(buffer):
                if not isinstance(item, str):
                    buffer[i] = conversation_text(item)
        super().log(logs, start_time)
