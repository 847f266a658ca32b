import math

import pytest
import torch
from PIL import Image

from omnidrive_r1.rewards import CheckedReward, RewardError, available, build_rewards
from omnidrive_r1.rewards.answer_accuracy import answer_accuracy, token_f1
from omnidrive_r1.rewards.clip_grounding import ClipGrounding, call_text
from omnidrive_r1.rewards.format import format_reward
from omnidrive_r1.tools.zoom_in import TOOL_NAME, ZoomInTool


def answered(text, think="<think>ok</think>"):
    return [{"role": "assistant", "content": f"{think}<answer>{text}</answer>"}]


def tool_call(args=None, content="<think>The light is small.</think>\n"):
    args = args or {"bbox_2d": [1, 2, 60, 60], "label": "light"}
    return {"role": "assistant", "content": content,
            "tool_calls": [{"type": "function", "function": {"name": TOOL_NAME, "arguments": args}}]}


TOOL_RESULT = {"role": "tool", "name": TOOL_NAME, "content": [{"type": "text", "text": "Zoomed."}]}


# ------------------------------------------------------------------------------------------ answer_accuracy

@pytest.mark.parametrize("written, expected", [
    ("B) Slow down and assess the situation.", 1.0),
    ("B", 1.0),
    ("b) slow down", 1.0),
    ("(B)", 1.0),
    ("A) Stop.", 0.0),
    ("A) Stop. B) Slow down.", 0.0),   # several letters: hedging earns nothing
    ("A or B", 0.0),
    ("Slow down and assess the situation.", 0.0),  # no letter
    ("", 0.0),
])
def test_mcq_letter_match(written, expected):
    truth = "B) Slow down and assess the situation."
    assert answer_accuracy(None, [answered(written)], answer=[truth], is_mcq=[True], source=["drivelmm"]) == [expected]


def test_no_answer_tag_scores_zero():
    out = answer_accuracy(None, [[{"role": "assistant", "content": "<think>B</think> B) Slow down"}]],
                          answer=["B) Slow down"], is_mcq=[True], source=["drivelmm"])
    assert out == [0.0]


def test_open_answers_score_token_f1():
    truth = "The traffic light ahead is red."
    out = answer_accuracy(None, [answered("The light is red."), answered(truth), answered("green")],
                          answer=[truth] * 3, is_mcq=[False] * 3, source=["drivelmm"] * 3)
    # prediction {light, is, red} vs truth {traffic, light, ahead, is, red}: P = 1, R = 3/5
    assert out[0] == pytest.approx(2 * 1 * 0.6 / 1.6) and out[1] == 1.0 and out[2] == 0.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_deepeyes_rows_use_string_or_number_match():
    out = answer_accuracy(None, [answered("Red."), answered("red light"), answered("3.0"), answered("1,000")],
                          answer=["red", "red", "3", "1000"], is_mcq=[False] * 4, source=["vstar"] * 4)
    assert out == [1.0, 0.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------------- format

@pytest.mark.parametrize("completion, expected", [
    (answered("B) Stop."), 1.0),
    ([tool_call(), TOOL_RESULT, *answered("B) Stop.")], 1.0),
    ([tool_call(), TOOL_RESULT, tool_call(), TOOL_RESULT, *answered("B")], 1.0),
    ([{"role": "assistant", "content": "<answer>B</answer>"}], 0.0),                   # missing think
    ([{"role": "assistant", "content": "<think>x</think><answer>B</answer> extra"}], 0.0),  # text after answer
    ([{"role": "assistant", "content": "<think>x</think><answer>B</answer><answer>C</answer>"}], 0.0),  # two answers
    ([{"role": "assistant", "content": "<think>x</think><answer>B</answer>",
       "tool_calls": tool_call()["tool_calls"]}, TOOL_RESULT], 0.0),                  # tool call after the answer
    ([tool_call(content="<think>x</think><answer>B</answer>"), TOOL_RESULT, *answered("B")], 0.0),  # two answers
    ([tool_call(), TOOL_RESULT], 0.0),                                                 # ends without an answer
    ([tool_call(content=""), TOOL_RESULT, *answered("B")], 0.0),                       # tool turn without think
    ([{"role": "assistant", "content": '<think>x</think><tool_call>{"name": broken</tool_call>'}], 0.0),
    ("<think>x</think><answer>B</answer>", 1.0),                                        # plain-string completion
])
def test_format(completion, expected):
    assert format_reward(None, [completion]) == [expected]


# -------------------------------------------------------------------------------------------- clip_grounding

class ColourEncoder:
    """Deterministic stand-in for CLIP: an image embeds as its mean colour, a text as the colour it names."""

    NAMES = {"red light": (1.0, 0.0, 0.0), "green tree": (0.0, 1.0, 0.0), "blue sky": (0.0, 0.0, 1.0)}

    def __init__(self):
        self.image_batches, self.text_batches = [], []

    def encode_images(self, images):
        self.image_batches.append(len(images))
        rows = [torch.tensor(Image.Image.resize(im.convert("RGB"), (1, 1), Image.Resampling.BOX).getpixel((0, 0)),
                             dtype=torch.float32) + 1e-3 for im in images]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def encode_texts(self, texts):
        self.text_batches.append(len(texts))
        rows = [torch.tensor(self.NAMES.get(t, (1.0, 1.0, 1.0))) + 1e-3 for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def _scene():
    img = Image.new("RGB", (400, 200), (0, 0, 255))   # a blue sky ...
    img.paste((255, 0, 0), (0, 0, 100, 100))         # ... with a red light in the top-left corner
    return img


def _rollout(*calls, answer="B) Red."):
    env = ZoomInTool(min_pixels=3136, max_pixels=400 * 200)
    env.reset(image=_scene())
    messages = []
    for box, label in calls:
        env.image_zoom_in_tool(bbox_2d=box, label=label)
        messages += [tool_call({"bbox_2d": box, "label": label}), TOOL_RESULT]
    return env, messages + answered(answer)


def _score(reward, rollouts, answers=None):
    envs, completions = zip(*rollouts)
    n = len(envs)
    return reward(None, list(completions), environments=list(envs), answer=answers or ["B) Red."] * n,
                  is_mcq=[True] * n, source=["drivelmm"] * n, idx=[f"p{i}" for i in range(n)])


def test_crop_matching_its_text_better_than_the_whole_image_scores_higher():
    reward = ClipGrounding(encoder=ColourEncoder(), margin=0.1)
    on_target = _rollout(([0, 0, 100, 100], "red light"))
    off_target = _rollout(([300, 100, 400, 200], "red light"))
    scores = _score(reward, [on_target, off_target])
    assert scores[0] == 1.0 and scores[1] == 0.0


def test_margin_scales_the_score():
    enc = ColourEncoder()
    env, completion = _rollout(([0, 0, 200, 100], "red light"))  # half red, half blue
    s = float((enc.encode_images([env.calls[0].crop]) * enc.encode_texts(["red light"])).sum())
    b = float((enc.encode_images([_scene()]) * enc.encode_texts(["red light"])).sum())
    for margin in (0.1, 1.0, 5.0):
        got = _score(ClipGrounding(encoder=ColourEncoder(), margin=margin), [(env, completion)])[0]
        assert got == pytest.approx(min(1.0, max(0.0, (s - b) / margin)), abs=1e-6)


def test_gate_on_correctness():
    rollout = _rollout(([0, 0, 100, 100], "red light"), answer="C) Green.")
    assert _score(ClipGrounding(encoder=ColourEncoder()), [rollout]) == [0.0]
    assert _score(ClipGrounding(encoder=ColourEncoder(), gate_on_correct=False), [rollout]) == [1.0]


def test_no_call_and_invalid_calls_score_zero():
    reward = ClipGrounding(encoder=ColourEncoder(), gate_on_correct=False)
    no_call = _rollout()
    invalid = _rollout(([float("nan"), 0, 1, 1], "red light"))
    half = _rollout(([0, 0, 100, 100], "red light"), ([-5, -5, -1, -1], "red light"))
    assert _score(reward, [no_call, invalid, half]) == [0.0, 0.0, 0.5]
    assert not invalid[0].calls[0].ok


def test_text_falls_back_to_the_sentence_before_the_call():
    env, completion = _rollout(([0, 0, 100, 100], ""))
    completion[0]["content"] = "<think>The sky is clear. Check the red light</think>\n"
    from omnidrive_r1.tools.zoom_in import annotate

    annotate(env, completion)
    assert call_text(env.calls[0]) == "Check the red light"


def test_one_image_pass_and_one_text_pass_per_batch_and_full_images_cached():
    enc = ColourEncoder()
    reward = ClipGrounding(encoder=enc, gate_on_correct=False)
    batch = [_rollout(([0, 0, 100, 100], "red light"), ([k, 0, 50 + k, 50], "blue sky")) for k in range(3)]
    _score(reward, batch)
    # 6 crops + 3 prompts (idx p0..p2) -> one pass over the 3 full images, one over the 6 crops,
    # one text pass over the 2 distinct texts
    assert enc.text_batches == [2] and sorted(enc.image_batches) == [3, 6]
    _score(reward, batch)
    assert enc.image_batches[-1] == 6 and len(enc.image_batches) == 3  # full images came from the cache


def test_identical_calls_of_one_prompt_are_encoded_once():
    enc = ColourEncoder()
    reward = ClipGrounding(encoder=enc, gate_on_correct=False)
    batch = [_rollout(([0, 0, 100, 100], "red light")) for _ in range(4)]
    envs, completions = zip(*batch)
    scores = reward(None, list(completions), environments=list(envs), idx=["same"] * 4)
    assert scores == [1.0] * 4 and enc.image_batches == [1, 1] and enc.text_batches == [1]


def test_real_open_clip_tiny_model(tiny_clip_dir):
    from omnidrive_r1.toy.tiny import TINY_CLIP_CONFIG

    reward = ClipGrounding(model_name=f"local-dir:{tiny_clip_dir}", gate_on_correct=False, margin=1e-3)
    batch = [_rollout(([0, 0, 100, 100], "red light")), _rollout(([100, 50, 300, 150], "blue sky")), _rollout()]
    logged = {}
    envs, completions = zip(*batch)
    scores = reward(None, list(completions), environments=list(envs), answer=["B"] * 3, is_mcq=[True] * 3,
                    idx=["a", "b", "c"], log_metric=logged.__setitem__)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores) and scores[2] == 0.0
    assert set(logged) == {"clip/crop_text_sim", "clip/full_text_sim", "clip/crop_full_sim"}
    assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in logged.values())
    emb = reward.encoder.encode_images([_scene(), _scene().crop((0, 0, 30, 30))])
    assert emb.shape == (2, TINY_CLIP_CONFIG["embed_dim"]) and torch.allclose(emb.norm(dim=-1), torch.ones(2))
    assert len(reward.cache) == 2  # full images of the two rollouts that zoomed
    again = reward(None, list(completions), environments=list(envs), answer=["B"] * 3, is_mcq=[True] * 3,
                   idx=["a", "b", "c"])
    assert again == pytest.approx(scores, abs=1e-5)


# -------------------------------------------------------------------------------------------------- plug-ins

def test_registry_builds_builtins_with_weights_and_options(tmp_path):
    assert available() == ["answer_accuracy", "clip_grounding", "format", "tool_bonus"]
    funcs, weights, names = build_rewards([{"name": "answer_accuracy"}, {"name": "format", "weight": 0.25}])
    assert names == ["answer_accuracy", "format"] and weights == [1.0, 0.25]
    assert isinstance(funcs[0], CheckedReward) and funcs[0].__name__ == "answer_accuracy"


def test_user_reward_from_a_file_in_a_few_lines(tmp_path):
    plugin = tmp_path / "my_reward.py"
    plugin.write_text("def brevity(prompts, completions, completion_ids=None, max_chars=100, **kwargs):\n"
                      "    return [float(len(str(c)) <= max_chars) for c in completions]\n")
    funcs, weights, names = build_rewards([{"path": f"{plugin}:brevity", "weight": 0.1, "max_chars": 5}])
    assert names == ["brevity"] and weights == [0.1]
    assert funcs[0](None, ["short", "much too long"]) == [1.0, 0.0]


@pytest.mark.parametrize("spec, message", [
    ({"name": "nope"}, r"unknown reward 'nope'; known rewards: \['answer_accuracy', 'clip_grounding', 'format', 'tool_bonus'\]"),
    ({"path": "no_such_module_xyz:fn"}, "cannot import reward module"),
    ({"path": "omnidrive_r1.protocol:nope"}, "has no attribute 'nope'"),
    ({"path": "missing_file.py:fn"}, "reward file not found"),
    ({"path": "omnidrive_r1.protocol"}, "must look like"),
    ({"name": "format", "bogus": 1}, "takes no option"),
    ({"name": "format", "weight": "heavy"}, "weight: must be a number"),
    ({"name": "clip_grounding", "margin": 0, "encoder": object()}, "margin must be > 0"),
])
def test_bad_reward_specs_fail_at_start_up(spec, message):
    with pytest.raises(ValueError, match=message):
        build_rewards([spec])


def test_tool_use_metrics_of_a_batch():
    from omnidrive_r1.tools import batch_metrics

    env_a, _ = _rollout(([0, 0, 100, 100], "red light"), ([float("nan"), 0, 1, 1], "x"))
    env_b, _ = _rollout()
    logged = batch_metrics([env_a, env_b])
    assert logged["tools/call_rate"] == 0.5 and logged["tools/calls_per_rollout"] == 1.0
    assert logged["tools/failure_rate"] == 0.5 and logged["tools/failure/not_finite"] == 0.5
    assert logged["tools/failure/call_limit"] == 0.0 and logged["tools/crops_per_rollout"] == 0.5
    assert logged["tools/images_per_rollout"] == 1.5
    assert logged["tools/crop_area_frac"] == pytest.approx(100 * 100 / (400 * 200), rel=0.2)


# ------------------------------------------------------------------------------ rewards that return garbage

def _plugin(tmp_path, body):
    path = tmp_path / "bad_reward.py"
    path.write_text(f"def bad(prompts, completions, **kwargs):\n    return {body}\n")
    return build_rewards([{"path": f"{path}:bad"}])[0][0]


def test_a_reward_returning_text_names_the_reward_and_sample(tmp_path):
    reward = _plugin(tmp_path, "[1.0, 'abc']")
    with pytest.raises(RewardError, match=r"reward 'bad' returned 'abc' \(str\) for sample 1 \(idx 'q1'\)"):
        reward(None, ["x", "y"], idx=["q0", "q1"])


@pytest.mark.parametrize("value", ["float('nan')", "float('inf')", "-float('inf')"])
def test_non_finite_rewards_are_recorded_and_never_passed_on(tmp_path, value):
    reward = _plugin(tmp_path, f"[0.5, {value}, None]")
    assert reward(None, ["x", "y", "z"]) == [0.5, 0.0, None]
    assert [i for i, _ in reward.bad] == [1]


# ----------------------------------------------------------------------------------------------- tool_bonus

def _crop_reply():
    return {"role": "tool", "name": TOOL_NAME,
            "content": [{"type": "image", "image": Image.new("RGB", (28, 28))}, {"type": "text", "text": "Zoomed."}]}


def test_tool_bonus_pays_a_right_answer_reached_after_a_crop_and_nothing_else():
    from omnidrive_r1.rewards.tool_bonus import tool_bonus

    right, wrong = answered("B) Slow down"), answered("A) Stop")
    completions = [
        [tool_call(), _crop_reply(), *right],          # crop, right: 1
        [tool_call(), _crop_reply(), *wrong],          # crop, wrong: 0
        right,                                         # right without a zoom: 0
        [tool_call(), TOOL_RESULT, *right],            # the call failed (text reply, no image): 0
        [tool_call(), _crop_reply()],                  # no answer at all: 0
    ]
    n = len(completions)
    out = tool_bonus(None, completions, answer=["B) Slow down"] * n, is_mcq=[True] * n, source=["drivelmm"] * n)
    assert out == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_tool_bonus_options_threshold_and_images_and_refuses_bad_values():
    from omnidrive_r1.rewards.tool_bonus import tool_bonus

    truth = "The traffic light ahead is red."
    partial = [tool_call(), _crop_reply(), *answered("The light is red.")]  # token F1 0.75
    kwargs = dict(answer=[truth], is_mcq=[False], source=["drivelmm"])
    assert tool_bonus(None, [partial], **kwargs) == [1.0]
    assert tool_bonus(None, [partial], threshold=0.8, **kwargs) == [0.0]
    assert tool_bonus(None, [partial], min_images=2, **kwargs) == [0.0]
    two = [tool_call(), _crop_reply(), tool_call(), _crop_reply(), *answered(truth)]
    assert tool_bonus(None, [two], min_images=2, **kwargs) == [1.0]
    with pytest.raises(ValueError, match="threshold"):
        tool_bonus(None, [partial], threshold=1.5, **kwargs)
    with pytest.raises(ValueError, match="min_images"):
        tool_bonus(None, [partial], min_images=0, **kwargs)


def test_tool_bonus_is_a_built_in_reward_a_recipe_names_with_its_options():
    assert "tool_bonus" in available()
    funcs, weights, names = build_rewards([{"name": "tool_bonus", "weight": 0.5, "threshold": 1.0}])
    assert names == ["tool_bonus"] and weights == [0.5]
    out = funcs[0](None, [[tool_call(), _crop_reply(), *answered("B")]], answer=["B"], is_mcq=[True], source=["drivelmm"])
    assert out == [1.0]
    with pytest.raises(Exception, match="nope"):
        build_rewards([{"name": "tool_bonus", "nope": 1}])
