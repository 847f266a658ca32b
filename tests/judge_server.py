"""A real HTTP server on 127.0.0.1 that answers like an OpenAI-compatible judge (test helper).

What it answers is scripted by a keyword in the judged text: `MALFORMED-ONCE`, `HTTP500-ONCE`, `SLOW-ONCE`
(answers after the client's timeout), `ALWAYS-BAD` (never valid), `NO-SCHEMA` (refuses response_format),
`NO-OVERALL` (scores without an Overall Score), `SCALE-100` (an Overall Score out of 100), `FENCED` (the JSON
inside ``` fences, which Python's literal_eval cannot read); otherwise every metric gets the number after
`SCORE=` (default 7). Asked the yes/no question it says yes, and the consistency question `Judgement: 1`, unless
the text holds `JUDGE-NO`; with `verdicts="content"` it decides both by a rule a test can compute by hand
(`content_verdict`). Every request is recorded with its raw body bytes.
"""

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from omnidrive_r1.eval.drivelmm_scoring import METRICS, OVERALL


def scores(value, overall=None):
    return {**{m: value for m in METRICS}, OVERALL: value if overall is None else overall}


def _text(body) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def content_verdict(reference: str, answer: str) -> bool:
    """The stand-in judge of `verdicts="content"`: the reference is "X. option text" or a bare letter "X"; the
    answer (tags and thinking removed) is right when it opens with the letter X as a word (case-sensitive),
    says "answer is X", or holds the option's text (any case)."""
    answer = re.sub(r"<think>.*?</think>", " ", answer, flags=re.S).replace("<answer>", " ").replace("</answer>", " ")
    letter, _, text = reference.strip().partition(". ")
    return bool(re.match(rf"^\W*{re.escape(letter)}\b", answer.strip()) or f"answer is {letter}" in answer
                or (text and text.lower() in answer.lower()))


def _between(text: str, start: str, end: str | None) -> str:
    tail = text.split(start, 1)[1]
    return tail.split(end, 1)[0] if end else tail


class JudgeServer:
    def __init__(self, timeout_delay=1.5, verdicts="always"):
        self.requests, self.seen = [], Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                user = _text(body)
                with server.lock:
                    server.requests.append({"body": body, "raw": raw, "auth": self.headers.get("Authorization"),
                                            "path": self.path})
                    server.seen[user] += 1
                    n = server.seen[user]
                if "SLOW-ONCE" in user and n == 1:
                    time.sleep(timeout_delay)
                if "HTTP500-ONCE" in user and n == 1:
                    return self._send(500, {"error": "boom"})
                if "NO-SCHEMA" in user and "response_format" in body:
                    return self._send(400, {"error": "response_format not supported"})
                if "ALWAYS-BAD" in user or ("MALFORMED-ONCE" in user and n == 1):
                    return self._reply("{not json")
                system = str(body["messages"][0]["content"])
                if "yes or no" in system:  # the yes/no layout
                    right = "JUDGE-NO" not in user
                    if verdicts == "content":
                        right = content_verdict(_between(user, "Correct option:\n", "\n\nModel's answer:"),
                                                _between(user, "Model's answer:\n", None))
                    return self._reply("Yes." if right else "No.")
                if "Judgement: 1" in system:  # the consistency layout
                    right = "JUDGE-NO" not in user
                    if verdicts == "content":
                        right = content_verdict(_between(user, "Standard answer: ", "\nModel's answer: "),
                                                _between(user, "\nModel's answer: ", "\nJudgement:"))
                    return self._reply(f"Judgement: {int(right)}")
                value = float(user.split("SCORE=")[1].split()[0]) if "SCORE=" in user else 7.0
                reply = scores(value, overall=value * 10 if "SCALE-100" in user else None)
                if "NO-OVERALL" in user:
                    del reply[OVERALL]
                text = json.dumps(reply)
                return self._reply(f"```json\n{text}\n```" if "FENCED" in user else text)

            def _reply(self, content):
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
