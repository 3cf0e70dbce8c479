"""A FAULT-INJECTING OpenAI-compatible chat server, for tests and benchmarks only.

It answers ``POST /v1/chat/completions`` with a valid judge answer computed from the prompt
(first wrong step = min(1, last step), an execution/computational error, confidence 0.8; a model
named ``say:STEP:CONFIDENCE[:CATEGORY/SUBTYPE]`` answers that step, clamped to the last, with that
confidence and error kind, and ``say:-1:C`` says no step is wrong; in a window of a reasoning
trace's sections it names section STEP in the window that holds it and -1 in the others), after ``latency``
seconds and with at most ``slots`` requests served at once. Faults that real servers will not
produce on demand are scripted through ``POST /admin/faults`` (a JSON list, one entry consumed per
request; an empty script means "answer normally"):

* ``"429"`` / ``"429:SECONDS"``: Too Many Requests, with ``Retry-After: SECONDS`` when given;
* ``"500"``, ``"502"``, ``"503"``, ``"400"``, ``"401"``: that status with an OpenAI-style error body;
* ``"hang"``: never answer in time (sleeps 3600 s, so the client's timeout fires);
* ``"malformed"``: an answer whose content is not JSON;
* ``"truncated"``: half the JSON, with ``finish_reason: "length"``;
* ``"bad_subtype"``: valid JSON whose subtype belongs to another category;
* ``"out_of_range"``: a step index past the last step.

``--reject-json-schema`` makes it refuse ``response_format: json_schema`` the way llama.cpp's
server does (HTTP 500), accepting only ``json_object``. ``GET /admin/requests`` lists what each
request asked (model, response_format type, arrival time, fault served).
Run: ``python tests/support/fault_server.py --port P [--latency 0.2] [--slots 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

from aiohttp import web

STEPS = re.compile(r"numbered 0 to (\d+)")
WINDOW = re.compile(r"Sections to judge in this window: (\d+) to (\d+)")


def answer_for(prompt: str, kind: str = "ok", model: str = "") -> dict:
    match = STEPS.search(prompt)
    last = int(match.group(1)) if match else 0
    step, confidence = 1, 0.8
    category, subtype = "execution", "computational_error"
    if model.startswith("say:"):  # a judge with a fixed opinion: "say:STEP:CONFIDENCE[:CATEGORY/SUBTYPE]"
        _, said, conf, *kind_of_error = model.split(":")
        step, confidence = int(said), float(conf)
        if kind_of_error:
            category, subtype = kind_of_error[0].split("/")
    window = WINDOW.search(prompt)
    if window:  # a window of a thinking: the judge names its section STEP in the window that holds it, else -1
        first, last = map(int, window.groups())
        section = step if first <= step <= last else -1
        answer = {"explanation": "This section is wrong.", "first_wrong_section": section,
                  "category": category, "subtype": subtype, "confidence": confidence}
        if section == -1:
            answer.update(explanation="No section of this window is wrong.", category="none", subtype="none")
        if kind == "bad_subtype":
            answer["subtype"] = "logical_reasoning_error"
        if kind == "out_of_range":
            answer["first_wrong_section"] = last + 5
        return answer
    step = min(step, last)
    answer = {"explanation": "The subtraction in this step is wrong.", "first_wrong_step": step,
              "category": category, "subtype": subtype, "confidence": confidence}
    if step == -1:
        answer.update(explanation="Every step is right.", category="none", subtype="none")
    if kind == "bad_subtype":
        answer["subtype"] = "logical_reasoning_error"
    if kind == "out_of_range":
        answer["first_wrong_step"] = last + 5
    return answer


def make_app(latency: float = 0.0, slots: int = 64, reject_json_schema: bool = False) -> web.Application:
    faults: list[str] = []
    log: list[dict] = []
    gate = asyncio.Semaphore(slots)

    async def set_faults(request: web.Request) -> web.Response:
        faults[:] = await request.json()
        log.clear()
        return web.json_response({"faults": len(faults)})

    async def get_requests(_request: web.Request) -> web.Response:
        return web.json_response(log)

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        fmt = (body.get("response_format") or {}).get("type")
        fault = faults.pop(0) if faults else "ok"
        log.append({"model": body.get("model"), "format": fmt, "time": time.time(), "fault": fault,
                    "messages": len(body.get("messages", [])), "seed": body.get("seed"),
                    "authorization": request.headers.get("Authorization")})
        if reject_json_schema and fmt == "json_schema":
            return web.json_response({"error": {"message": "Input should be 'text' or 'json_object'",
                                                "type": "invalid_request_error"}}, status=500)
        async with gate:
            await asyncio.sleep(latency)
            code = fault.split(":")[0]
            if code.isdigit():
                headers = {"Retry-After": fault.split(":")[1]} if ":" in fault else {}
                return web.json_response({"error": {"message": f"injected {code}", "type": "fault"}},
                                         status=int(code), headers=headers)
            if fault == "hang":
                await asyncio.sleep(3600)
            prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
            content = json.dumps(answer_for(prompt, fault, str(body.get("model", ""))))
            finish = "stop"
            if fault == "malformed":
                content = "I think step 1 is wrong because"
            elif fault == "truncated":
                content, finish = content[: len(content) // 2], "length"
            return web.json_response({
                "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/v1/models", models),
                    web.post("/admin/faults", set_faults), web.get("/admin/requests", get_requests)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--reject-json-schema", action="store_true")
    args = parser.parse_args()
    web.run_app(make_app(args.latency, args.slots, args.reject_json_schema), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
