"""Generating with a reasoning model: the ``reasoning`` preset, the reasoning prompt through a chat template
that opens ``<think>``, exact token counts, and a real vLLM server's separate reasoning (slow)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from quantmedic.judge.degenerate import detect_degenerate
from quantmedic.judge.schema import judge_output_schema
from quantmedic.judge.step_format import REASONING_INSTRUCTION, STEP_INSTRUCTION, ModelOutput, parse_completion
from quantmedic.pipelines.cli.models import commands
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.evaluation.grading import THINKING_NEVER_ENDED
from quantmedic.pipelines.models.engines import Request, TransformersEngine, render
from quantmedic.pipelines.models.generation import count_tokens, generate, pending_requests
from quantmedic.pipelines.models.generation_config import PRESETS, GenerationSettings
from quantmedic.pipelines.models.loading import load_for_generation
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import NO_SOLUTION, Attempt

from .conftest import REPO, unavailable
from .support.tiny_model import tiny_model

R1_TEMPLATE = (  # DeepSeek-R1's shape: the assistant's turn opens the thinking
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\n' }}{% endif %}"
)


def reasoning_copy(folder: Path, alias: bool = False) -> Path:
    """The tiny model with an R1-shaped chat template. ``alias``: ``<think>`` and ``</think>`` become tokens
    (vLLM's deepseek_r1 parser needs them), ``</think>`` a slightly preferred twin of "The", so the random
    model closes its thinking where it would have begun "The answer is"; it never writes ``<think>``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = R1_TEMPLATE
    if not alias:
        shutil.copytree(source, folder)
        tokenizer.save_pretrained(folder)
        return folder
    import torch

    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer.add_tokens(["<think>", "</think>"])
    model.resize_token_embeddings(len(tokenizer))
    the, start = tokenizer.convert_tokens_to_ids(["The", "<|im_start|>"])
    think, end = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    with torch.no_grad():
        embeddings, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        sample = tokenizer(R1_TEMPLATE + tiny_text(), return_tensors="pt").input_ids[:, :512]
        never = int(model(sample).logits[0, :, : think].max(dim=0).values.argmin())  # the least likely token
        embeddings[end], head[end] = embeddings[the], head[the] * 1.05
        embeddings[think], head[think] = embeddings[start], head[never]  # never written by the model
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_text() -> str:
    return " ".join(p.text for p in load_benchmark("gsm8k", limit=8))


@pytest.fixture(scope="module")
def r1_like(tmp_path_factory) -> Path:
    return reasoning_copy(tmp_path_factory.mktemp("r1") / "tiny-r1")


@pytest.fixture(scope="module")
def aime():
    return load_benchmark("aime120", limit=2)


# --- the preset ---

def test_the_reasoning_preset_is_the_reference_protocol_and_explicit_settings_win(aime):
    s = GenerationSettings(preset="reasoning")
    assert (s.temperature, s.top_p, s.max_tokens, s.n, s.seed, s.prompt, s.sample_seeds) == \
        (0.6, 0.95, 32768, 3, 42, "reasoning", "consecutive")
    assert [r.seed for r in pending_requests(aime, {}, s.sampling())] == [42, 43, 44, 42, 43, 44]
    mine = GenerationSettings(preset="reasoning", max_tokens=4096, temperature=0.0, seed=7)
    assert (mine.max_tokens, mine.temperature, mine.seed, mine.top_p, mine.n) == (4096, 0.0, 7, 0.95, 3)
    assert mine.sampling().preset == "reasoning" and mine.sampling().max_tokens == 4096
    plain = GenerationSettings()
    assert (plain.preset, plain.prompt, plain.temperature, plain.n, plain.sample_seeds) == (None, "steps", 0.0, 1,
                                                                                             "derived")
    assert set(PRESETS["reasoning"]) <= set(GenerationSettings.model_fields)
    with pytest.raises(ValidationError):
        GenerationSettings(preset="fast")
    # a study's generation section is the same model: the preset survives a dump and a reload
    assert GenerationSettings.model_validate(s.model_dump(mode="json")) == s


# --- the tiny model with a template that opens <think> ---

def test_the_reasoning_prompt_has_no_step_format_and_the_engine_passes_it(r1_like, aime):
    loaded = load_for_generation(r1_like, device="cpu")
    prompt = render(loaded.tokenizer, aime[0], None, "reasoning")
    assert prompt.endswith("<｜Assistant｜><think>\n") and REASONING_INSTRUCTION in prompt
    assert STEP_INSTRUCTION not in prompt and "Step 1" not in prompt
    assert STEP_INSTRUCTION in render(loaded.tokenizer, aime[0], None, "steps")
    engine = TransformersEngine(loaded, prompt="reasoning")
    [(request, output)] = list(engine.run([Request(aime[0], 0, 42)], GenerationSettings(preset="reasoning",
                                                                                         max_tokens=8)))
    assert output.prompt == prompt and output.finish_reason == "length" and output.completion_tokens == 8


def test_generate_with_the_reasoning_preset_on_the_tiny_model(r1_like, tmp_path):
    app = typer.Typer()
    commands.register(app)
    out = tmp_path / "attempts.jsonl"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["generate", str(r1_like), "--benchmark", "aime120", "--limit", "2", "--out",
                                      str(out), "--backend", "transformers", "--preset", "reasoning",
                                      "--max-tokens", "24"])
    seconds = time.monotonic() - started
    assert result.exit_code == 0, result.output
    attempts = read_records(out, Attempt)
    assert len(attempts) == 6 and seconds < 120
    assert [(a.sampling.sample_index, a.sampling.seed) for a in attempts] == [(0, 42), (1, 43), (2, 44)] * 2
    tokenizer = load_for_generation(r1_like, device="cpu").tokenizer
    for a in attempts:
        s = a.sampling
        assert (s.temperature, s.top_p, s.max_tokens) == (0.6, 0.95, 24)  # the explicit --max-tokens wins
        assert {k: s.extra[k] for k in ("preset", "prompt", "sample_seeds")} == {
            "preset": "reasoning", "prompt": "reasoning", "sample_seeds": "consecutive"}
        # the random model never closes the thinking its prompt opened (it is cut at the limit, or ends its
        # turn inside it): no solution, a degenerate output
        assert a.thinking is not None and not a.thinking.closed and a.thinking.markers == "<think>"
        assert a.steps == (NO_SOLUTION,) and a.final_answer is None
        assert a.completion_tokens == 24 if a.finish_reason == "length" else a.completion_tokens < 24
        assert detect_degenerate(a).kind == "truncated"
        assert a.correct is False and a.grading == THINKING_NEVER_ENDED  # never graded from the thinking
        assert not a.thinking.tokens_estimated and a.solution_tokens == 0
        assert a.thinking.tokens == len(tokenizer.encode(a.thinking.text, add_special_tokens=False))
    assert len({a.thinking.text for a in attempts}) > 1  # three seeds, different samples
    assert any(a.finish_reason == "length" for a in attempts)


def test_options_given_explicitly_win_over_the_preset_even_at_their_defaults(r1_like, tmp_path):
    app = typer.Typer()
    commands.register(app)
    out = tmp_path / "greedy.jsonl"
    result = CliRunner().invoke(app, ["generate", str(r1_like), "--benchmark", "aime25", "--limit", "1", "--out",
                                      str(out), "--backend", "transformers", "--preset", "reasoning", "--n", "1",
                                      "--temperature", "0", "--max-tokens", "4", "--prompt", "steps", "--no-grade"])
    assert result.exit_code == 0, result.output
    [attempt] = read_records(out, Attempt)
    s = attempt.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.seed, s.extra["n"]) == (0.0, 0.95, 4, 42, 1)
    assert s.extra["preset"] == "reasoning" and "prompt" not in s.extra  # steps: the default prompt, not recorded


def test_a_closed_thinking_and_its_solution_are_counted_by_the_tokenizer(r1_like, aime):
    tokenizer = load_for_generation(r1_like, device="cpu").tokenizer
    output = ModelOutput("6 times 7 is 42, check: 42 / 7 = 6.\n</think>\n\nSo the answer is \\boxed{42}.", "stop", 40,
                         prompt="<｜Assistant｜><think>\n")
    attempt = count_tokens(parse_completion(aime[0], output, model="m"), output, tokenizer)
    assert attempt.thinking.closed and attempt.final_answer == "42" and not attempt.thinking.tokens_estimated
    assert attempt.thinking.tokens == len(tokenizer.encode(attempt.thinking.text, add_special_tokens=False))
    assert attempt.solution_tokens == len(tokenizer.encode("So the answer is \\boxed{42}.", add_special_tokens=False))
    estimated = parse_completion(aime[0], output, model="m")  # no tokenizer: the length stays an estimate
    assert estimated.thinking.tokens_estimated and estimated.solution_tokens is None
    assert count_tokens(estimated, output, None) == estimated


# --- the reasoning taxonomy through the judge's schema ---

def test_the_judge_schema_is_built_from_the_reasoning_taxonomy():
    from quantmedic.taxonomy.model import load_taxonomy

    taxonomy = load_taxonomy("reasoning")
    text = str(judge_output_schema(taxonomy))
    for ident in (*taxonomy.category_ids, *taxonomy.subtype_ids):
        assert f"'{ident}'" in text
    assert "'conceptual'" not in text  # the default taxonomy's categories are not in it


# --- a real vLLM server with the deepseek_r1 reasoning parser ---

@pytest.mark.slow
def test_openai_backend_reads_the_reasoning_of_a_real_vllm_server(tmp_path):
    """``vllm serve --reasoning-parser deepseek_r1``: the message's reasoning (vLLM 0.32 names it ``reasoning``;
    older versions ``reasoning_content``) is everything before ``</think>``, the content what follows."""
    from .support.vllm_server import SERVED_MODEL_NAME, vllm_server

    python = Path(os.environ.get("QUANTMEDIC_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    if not python.exists():
        unavailable(f"no vLLM environment at {python} (scripts/setup-test-env.sh makes it)")
    model = reasoning_copy(tmp_path / "tiny-r1-tokens", alias=True)
    problems = load_benchmark("aime25", limit=2)
    out = tmp_path / "served.jsonl"
    parser = ["--reasoning-parser", "deepseek_r1", "--max-model-len", "1024"]
    with vllm_server(str(python), str(model), extra_args=parser) as base_url:
        summary = generate(str(model), problems, out_path=out, backend="openai", base_url=base_url,
                           served_model=SERVED_MODEL_NAME, preset="reasoning", max_tokens=48, concurrency=3)
    attempts = read_records(out, Attempt)
    assert summary.written == len(attempts) == 6
    assert {a.sampling.seed for a in attempts} == {42, 43, 44} and all(a.sampling.extra["backend"] == "openai"
                                                                       for a in attempts)
    thought = [a for a in attempts if a.thinking is not None]  # an empty reasoning (</think> first) is no thinking
    assert len(thought) >= 4, [(a.thinking, a.steps) for a in attempts]
    for a in thought:
        assert a.thinking.markers == "reasoning_content" and a.thinking.text.strip()
        assert "</think>" not in a.thinking.text and "<think>" not in a.thinking.text
        assert a.thinking.tokens_estimated  # no tokenizer at hand behind a server
    closed = [a for a in thought if a.thinking.closed]
    assert closed, [a.thinking.text for a in thought]  # </think> (the twin of "The") ended some thinking
    assert all(a.steps != (NO_SOLUTION,) for a in closed)
