"""A real HTTP server on 127.0.0.1 that answers like an OpenAI-compatible judge (test helper).

What it answers is scripted by a keyword in the judged text: `MALFORMED-ONCE`, `HTTP500-ONCE`, `SLOW-ONCE`
(answers after the client's timeout), `ALWAYS-BAD` (never valid), `NO-SCHEMA` (refuses response_format),
`NO-OVERALL` (scores without an Overall Score), `SCALE-100` (an Overall Score out of 100), `FENCED` (the JSON
inside ``` fences, which Python's literal_eval cannot read); otherwise every metric gets the number after
`SCORE=` (default 7). Asked the yes/no question, it says yes unless the text holds `JUDGE-NO`. Every request is recorded with its raw body bytes.
"""

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from omnidrive_r1.eval.drivelmm import METRICS, OVERALL


def scores(value, overall=None):
    return {**{m: value for m in METRICS}, OVERALL: value if overall is None else overall}


def _text(body) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


class JudgeServer:
    def __init__(self, timeout_delay=1.5):
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
                if "yes or no" in str(body["messages"][0]["content"]):  # the yes/no layout
                    return self._reply("No." if "JUDGE-NO" in user else "Yes.")
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
