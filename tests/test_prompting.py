"""The step prompt through a real chat template, and completions parsed into Attempts."""

from __future__ import annotations

import copy

import pytest

from quantmedic.judge.step_format import (EMPTY_OUTPUT, STEP_INSTRUCTION, ModelOutput, parse_completion,
                                            render_prompt, step_messages, user_message)
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Sampling

from .support.tiny_model import tiny_model

PROBLEM = Problem(text="Tom has 3 apples and buys 4 more. How many apples does he have?", reference_answer="7",
                  source="toy")
GPTQ = Quantization(method="gptq", bits=4, group_size=128, tool="llm-compressor 0.14.0.1", format="compressed-tensors")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model())


def test_user_message_asks_for_numbered_steps_and_a_box():
    text = user_message(PROBLEM)
    assert text.startswith(STEP_INSTRUCTION)
    assert '"Step 1:"' in text and "\\boxed{" in text
    assert text.endswith(f"Problem: {PROBLEM.text}")


def test_multiple_choice_options_are_lettered():
    problem = Problem(text="Which is prime?", choices=("4", "6", "7"))
    text = user_message(problem)
    assert "A. 4\nB. 6\nC. 7" in text
    assert "letter" in text.splitlines()[-1]


def test_prompt_goes_through_the_models_own_chat_template(tokenizer):
    prompt = render_prompt(tokenizer, PROBLEM)
    assert prompt.startswith("<|im_start|>user\n" + STEP_INSTRUCTION)
    assert prompt.endswith(f"Problem: {PROBLEM.text}<|im_end|>\n<|im_start|>assistant\n")
    with_system = render_prompt(tokenizer, PROBLEM, system="You are careful.")
    assert with_system.startswith("<|im_start|>system\nYou are careful.<|im_end|>\n<|im_start|>user\n")
    assert [m["role"] for m in step_messages(PROBLEM, "s")] == ["system", "user"]


def test_a_tokenizer_without_chat_template_is_refused(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(bare, PROBLEM)


def test_completion_becomes_an_attempt_with_steps_answer_and_provenance():
    text = "Step 1: Tom starts with 3 apples.\n\nStep 2: He buys 4, so 3 + 4 = 7.\n\nStep 3: The answer is \\boxed{7}."
    sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=256, seed=11, sample_index=2, extra={"n": 4})
    attempt = parse_completion(PROBLEM, ModelOutput(text, "stop", 31), model="tiny-gptq", quantization=GPTQ,
                               sampling=sampling)
    assert attempt.steps == ("Step 1: Tom starts with 3 apples.", "Step 2: He buys 4, so 3 + 4 = 7.",
                             "Step 3: The answer is \\boxed{7}.")
    assert (attempt.final_answer, attempt.finish_reason, attempt.completion_tokens) == ("7", "stop", 31)
    assert (attempt.model, attempt.quantization, attempt.sampling) == ("tiny-gptq", GPTQ, sampling)
    assert Attempt.model_validate_json(attempt.model_dump_json()) == attempt


def test_the_attempt_id_tells_quantized_from_full_precision_and_samples_apart():
    completion = ModelOutput("Step 1: 3 + 4 = 7\nStep 2: \\boxed{7}", "stop", 12)
    full = parse_completion(PROBLEM, completion, model="tiny")
    quantized = parse_completion(PROBLEM, completion, model="tiny", quantization=GPTQ)
    second = parse_completion(PROBLEM, completion, model="tiny", sampling=Sampling(sample_index=1))
    assert len({full.id, quantized.id, second.id}) == 3


def test_unmarked_text_falls_back_to_paragraphs_and_a_cut_off_box_has_no_answer():
    attempt = parse_completion(PROBLEM, ModelOutput("3 + 4 = 7\n\nso \\boxed{7", "length", 64), model="m")
    assert attempt.steps == ("3 + 4 = 7", "so \\boxed{7")
    assert attempt.final_answer is None and attempt.finish_reason == "length"


def test_a_blank_completion_is_kept_as_one_placeholder_step():
    attempt = parse_completion(PROBLEM, ModelOutput("  \n\n ", "stop", 1), model="m")
    assert attempt.steps == (EMPTY_OUTPUT,) and attempt.final_answer is None
