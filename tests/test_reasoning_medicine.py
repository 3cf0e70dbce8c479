"""Medicine from reasoning traces, and DPO on trace pairs with the length checks, on the shipped traces.

The rejected sides are real: the shipped DeepSeek-R1-Distill-Qwen-1.5B traces with a 3-bit KV cache on
MATH-500 (lighteval records), parsed with ``parse_completion``; 26 failed with a closed thinking, 13
never closed it. Two things are SIMULATED, and said so here:

* the verdicts: real ``Verdict`` records of the default taxonomy, judged over the thinking only
  (``scope='thinking'``, a ``first_wrong_section``, no ``first_wrong_step``), written by the test
  instead of an LLM judge; the never-closed traces get the rules' degenerate verdicts
  (``detect_degenerate``, as the judge runner writes them);
* the full-precision model's correct traces: no full-precision traces of the failed problems ship,
  so the correct shipped traces of OTHER problems are re-attached to the failed problems and
  labelled full precision (shortest with shortest). Their text does not solve those problems; what
  is checked here (the prompt, the turns' structure, which side may be chosen, the thinking and
  token lengths, TRL's refusal numbers) depends on the traces' real shape and length, not on their
  answers.
"""

import json
from collections import Counter

import pytest

from quantmedic.judge.answers import last_boxed
from quantmedic.judge.degenerate import detect_degenerate
from quantmedic.judge.step_format import ModelOutput, parse_completion, reasoning_messages, trace_text
from quantmedic.medicine.diagnoses import resolve
from quantmedic.medicine.lengths import load_tokenizer, pair_tokens
from quantmedic.medicine.pairs import build_pairs, reference_steps
from quantmedic.medicine.selection import select
from quantmedic.pipelines.data import shipped_path
from quantmedic.taxonomy.records import Attempt, PreferencePair, Problem, Quantization, Verdict
from quantmedic.taxonomy.jsonl import read_records, write_records

from quantmedic.pipelines.training.dpo import _trainer, load_pairs
from quantmedic.pipelines.training.dpo_config import DPOSettings, ThinkingDropped
from quantmedic.pipelines.training.trace_format import TEXT_FORMAT, training_set

from .support.tiny_model import tiny_model
from .test_cli_judge import cli

MODEL = "DeepSeek-R1-Distill-Qwen-1.5B"
BOS = "<|endoftext|>"  # the tiny model's bos_token_id
KV3 = Quantization(method="none", kv_cache_dtype="int3", tool="KVQuant (Quantized-Reasoning-Models)")
KINDS = (("execution", "computational_error"), ("method", "procedural_error"), ("reasoning", "logical_reasoning_error"))
R1_TEMPLATE = (  # DeepSeek-R1's way with assistant turns: everything up to </think> is cut from them
    "{{ bos_token }}{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}")


def shipped_traces() -> list[Attempt]:
    """The 100 shipped lighteval records as graded Attempts of the KV3 model."""
    attempts = []
    for record in json.loads(shipped_path("r1-kv3-math500-traces").read_text(encoding="utf-8")):
        prompt = record["full_prompt"]
        text = prompt.split("<｜User｜>", 1)[1].split("\n\nPlease reason step by step", 1)[0]
        gold = record["gold"][0]
        problem = Problem(text=text, reference_answer=last_boxed(gold), reference_solution=gold, source="math500")
        unclosed = "</think>" not in record["generated_text"]
        output = ModelOutput(record["generated_text"], prompt=prompt, finish_reason="length" if unclosed else "stop")
        attempt = parse_completion(problem, output, model=MODEL, quantization=KV3)
        attempts.append(attempt.model_copy(update={"correct": record["metrics"]["extractive_match"] == 1.0}))  # id kept
    return attempts


def thinking_verdict(attempt: Attempt, i: int) -> Verdict:
    category, subtype = KINDS[i % 3]
    return Verdict(attempt=attempt, status="ok", scope="thinking", first_wrong_section=len(attempt.thinking.sections) // 2,
                   first_wrong_step=None, category=category, subtype=subtype, judge_model="simulated-thinking-judge",
                   taxonomy="quantmedic-default@1")


def degenerate_verdict(attempt: Attempt) -> Verdict:
    d = detect_degenerate(attempt)
    return Verdict(attempt=attempt, status="ok", first_wrong_step=d.step, category="degenerate", subtype=d.kind,
                   explanation=d.detail, confidence=1.0, judge_model="rules", taxonomy="quantmedic-default@1")


def as_full_precision(donor: Attempt, problem: Problem, sample: int = 0) -> Attempt:
    """A correct shipped trace re-attached to ``problem`` and labelled the full-precision model's (simulated)."""
    return Attempt.model_validate({**donor.model_dump(), "id": "", "problem": problem.model_dump(), "quantization": None,
                                   "correct": True, "sampling": {**donor.sampling.model_dump(), "sample_index": sample}})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The files a reasoning study would have: the KV3 attempts, verdicts of its failures, the FP attempts.

    Of the 26 closed failures (by thinking length): #0..#23 get a full-precision trace (the shortest
    correct traces, shortest with shortest; #23's comes after a never-closed one wrongly graded correct,
    which must never be chosen); #24 only a full-precision answer WITHOUT thinking; #25 only a
    never-closed trace.
    """
    folder = tmp_path_factory.mktemp("reasoning-medicine")
    attempts = shipped_traces()
    failed = sorted((a for a in attempts if a.correct is False and not a.truncated_thinking), key=lambda a: a.thinking.chars)
    truncated = [a for a in attempts if a.truncated_thinking]
    donors = sorted((a for a in attempts if a.correct and a.thinking.closed), key=lambda a: a.thinking.chars)
    fp = [as_full_precision(d, f.problem) for d, f in zip(donors, failed[:23])]
    fp += [as_full_precision(truncated[0], failed[23].problem, 0), as_full_precision(donors[23], failed[23].problem, 1)]
    no_thinking = Attempt(problem=failed[24].problem, steps=tuple(reference_steps(failed[24].problem)), correct=True,
                          model=MODEL)  # a full-precision answer without thinking (a non-reasoning prompt)
    fp += [no_thinking, as_full_precision(truncated[1], failed[25].problem)]
    verdicts = [thinking_verdict(a, i) for i, a in enumerate(failed)] + [degenerate_verdict(a) for a in truncated]
    return {"failed": failed, "truncated": truncated, "fp_list": fp, "no_thinking": no_thinking,
            "kv3": write_records(folder / "kv3.jsonl", attempts), "fp": write_records(folder / "fp.jsonl", fp),
            "verdicts": write_records(folder / "verdicts.jsonl", verdicts), "verdict_list": verdicts}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def medicine(scene, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("trace-medicine") / "medicine"
    result = cli("medicine", "build", "-v", scene["verdicts"], "-a", scene["kv3"], "-a", scene["fp"], "--budget", "100",
                 "--exclude-category", "degenerate", "--tokenizer", tiny, "-o", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_thinking_verdicts_are_diagnoses_for_their_category_and_never_step_level(scene):
    diagnoses, skipped = resolve(scene["verdict_list"])
    assert len(diagnoses) == 39 and not skipped  # 26 judged over the thinking + 13 degenerate
    thinking = [d for d in diagnoses if d.verdict.scope == "thinking"]
    assert all(d.first_wrong_step is None and d.first_wrong_section is not None for d in thinking)
    drawn = select(thinking, 9, "stratified", seed=0)
    assert Counter(d.category for d in drawn.chosen) == {"execution": 3, "method": 3, "reasoning": 3}
    pairs, notes = build_pairs(thinking, scene["fp_list"], order=("full-precision", "resample"), step_level=True)
    assert notes == {"no step-level pair: judged over the thinking only": 26,
                     "chosen without thinking refused for a trace": 1,  # #24
                     "only truncated traces to choose (never chosen)": 1}  # #25
    assert {p.kind for p in pairs} == {"trace"} and len(pairs) == 24


def test_trace_pairs_have_the_reasoning_prompt_whole_traces_and_thinking_lengths(scene, medicine):
    out, result = medicine
    pairs = read_records(out / "pairs.jsonl", PreferencePair)
    report = json.loads((out / "medicine.json").read_text())
    failed = {a.id: a for a in scene["failed"]}
    fp = {a.id: a for a in scene["fp_list"]}
    assert len(pairs) == 24 and report["kinds"] == {"trace": 24} and report["chosen_sources"] == {"full-precision": 24}
    for pair in pairs:
        rejected, chosen = failed[pair.rejected_attempt_id], fp[pair.chosen_attempt_id]
        assert [m.model_dump() for m in pair.prompt] == reasoning_messages(rejected.problem)
        assert "Step 1:" not in pair.prompt[-1].content and "\\boxed{}" in pair.prompt[-1].content
        assert pair.rejected[0].content == trace_text(rejected) and pair.chosen[0].content == trace_text(chosen)
        for turn in (pair.chosen[0].content, pair.rejected[0].content):
            assert turn.startswith("<think>\n") and "\n</think>\n\n" in turn
        assert chosen.thinking.closed and not chosen.truncated_thinking  # a never-closed trace is never chosen
        assert (pair.rejected_thinking_chars, pair.chosen_thinking_chars) == (rejected.thinking.chars,
                                                                             chosen.thinking.chars)
        assert pair.rejected_thinking_tokens == rejected.thinking.tokens and pair.thinking_tokens_estimated
        assert pair.first_wrong_step is None and pair.first_wrong_section == len(rejected.thinking.sections) // 2
        assert pair.rejected_quantization == "kv-int3" and pair.chosen_model == MODEL
    # #24 had only an answer without thinking, #25 only a never-closed trace: both only the reference besides,
    # which has no thinking either: refused; the 13 degenerate failures are left out
    assert report["pair_notes"] == {"chosen without thinking refused for a trace": 2}
    assert report["skipped"] == {"category degenerate excluded": 13}
    assert "chosen without thinking refused for a trace: 2" in result.stderr
    from datasets import load_dataset

    row = load_dataset(str(out), split="train")[0]
    assert row["kind"] == "trace" and row["rejected_thinking_chars"] > 1000 and row["first_wrong_step"] is None


def test_the_report_gives_token_lengths_with_the_tokenizer_and_estimates_without(scene, medicine, tiny, tmp_path):
    out, result = medicine
    pairs = read_records(out / "pairs.jsonl", PreferencePair)
    lengths = json.loads((out / "medicine.json").read_text())["lengths"]
    tokenizer = load_tokenizer(str(tiny))
    counted = sorted(pair_tokens(tokenizer, p)[0] for p in pairs)
    assert lengths["unit"] == "tokens" and lengths["tokens"]["max"] == counted[-1] and counted[0] > 1024
    assert lengths["pairs_over_max_length"]["1024"] == 24 and lengths["thinking_dropped_by_template"] == 0
    assert f"longest {counted[-1]}" in result.stderr
    assert "### Lengths" in (out / "README.md").read_text()
    allowed = tmp_path / "allowed"
    estimated = cli("medicine", "build", "-v", scene["verdicts"], "-a", scene["fp"], "--budget", "100",
                    "--allow-chosen-without-thinking", "-o", allowed)
    assert estimated.returncode == 0, estimated.stderr
    report = json.loads((allowed / "medicine.json").read_text())
    assert report["lengths"]["unit"] == "characters" and "estimated" in estimated.stderr
    assert report["lengths"]["characters"]["max"] > 20000
    # allowed: #24 takes the answer without thinking, #25 the reference (never its never-closed trace);
    # the 13 never-closed failures are not excluded here: rejected as they are, cut-off thinking and all
    assert report["pair_notes"] == {"trace pair with a chosen side without thinking (allowed)": 2 + 13}
    assert report["pairs"] == 26 + 13 and report["categories"]["degenerate"] == 13
    by_attempt = {p.rejected_attempt_id: p for p in read_records(allowed / "pairs.jsonl", PreferencePair)}
    assert by_attempt[scene["failed"][24].id].chosen_attempt_id == scene["no_thinking"].id
    assert by_attempt[scene["failed"][25].id].chosen_source == "reference"
    assert not by_attempt[scene["truncated"][2].id].rejected[0].content.count("</think>")


def r1_like(tiny, folder):
    """The tiny model with DeepSeek-R1's habits: its chat template drops the thinking of assistant turns and
    starts with the BOS, which its tokenizer also adds to any text it tokenizes."""
    import shutil

    copy = folder / "tiny-r1-template"
    shutil.copytree(tiny, copy)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.update(chat_template=R1_TEMPLATE, bos_token=BOS)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    spec = json.loads((copy / "tokenizer.json").read_text())
    bos_id = next(t["id"] for t in spec["added_tokens"] if t["content"] == BOS)
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                                                                       {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                       {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}}}
    (copy / "tokenizer.json").write_text(json.dumps(spec))
    return copy


def test_train_dpo_refuses_long_trace_pairs_with_numbers_and_drop_long_trains_on_the_rest(medicine, tiny, tmp_path):
    out, _ = medicine
    pairs = read_records(out / "pairs.jsonl", PreferencePair)
    tokenizer = load_tokenizer(str(tiny))
    counted = sorted(pair_tokens(tokenizer, p)[0] for p in pairs)
    refused = cli("train", "dpo", tiny, "--data", out, "--out", tmp_path / "a", "--max-length", "1024",
                  "--max-steps", "1")
    assert refused.returncode == 2, refused.stderr
    assert (f"24 of 24 pairs are longer than max_length=1024 tokens (the longest has {counted[-1]}, 24 of them "
            "reasoning traces") in refused.stderr and "--drop-long" in refused.stderr
    limit = (counted[0] + counted[1]) // 2  # only the shortest pair fits
    dropped = cli("train", "dpo", tiny, "--data", out, "--out", tmp_path / "b", "--max-length", limit,
                  "--drop-long", "--max-steps", "1", "--batch-size", "1", "--learning-rate", "1e-3")
    assert dropped.returncode == 0, dropped.stderr
    record = json.loads((tmp_path / "b" / "quantmedic-train.json").read_text())
    assert record["pairs"] == 1 and record["pairs_dropped_too_long"] == 23 and record["steps"] == 1
    assert f"left out 23 pairs longer than {limit} tokens" in dropped.stderr
    assert (tmp_path / "b" / "adapter_model.safetensors").is_file()


def test_a_template_that_drops_the_thinking_is_caught_at_build_and_trained_in_the_text_format(scene, medicine, tiny,
                                                                                               tmp_path):
    out, _ = medicine
    r1 = r1_like(tiny, tmp_path)
    built = cli("medicine", "build", "-v", scene["verdicts"], "-a", scene["fp"], "--budget", "100",
                "--exclude-category", "degenerate", "--tokenizer", r1, "-o", tmp_path / "m")
    assert built.returncode == 0, built.stderr
    assert json.loads((tmp_path / "m" / "medicine.json").read_text())["lengths"]["thinking_dropped_by_template"] == 24
    assert "drops the thinking of 24 trace pairs" in built.stderr
    trained = cli("train", "dpo", r1, "--data", out, "--out", tmp_path / "a", "--max-length", "100000",
                  "--max-steps", "1", "--batch-size", "1")
    assert trained.returncode == 0, trained.stderr
    record = json.loads((tmp_path / "a" / "quantmedic-train.json").read_text())
    assert record["format"] == TEXT_FORMAT and record["steps"] == 1 and record["pairs"] == 24
    assert f"pairs trained in TRL's {TEXT_FORMAT}" in trained.stderr
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    missing = cli("medicine", "build", "-v", scene["verdicts"], "-a", scene["fp"], "--tokenizer", tmp_path / "nope",
                  "-o", tmp_path / "n")
    assert missing.returncode == 2 and "--tokenizer" in missing.stderr and "Traceback" not in missing.stderr


def test_the_text_format_rows_hold_every_thinking_token_after_one_bos_and_the_length_checks_count_them(
        medicine, tiny, tmp_path):
    from transformers import AutoTokenizer

    out, _ = medicine
    r1 = r1_like(tiny, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(r1))
    dataset = load_pairs(out)
    pairs, data_format = training_set(dataset, tokenizer)
    assert data_format == TEXT_FORMAT
    trainer, _ = _trainer(r1, "full", pairs, tokenizer, DPOSettings(max_steps=1, batch_size=1), tmp_path / "c", "cpu")
    bos = tokenizer.bos_token_id
    lengths = []
    for source, row in zip(dataset, trainer.train_dataset):
        prompt = tokenizer.apply_chat_template(source["prompt"], tokenize=False, add_generation_prompt=True)
        assert prompt.startswith(BOS) and prompt.endswith("<|im_start|>assistant\n<think>\n")
        assert row["prompt_ids"][0] == bos and row["prompt_ids"].count(bos) == 1  # exactly one BOS
        for side in ("chosen", "rejected"):
            trace = source[side][0]["content"]
            expected = prompt + trace.removeprefix("<think>\n") + "<|im_end|>"  # the template's end of turn (= EOS)
            ids = row["prompt_ids"] + row[f"{side}_ids"]
            assert tokenizer.decode(ids) == expected  # every token of the thinking, none twice
            assert len(ids) == len(tokenizer(expected, add_special_tokens=False)["input_ids"])
        lengths.append(len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])))
    refused = cli("train", "dpo", r1, "--data", out, "--out", tmp_path / "b", "--max-length", "1024",
                  "--max-steps", "1")
    assert refused.returncode == 2, refused.stderr
    assert (f"24 of 24 pairs are longer than max_length=1024 tokens (the longest has {max(lengths)}, 24 of them "
            "reasoning traces") in refused.stderr


def test_an_answer_of_several_turns_cannot_be_put_in_the_text_format(tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(r1_like(tiny, tmp_path)))
    turn = {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [turn, turn],
                               "rejected": [turn]}])
    with pytest.raises(ThinkingDropped, match="not one assistant turn"):
        training_set(rows, tokenizer)
