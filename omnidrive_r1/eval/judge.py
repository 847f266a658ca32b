"""The judge over any OpenAI-compatible chat-completions endpoint: DriveLMM-o1's 12-metric reasoning judge, and
a yes/no correctness check for multiple-choice benchmarks (HR-Bench's official scoring asks one).

Four request layouts (DriveLMM-o1: `docs/evaluation.md`; V* Bench and HR-Bench: `docs/benchmarks.md`):
- `ours` (the default): the project's own prompt (same metrics and 1-10 bands as the official one) and a
  user message that labels the reference steps and answer;
- `official`: the DriveLMM-o1 request byte for byte (system prompt, one text block `Question: ...\nGround
  Truth: ...\nLLM Response: ...`, model, temperature, max tokens, response schema), for numbers that stand
  next to the published ones. The official system prompt is the authors' writing and is not shipped: it is
  read from the user's own copy of the official `evaluation_script.py` (`--official-script`);
- `yesno`: is this answer to the question correct, given the right option? (`JudgeConfig.yes_no`; HR-Bench's
  official scoring asks every row this, and counts a reply starting with "yes")
- `consistency`: do the model's answer and the standard answer agree? replied as `Judgement: 1` or `0`
  (`JudgeConfig.consistency`; the question DeepEyes' V* and HR-Bench scorers ask of what their rules leave open)

Strict JSON-schema output when the server accepts it; bounded concurrency; retries with exponential backoff
on HTTP errors, timeouts and malformed JSON. A row that still fails is returned as a failure with its reason:
never dropped. Every raw reply is kept, so the official-equivalent figures can be computed from the same
answers. The API key comes from an environment variable and is never logged.
"""

from __future__ import annotations

import ast
import json
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from omnidrive_r1.errors import UserError
from omnidrive_r1.eval.choice_reading import judgement_verdict
from omnidrive_r1.eval.drivelmm_scoring import METRICS, OVERALL

JUDGE_PROMPT = """You grade the reasoning of a driving assistant about a multi-camera driving scene.
You get the question, the reference reasoning steps with the reference final answer, and the assistant's
full response. Score each metric from 1 (very poor) to 10 (excellent):

- Faithfulness-Step: each step agrees with the scene and the reference steps.
- Informativeness-Step: the steps carry the information needed to reach the answer.
- Risk Assessment Accuracy: hazards and their severity are identified correctly.
- Traffic Rule Adherence: the reasoning respects traffic rules and signals.
- Scene Awareness & Object Understanding: relevant objects, positions and states are understood.
- Repetition-Token: no needless repetition (10 = none).
- Hallucination: nothing is invented that is not in the scene (10 = nothing invented).
- Semantic Coverage-Step: the response covers the meaning of the reference steps.
- Commonsense: the reasoning is sensible for real driving.
- Missing Step: no necessary step is skipped (10 = none missing).
- Relevance: everything said bears on the question.
- Missing Details: no important detail is left out (10 = none missing).

Bands: 1-2 wrong or absent, 3-4 poor, 5-6 partly right, 7-8 mostly right, 9-10 fully right.
"Overall Score" is the mean of the twelve. Reply with one JSON object holding these 13 keys and numbers."""

RESPONSE_SCHEMA = {
    "name": "EvaluationScores",  # the official script's name for the schema
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {k: {"type": "number"} for k in (*METRICS, OVERALL)},
        "required": [*METRICS, OVERALL],
        "additionalProperties": False,
    },
}


OFFICIAL_MODEL = "gpt-4o-mini"

YES_NO_PROMPT = """You check answers to multiple-choice questions about an image. You get the question with its
options, the correct option, and a model's answer. Decide whether the model's answer picks the correct option
(by its letter or by its content). Reply with one word: yes or no."""


CONSISTENCY_PROMPT = """You compare two answers to the same question about an image: the standard answer and an
answer taken from a model's output. They are consistent when they mean the same thing, however differently they
are worded (a letter that names the standard option, the option's words, or a short phrase such as "green" for
"The light is green." all agree with it); they are not consistent when the model's answer picks another option,
says the opposite, or says nothing that settles the question.
Reply with exactly one line: "Judgement: 1" if they are consistent, "Judgement: 0" if not."""


def official_system_prompt(script: str | Path) -> str:
    """The system prompt of the user's copy of the official `evaluation_script.py` (the string assigned to
    `system_prompt`), read without running the script."""
    path = Path(script)
    if not path.is_file():
        raise UserError(f"--official-script: {path} not found; point it at your copy of the official DriveLMM-o1 "
                        "evaluation/evaluation_script.py")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError as e:
        raise UserError(f"--official-script: {path} is not a Python file ({e})") from None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "system_prompt" for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise UserError(f"--official-script: {path} assigns no string to `system_prompt`; is it the official "
                    "DriveLMM-o1 evaluation_script.py?")


def official_ground_truth(steps: str, final_answer: str) -> str:
    return "**Step-by-Step Reasoning**: " + steps + " **Final Answer**: " + final_answer


@dataclass
class JudgeConfig:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended)
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str = JUDGE_PROMPT
    layout: str = "ours"  # or "official": the official user message (set by `official`)
    prompt_source: str = "the project's prompt"  # what summary.md says judged the run
    temperature: float = 0.0
    max_tokens: int = 500
    json_schema: bool = True
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0  # seconds before the first retry, doubled each time, with jitter
    concurrency: int = 8

    @classmethod
    def official(cls, script: str | Path, url: str, model: str = OFFICIAL_MODEL, **kwargs) -> JudgeConfig:
        """The official request: its system prompt (read from `script`), layout and settings."""
        return cls(url=url, model=model, prompt=official_system_prompt(script), layout="official",
                   prompt_source=f"the official system prompt, read from {script}", temperature=0.0,
                   max_tokens=500, json_schema=True, **kwargs)

    @classmethod
    def yes_no(cls, url: str, model: str, **kwargs) -> JudgeConfig:
        """A yes/no correctness check (its verdict is read as {"correct": 1.0 or 0.0})."""
        return cls(url=url, model=model, prompt=YES_NO_PROMPT, layout="yesno", json_schema=False, max_tokens=10,
                   prompt_source="the project's yes/no prompt", **kwargs)

    @classmethod
    def consistency(cls, url: str, model: str, **kwargs) -> JudgeConfig:
        """Do two answers agree? (read as `choice_reading.judgement_verdict` reads it: {"correct": 1.0 or 0.0})"""
        return cls(url=url, model=model, prompt=CONSISTENCY_PROMPT, layout="consistency", json_schema=False,
                   max_tokens=10, prompt_source="the project's consistency prompt (Judgement: 1 or 0)", **kwargs)

    def as_layout(self, layout: str) -> JudgeConfig:
        """The same endpoint and settings asking another question (`yesno` or `consistency`)."""
        make = {"yesno": JudgeConfig.yes_no, "consistency": JudgeConfig.consistency}[layout]
        return make(self.url, self.model, api_key_env=self.api_key_env, temperature=self.temperature,
                    timeout=self.timeout, retries=self.retries, backoff=self.backoff, concurrency=self.concurrency)

    def identity(self) -> dict:
        """What decides a judge's answers (a re-run with another identity judges again)."""
        return {"url": self.url, "model": self.model, "layout": self.layout, "prompt": self.prompt,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "json_schema": self.json_schema}


@dataclass
class Judgment:
    idx: str
    scores: dict | None  # the 12 metrics and Overall Score, when the judge answered
    error: str | None = None
    attempts: int = 0
    reply: str | None = None  # the judge's raw reply (the official figures parse it their own way)


class JudgeError(Exception):
    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


def judge_messages(config: JudgeConfig, question: str, steps: str, final_answer: str, response: str) -> list[dict]:
    if config.layout == "yesno":
        user = f"Question:\n{question}\n\nCorrect option:\n{final_answer}\n\nModel's answer:\n{response}"
        return [{"role": "system", "content": config.prompt}, {"role": "user", "content": user}]
    if config.layout == "consistency":
        user = f"Question: {question}\nStandard answer: {final_answer}\nModel's answer: {response}\nJudgement:"
        return [{"role": "system", "content": config.prompt}, {"role": "user", "content": user}]
    if config.layout == "official":
        text = f"Question: {question}\nGround Truth: {official_ground_truth(steps, final_answer)}\nLLM Response: {response}"
        return [{"role": "system", "content": config.prompt},
                {"role": "user", "content": [{"type": "text", "text": text}]}]
    user = (f"Question:\n{question}\n\nReference steps:\n{steps}\n\nReference final answer:\n{final_answer}\n\n"
            f"Assistant response:\n{response}")
    return [{"role": "system", "content": config.prompt}, {"role": "user", "content": user}]


def request_body(config: JudgeConfig, messages: list[dict], with_schema: bool) -> dict:
    """The chat-completions body, keys in the order the official script passes them."""
    body = {"model": config.model, "messages": messages}
    if with_schema:
        body["response_format"] = {"type": "json_schema", "json_schema": RESPONSE_SCHEMA}
    body.update(max_tokens=config.max_tokens, temperature=config.temperature)
    return body


def parse_scores(text: str) -> dict:
    """The 13 numbers from a judge reply (a JSON object, possibly inside ``` fences)."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").split("\n", 1)[-1]
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise JudgeError("malformed JSON from the judge: no {...} object in the reply")
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise JudgeError(f"malformed JSON from the judge: {e}") from None
    scores = {}
    for key in METRICS:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
            raise JudgeError(f"judge reply lacks a 0-10 number for {key!r}")
        scores[key] = float(value)
    overall = data.get(OVERALL)
    valid = isinstance(overall, (int, float)) and not isinstance(overall, bool) and 0 <= overall <= 10
    scores[OVERALL] = float(overall) if valid else sum(scores[m] for m in METRICS) / len(METRICS)
    return scores


def parse_verdict(text: str) -> dict:
    """A yes/no reply as {"correct": 1.0} or {"correct": 0.0}; the official HR-Bench reading (`yes_verdict`: a
    reply starting with "yes" is right) is applied to the raw reply separately.

    >>> parse_verdict("Yes."), parse_verdict("**no**")
    ({'correct': 1.0}, {'correct': 0.0})
    """
    words = "".join(ch if ch.isalpha() else " " for ch in text.lower()).split()
    if words and words[0] in ("yes", "no"):
        return {"correct": 1.0 if words[0] == "yes" else 0.0}
    raise JudgeError(f"the judge did not answer yes or no: {text.strip()[:60]!r}")


def parse_judgement(text: str) -> dict:
    """A consistency reply as {"correct": 1.0 or 0.0}, read as DeepEyes' scorer reads it (`judgement_verdict`);
    a reply with no "Judgement:" that is not exactly 1 or 0 is asked again, then counted as a failure.

    >>> parse_judgement("Judgement: 1"), parse_judgement("0")
    ({'correct': 1.0}, {'correct': 0.0})
    """
    if "Judgement:" not in text and text.strip() not in ("0", "1"):
        raise JudgeError(f"the judge gave no Judgement: {text.strip()[:60]!r}")
    return {"correct": 1.0 if judgement_verdict(text) else 0.0}


class Judge:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self._schema_ok = config.json_schema

    def _post(self, messages: list[dict]) -> str:
        c = self.config
        body = request_body(c, messages, self._schema_ok)
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(c.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(c.url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=c.timeout) as reply:
                payload = json.loads(reply.read().decode())
        except urllib.error.HTTPError as e:
            if e.code == 400 and self._schema_ok:  # a server without structured output: ask again without it
                self._schema_ok = False
                raise JudgeError("HTTP 400 with response_format; retrying without JSON schema") from None
            raise JudgeError(f"HTTP {e.code}", retry=e.code >= 500 or e.code in (408, 409, 429)) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise JudgeError(f"request failed: {getattr(e, 'reason', e)}") from None
        except json.JSONDecodeError:
            raise JudgeError("the server's reply is not JSON") from None
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise JudgeError("the reply has no choices[0].message.content") from None

    def judge_one(self, idx: str, question: str, steps: str, final_answer: str, response: str) -> Judgment:
        messages = judge_messages(self.config, question, steps, final_answer, response)
        error, reply = None, None
        for attempt in range(1, self.config.retries + 2):
            reply = None
            try:
                reply = self._post(messages)
                parse = {"yesno": parse_verdict, "consistency": parse_judgement}.get(self.config.layout, parse_scores)
                return Judgment(idx, parse(reply), attempts=attempt, reply=reply)
            except JudgeError as e:
                error = str(e)
                if not e.retry:
                    return Judgment(idx, None, error, attempt, reply)
            if attempt <= self.config.retries:
                delay = self.config.backoff * 2 ** (attempt - 1)
                time.sleep(delay * (0.5 + random.random() / 2))
        return Judgment(idx, None, error, self.config.retries + 1, reply)

    def judge_many(self, items: list[dict], on_done=None) -> list[Judgment]:
        """Judge rows (`idx, question, steps, final_answer, response`) `concurrency` at a time; `on_done` is
        called with each judgment as it finishes (so an interrupted run keeps what it has)."""
        def work(item):
            j = self.judge_one(item["idx"], item["question"], item["steps"], item["final_answer"], item["response"])
            if on_done is not None:
                on_done(j)
            return j

        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(pool.map(work, items))
