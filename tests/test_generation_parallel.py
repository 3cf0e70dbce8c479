"""Generation over many GPUs and servers: vLLM's tensor, pipeline and data parallel sizes and its executor backend
(validated once, given to vLLM only when not its defaults, recorded in every attempt and in a study's key only when
set), a clear one-line refusal when they need more GPUs than are visible, and one model served by several
OpenAI-compatible servers sharing the requests (two real local servers).

No GPU here: vLLM's engine classes are replaced by spies that record what they are given (the ``vllm`` module is
not installed in this environment); everything from the settings to the attempts file runs for real.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from quantmedic.pipelines.cli.models import commands
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.models import generation
from quantmedic.pipelines.models.engines import LeastInFlight
from quantmedic.pipelines.models.generation import check_gpus, generate, vllm_options
from quantmedic.pipelines.models.generation_config import PARALLEL, GenerationSettings
from quantmedic.pipelines.study import stages
from quantmedic.pipelines.study.config import StudyConfig, load_study
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt

from .support.servers import fault_server
from .support.tiny_model import tiny_model

BASE = {"name": "s", "model": {"path": "m"}, "benchmark": {"name": "gsm8k"}, "quantizations": [{"method": "gptq"}]}


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def problems():
    return load_benchmark("gsm8k", limit=3)


def _app() -> typer.Typer:
    app = typer.Typer()
    commands.register(app)
    return app


# --- the settings ---

def test_the_sizes_are_whole_numbers_from_one_and_the_executor_mp_or_ray():
    for bad in ({"tensor_parallel_size": 0}, {"pipeline_parallel_size": -1}, {"data_parallel_size": 2.0},
                {"tensor_parallel_size": "2"}, {"data_parallel_size": True}, {"distributed_executor_backend": "slurm"}):
        with pytest.raises(ValidationError) as error:
            GenerationSettings(**bad)
        assert error.value.errors()[0]["loc"] == (next(iter(bad)),)
    ok = GenerationSettings(tensor_parallel_size=4, pipeline_parallel_size=2, data_parallel_size=2,
                            distributed_executor_backend="ray")
    assert ok.world_size == 16 and list(ok.parallelism()) == list(PARALLEL)
    assert GenerationSettings().parallelism() == {} and GenerationSettings().world_size == 1
    for backend in ("transformers", "openai"):  # a server's parallelism is the server's
        with pytest.raises(ValidationError, match="--tensor-parallel-size need the vllm backend"):
            GenerationSettings(backend=backend, tensor_parallel_size=2)


def test_one_base_url_stays_a_string_and_several_are_a_tuple():
    assert GenerationSettings(base_url=["http://a/v1"]).base_url == "http://a/v1"
    assert GenerationSettings(base_url=[]).base_url is None and GenerationSettings().endpoints == ()
    many = GenerationSettings(base_url=["http://a/v1", "http://b/v1", "http://a/v1"])
    assert many.base_url == many.endpoints == ("http://a/v1", "http://b/v1")
    assert many.model_dump(mode="json")["base_url"] == ["http://a/v1", "http://b/v1"]


def test_vllm_is_given_only_the_parallelism_that_is_not_its_default():
    assert vllm_options(GenerationSettings()) == {"kv_cache_dtype": "auto"}  # a CPU run is given nothing new
    s = GenerationSettings(tensor_parallel_size=2, pipeline_parallel_size=3, distributed_executor_backend="mp")
    assert vllm_options(s, "fp8", {"max_model_len": 1024}) == {
        "kv_cache_dtype": "fp8", "tensor_parallel_size": 2, "pipeline_parallel_size": 3,
        "distributed_executor_backend": "mp", "max_model_len": 1024}
    ray = vllm_options(GenerationSettings(data_parallel_size=2, distributed_executor_backend="ray"))
    assert ray == {"kv_cache_dtype": "auto", "data_parallel_size": 2, "distributed_executor_backend": "ray",
                   "data_parallel_backend": "ray"}  # Ray places the replicas too
    assert vllm_options(s, None, {"tensor_parallel_size": 8})["tensor_parallel_size"] == 8  # engine options win


def test_sizes_needing_more_gpus_than_visible_are_refused_unless_ray_places_them():
    four = GenerationSettings(tensor_parallel_size=2, data_parallel_size=2)
    with pytest.raises(InputError, match="needs 4 GPUs .* 2 x 1 x 2.* 1 are visible") as refused:
        check_gpus(four, 1)
    assert refused.value.is_usage and str(refused.value).startswith("--tensor-parallel-size 2 --data-parallel-size 2")
    check_gpus(four, 4)
    check_gpus(four, None)  # no GPU: vLLM's CPU build decides
    check_gpus(four.model_copy(update={"distributed_executor_backend": "ray"}), 1)  # over the Ray cluster's nodes
    check_gpus(GenerationSettings(), 0)


def test_a_study_config_takes_the_parallelism_in_its_generation_section(tmp_path):
    config = StudyConfig.model_validate({**BASE, "generation": {
        "backend": "vllm", "tensor_parallel_size": 4, "pipeline_parallel_size": 2, "data_parallel_size": 2,
        "distributed_executor_backend": "ray", "base_url": None}})
    assert config.generation.parallelism() == {"tensor_parallel_size": 4, "pipeline_parallel_size": 2,
                                               "data_parallel_size": 2, "distributed_executor_backend": "ray"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**BASE,
                                    "generation": {"tensor_parallel_size": 0}}))
    with pytest.raises(InputError, match="greater than or equal to 1") as bad:
        load_study(path)
    assert "generation.tensor_parallel_size" in str(bad.value)
    with pytest.raises(InputError, match="mp' or 'ray"):
        load_study(path, ["generation.tensor_parallel_size=2", "generation.distributed_executor_backend=slurm"])
    config, _ = load_study(path, ["generation.tensor_parallel_size=2"])
    assert config.generation.tensor_parallel_size == 2


def test_a_study_key_holds_the_parallelism_only_when_set():
    """Studies run before these settings keep their generation keys; a set size is part of the key; the treated
    model (its adapter on transformers) is generated without vLLM's parallelism."""
    def keyed(generation: dict, kind: str = "generate") -> dict:
        seen: dict = {}
        config = StudyConfig.model_validate({**BASE, "generation": generation})
        study = SimpleNamespace(config=config, problems=[], hardware=None,
                                stage=lambda name, key, inputs, work: seen.update(key=key))
        stages.generate_stage(study, kind, "fp", "m")  # the stage's key; its work (generate) is not run here
        return seen["key"]["generation"]

    default = keyed({})
    assert default == GenerationSettings().model_dump(mode="json", exclude=set(PARALLEL))
    given = keyed({"tensor_parallel_size": 2})
    assert given["tensor_parallel_size"] == 2 and not {"data_parallel_size", "pipeline_parallel_size"} & set(given)
    assert not set(PARALLEL) & set(keyed({"tensor_parallel_size": 2}, "treated"))


# --- the command line ---

def test_bad_parallel_options_are_usage_errors(tiny, tmp_path):
    base = ["generate", str(tiny), "--benchmark", "gsm8k", "--limit", "1", "--out", str(tmp_path / "a.jsonl"),
            "--no-grade"]
    for extra, said in ((["--tensor-parallel-size", "0"], "'--tensor-parallel-size': Input should be greater than"),
                        (["--data-parallel-size", "two"], "'--data-parallel-size': Input should be a valid integer"),
                        (["--distributed-executor-backend", "slurm"], "'mp' or 'ray'"),
                        (["--backend", "transformers", "--pipeline-parallel-size", "2"], "vllm backend"),
                        (["--base-url", "http://127.0.0.1:9/v1", "--tensor-parallel-size", "2"], "vllm backend")):
        result = CliRunner().invoke(_app(), base + extra, env={"COLUMNS": "300"})
        assert result.exit_code == 2, (extra, result.output)
        assert said in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split()), (extra, result.output)
    assert not (tmp_path / "a.jsonl").exists()


def test_more_gpus_than_visible_is_one_line_and_exit_2(tiny, tmp_path, monkeypatch, capsys):
    from quantmedic.pipelines.cli import main

    monkeypatch.setattr(generation, "visible_gpus", lambda: 1)
    monkeypatch.setattr(sys, "argv", ["quantmedic", "generate", str(tiny), "--benchmark", "gsm8k", "--limit", "1",
                                      "--out", str(tmp_path / "a.jsonl"), "--backend", "vllm", "--tensor-parallel-size",
                                      "2", "--pipeline-parallel-size", "2", "--no-grade"])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "needs 4 GPUs" in err and "--distributed-executor-backend ray" in err
    assert not (tmp_path / "a.jsonl").exists()


# --- the vLLM engines, through the real generation path ---

class _Choice:
    def __init__(self, prompt: str):
        self.text, self.finish_reason, self.token_ids = "Step 1: 2 + 2 = 4\n\nFinal answer: \\boxed{4}", "stop", [1] * 9


@pytest.fixture
def spied_vllm(tiny, monkeypatch):
    """A ``vllm`` module whose LLM and AsyncLLM record their engine arguments and answer every prompt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    made: list[tuple[str, dict]] = []

    class LLM:
        def __init__(self, model: str, **options):
            made.append(("LLM", options))

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, params, use_tqdm=False):
            return [SimpleNamespace(outputs=[_Choice(p)]) for p in prompts]

    class AsyncEngineArgs:
        def __init__(self, model: str, **options):
            self.options = options

    class AsyncLLM:
        ids: list[str] = []

        @classmethod
        def from_engine_args(cls, args):
            asyncio.get_running_loop()  # made inside the loop its requests run in
            made.append(("AsyncLLM", args.options))
            return cls()

        def get_tokenizer(self):
            return tokenizer

        async def generate(self, prompt, params, request_id):
            self.ids.append(request_id)
            await asyncio.sleep(0)
            yield SimpleNamespace(outputs=[])  # partial outputs come first; the last is the answer
            yield SimpleNamespace(outputs=[_Choice(prompt)])

    modules = {"vllm": dict(LLM=LLM, SamplingParams=lambda **k: SimpleNamespace(**k)),
               "vllm.engine": {}, "vllm.engine.arg_utils": dict(AsyncEngineArgs=AsyncEngineArgs),
               "vllm.v1": {}, "vllm.v1.engine": {}, "vllm.v1.engine.async_llm": dict(AsyncLLM=AsyncLLM)}
    for name, contents in modules.items():
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__dict__.update(contents)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(generation, "visible_gpus", lambda: None)
    return SimpleNamespace(made=made, ids=AsyncLLM.ids)


def test_the_parallelism_reaches_vllm_and_every_attempt(spied_vllm, tiny, problems, tmp_path):
    out = tmp_path / "tp.jsonl"
    summary = generate(tiny, problems, out_path=out, backend="vllm", n=2, tensor_parallel_size=2,
                       pipeline_parallel_size=2, distributed_executor_backend="mp")
    assert summary.written == 6
    assert spied_vllm.made == [("LLM", {"kv_cache_dtype": "auto", "tensor_parallel_size": 2,
                                        "pipeline_parallel_size": 2, "distributed_executor_backend": "mp"})]
    for attempt in read_records(out, Attempt):
        assert attempt.sampling.extra["parallel"] == {"tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                                                      "distributed_executor_backend": "mp"}
        assert attempt.sampling.extra["backend"] == "vllm"
    plain = tmp_path / "plain.jsonl"
    generate(tiny, problems, out_path=plain, backend="vllm")
    assert spied_vllm.made[-1] == ("LLM", {"kv_cache_dtype": "auto"})  # defaults: vLLM is given nothing new
    assert all("parallel" not in a.sampling.extra for a in read_records(plain, Attempt))


def test_data_parallel_runs_on_vllms_async_engine_which_balances_the_replicas(spied_vllm, tiny, problems, tmp_path):
    out = tmp_path / "dp.jsonl"
    summary = generate(tiny, problems, out_path=out, backend="vllm", n=3, data_parallel_size=2,
                       distributed_executor_backend="ray")
    assert summary.written == 9 and [kind for kind, _ in spied_vllm.made] == ["AsyncLLM"]  # not the offline LLM
    assert spied_vllm.made[0][1] == {"kv_cache_dtype": "auto", "data_parallel_size": 2,
                                     "distributed_executor_backend": "ray", "data_parallel_backend": "ray"}
    assert len(set(spied_vllm.ids)) == 9  # every request its own id
    attempts = read_records(out, Attempt)
    assert {(a.problem.id, a.sampling.sample_index) for a in attempts} == {(p.id, i) for p in problems for i in range(3)}
    assert all(a.sampling.extra["parallel"] == {"data_parallel_size": 2, "distributed_executor_backend": "ray"}
               and a.steps for a in attempts)


def test_vllms_own_refusal_of_the_sizes_is_one_line(spied_vllm, tiny, problems, tmp_path, monkeypatch):
    def refuse(self, model, **options):
        raise ValueError("World size (4) is larger than the number of available GPUs (1) in this node. If this is "
                         "intentional and you are using:\n- ray, set '--distributed-executor-backend ray'.")

    monkeypatch.setattr(sys.modules["vllm"].LLM, "__init__", refuse)
    with pytest.raises(InputError) as refused:
        generate(tiny, problems, out_path=tmp_path / "a.jsonl", backend="vllm", tensor_parallel_size=4)
    said = str(refused.value)
    assert refused.value.is_usage and "\n" not in said
    assert said.startswith("--tensor-parallel-size 4: vLLM cannot start with these: ValueError: World size (4)")
    with pytest.raises(ValueError, match="World size") as plain:  # a run without parallelism: vLLM's own error
        generate(tiny, problems, out_path=tmp_path / "b.jsonl", backend="vllm")
    assert not isinstance(plain.value, InputError)


# --- several servers of one model ---

def test_least_in_flight_takes_the_idlest_server_in_turn():
    servers = LeastInFlight(["a", "b", "c"])
    assert [servers.take() for _ in range(4)] == [0, 1, 2, 0]
    servers.give_back(1)
    assert servers.take() == 1 and servers.in_flight == [2, 1, 1]
    servers.give_back(0), servers.give_back(0), servers.give_back(2)
    assert servers.take() == 2 and servers.served == [2, 2, 2]


def test_two_real_servers_share_one_models_requests(tmp_path):
    with fault_server("--latency", "0.05") as first, fault_server("--latency", "0.05") as second:
        out = tmp_path / "served.jsonl"
        result = CliRunner().invoke(_app(), [
            "generate", "served-model", "--benchmark", "gsm8k", "--limit", "4", "--n", "2", "--out", str(out),
            "--base-url", first.base_url, "--base-url", second.base_url, "--model-name", "local", "--concurrency",
            "1", "--no-grade"], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        asked = [len(first.requests()), len(second.requests())]
    attempts = read_records(out, Attempt)
    assert len(attempts) == sum(asked) == 8 and min(asked) >= 3  # both served, about evenly
    assert all(a.sampling.extra["endpoints"] == [first.base_url, second.base_url] for a in attempts)
    assert all(a.model == "served-model" and a.sampling.extra["backend"] == "openai" for a in attempts)
