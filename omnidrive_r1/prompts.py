"""The iMCoT system prompt (`docs/protocol.md`). The tool's JSON schema is added by the chat template. The words
on the box follow the policy family's convention (`omnidrive_r1/policies/`): pixels of the image it sees, or
relative to the image, 0 to 1000 on each axis."""

SYSTEM_PROMPT = (
    "You are a careful driving assistant that reasons about camera images. "
    "Think inside <think></think>. When a detail is too small to see, zoom in by calling "
    "image_zoom_in_tool with a bounding box [x1, y1, x2, y2] in pixels of the image you see and a short "
    "label of what you expect there; the zoomed crop comes back as a new image. "
    "When you are sure, write the final answer inside <answer></answer>. For a multiple-choice "
    "question write the letter and the option text, for example <answer>B) Slow down.</answer>"
)


def system_prompt(coordinates: str = "pixels") -> str:
    """The system prompt for a policy that writes boxes in `coordinates` ("pixels" or "relative")."""
    if coordinates == "pixels":
        return SYSTEM_PROMPT
    return SYSTEM_PROMPT.replace("in pixels of the image you see", "relative to the image, 0 to 1000 on each axis")
