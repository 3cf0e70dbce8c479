"""The ``quantmedic`` command line."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from quantmedic.annotate.connection import AnnotateError
from quantmedic.annotate.server import ArgillaServerError
from quantmedic.judge.backend import Endpoint, api_key_from_env
from quantmedic.judge.cache import default_cache_path
from quantmedic.judge.embedded import EmbeddedJudgeUnavailable
from quantmedic.judge.retry import RetryPolicy
from quantmedic.judge.runner import JudgeRunAborted
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.model import default_taxonomy_text, load_taxonomy
from quantmedic.taxonomy.schemas import write_schemas

from .shipped import SHIPPED, resolve_input

app = typer.Typer(
    name="quantmedic", no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich", add_completion=False,
    help="Diagnose, verify and treat the step-by-step math reasoning failures of quantized LLMs.")
_stderr = Console(stderr=True)
_stdout = Console()

EXIT_ABORTED = 1
EXIT_BAD_INPUT = 2

_SHIPPED_HELP = ", ".join(f"[bold]{name}[/bold]" for name in SHIPPED)


# Judge options shared by `judge` and `judge-eval`.
BaseUrl = Annotated[Optional[list[str]], typer.Option("--base-url", envvar="QUANTMEDIC_BASE_URL",
    help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1. "
         "Give one for all --model, or one per --model. None: start the embedded SmolLM2 judge.")]
Model = Annotated[Optional[list[str]], typer.Option("--model", "-m",
    help="Judge model name; repeat for several judges (the verdict keeps each answer and the majority).")]
ApiKeyEnv = Annotated[str, typer.Option(help="Environment variable holding the API key (never logged).")]
Samples = Annotated[int, typer.Option(min=1, help="Answers per judge per item (k samples, majority vote); "
                                                   "use a temperature above 0.")]
Temperature = Annotated[float, typer.Option(min=0.0)]
MaxTokens = Annotated[int, typer.Option(min=16, help="Token limit of one judge answer.")]
Seed = Annotated[int, typer.Option(help="Sampling seed (sample i uses seed + i).")]
TaxonomyFile = Annotated[Optional[Path], typer.Option("--taxonomy", help="Your own taxonomy YAML/JSON "
    "(start from `quantmedic taxonomy`). Default: the reference study's.")]
Format = Annotated[str, typer.Option("--format", help="auto, quantmedic, processbench, gsm8k-solutions or text.")]
Limit = Annotated[Optional[int], typer.Option(min=1, help="Judge at most this many items.")]
Concurrency = Annotated[Optional[int], typer.Option(min=1, help="Requests in flight at once "
    "(default 16; 2 for the embedded judge, which serves one at a time).")]
Timeout = Annotated[float, typer.Option(min=1.0, help="Seconds per request.")]
MaxRetries = Annotated[int, typer.Option(min=0, help="Retries per request on 429/5xx/timeouts, with "
    "exponential backoff and jitter, honouring Retry-After.")]
MaxDelay = Annotated[float, typer.Option(min=0.0, help="Longest wait between retries, in seconds.")]
InvalidRetries = Annotated[int, typer.Option(min=0, help="Re-asks after an invalid or truncated answer "
    "before the item is recorded as unscored.")]
ResponseFormatOpt = Annotated[str, typer.Option("--response-format", help="auto (json_schema, falling back to "
    "json_object + schema when the server refuses it), json_schema or json_object.")]
Transport = Annotated[str, typer.Option(help="sdk (the openai SDK) or aiohttp (direct aiohttp: the same "
    "requests at about half the client CPU, for bulk runs on your own servers).")]
PromptFiles = Annotated[Optional[list[Path]], typer.Option("--prompt", help="A system-prompt template file "
    "for the judge(s) (placeholders {taxonomy}, {schema}, {taxonomy_name}, {none}); one for all, or one per "
    "--model, e.g. the same model twice with two prompts to compare them.")]
CacheFile = Annotated[Optional[Path], typer.Option("--cache", help="SQLite store of answers that makes reruns "
    f"resume. Default: {default_cache_path()}")]


def _judge_job(input: str, out: Path | None, *, base_url, model, api_key_env, samples, temperature, max_tokens,
               seed, taxonomy, input_format, limit, concurrency, timeout, max_retries, max_delay, invalid_retries,
               response_format, transport, cache, prompt=None, include_correct=False, price_input=None,
               price_output=None):
    """Check the shared judge options and build the job."""
    from quantmedic.judge.prompt import DEFAULT_PROMPT, load_prompt

    from .judging import JudgeJob

    if transport not in ("sdk", "aiohttp"):
        raise typer.BadParameter("choose sdk or aiohttp", param_hint="--transport")
    if response_format not in ("auto", "json_schema", "json_object"):
        raise typer.BadParameter("choose auto, json_schema or json_object", param_hint="--response-format")
    models = model or []
    urls = base_url or []
    if urls and not models:
        raise typer.BadParameter("give the judge model served at --base-url", param_hint="--model")
    if models and not urls:
        raise typer.BadParameter("give the endpoint that serves --model", param_hint="--base-url")
    if len(urls) not in (0, 1, len(models)):
        raise typer.BadParameter("give one --base-url, or one per --model", param_hint="--base-url")
    prompts = [load_prompt(p) for p in prompt or []]
    if len(prompts) not in (0, 1, max(1, len(models))):
        raise typer.BadParameter("give one --prompt, or one per --model", param_hint="--prompt")
    judges = [(urls[0] if len(urls) == 1 else urls[i], m,
               prompts[0] if len(prompts) == 1 else prompts[i] if prompts else DEFAULT_PROMPT)
              for i, m in enumerate(models)]
    if len(set(judges)) < len(judges):
        raise typer.BadParameter("the same model twice on one endpoint with one prompt: use --samples",
                                 param_hint="--model")
    on_several_servers = {m for m in models if len({u for u, mm, _ in judges if mm == m}) > 1}
    key = api_key_from_env(api_key_env)
    endpoints = tuple(Endpoint(base_url=url, model=m, api_key=key, response_format=response_format,  # type: ignore
                               prompt=p, name=f"{m}@{urlsplit(url).netloc}" if m in on_several_servers else "")
                      for url, m, p in judges)
    return JudgeJob(
        input=resolve_input(input), out=out, taxonomy=load_taxonomy(taxonomy), endpoints=endpoints,
        input_format=input_format, samples=samples, temperature=temperature, max_tokens=max_tokens, seed=seed,
        concurrency=concurrency or (16 if endpoints else 2), timeout=timeout,
        policy=RetryPolicy(max_retries=max_retries, max_delay=max_delay), invalid_retries=invalid_retries,
        transport=transport, cache=cache or default_cache_path(), limit=limit, include_correct=include_correct,
        price_input=price_input, price_output=price_output,
        embedded_prompt=prompts[0] if prompts and not models else DEFAULT_PROMPT)


@app.command(epilog=f"Shipped inputs you can name instead of a path: {_SHIPPED_HELP}. "
                    "Exit codes: 0 done (unscored items are recorded, not fatal), 1 the endpoint refused "
                    "(wrong URL, key or model), 2 bad input or options.")
def judge(
    input: Annotated[str, typer.Argument(
        help="Attempts to judge: quantmedic JSONL, ProcessBench JSON/JSONL, the GSM8K model-solutions file, "
             "JSONL with problem + solution text, or a shipped name such as gsm8k-solutions.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Verdicts JSONL to write (atomically). "
        "Verdicts already in it that this run does not redo are kept.")] = None,
    base_url: BaseUrl = None, model: Model = None, api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    samples: Samples = 1, temperature: Temperature = 0.0, max_tokens: MaxTokens = 512, seed: Seed = 0,
    taxonomy: TaxonomyFile = None, input_format: Format = "auto",
    include_correct: Annotated[bool, typer.Option(help="Also judge attempts graded correct.")] = False,
    limit: Limit = None, concurrency: Concurrency = None, timeout: Timeout = 120.0, max_retries: MaxRetries = 6,
    max_delay: MaxDelay = 60.0, invalid_retries: InvalidRetries = 2, response_format: ResponseFormatOpt = "auto",
    transport: Transport = "sdk", cache: CacheFile = None, prompt: PromptFiles = None,
    price_input: Annotated[Optional[float], typer.Option(help="USD per million prompt tokens, for the cost.")] = None,
    price_output: Annotated[Optional[float], typer.Option(help="USD per million completion tokens.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the prompt(s), schema and response format "
                                                            "of the first item(s); send nothing.")] = False,
) -> None:
    """Find the [bold]first wrong step[/bold] of each failed solution and classify its error.

    Every answer is checked against a JSON Schema built from the taxonomy; invalid answers are retried and finally recorded as [italic]unscored[/italic], never dropped. Answers are cached as they arrive, so a rerun (or a run after a crash) only sends what is missing.
    """
    from .judging import dry_run as render_dry_run, run_judge_job

    if out is None and not dry_run:
        raise typer.BadParameter("say where the verdicts go", param_hint="--out")
    job = _judge_job(input, out, base_url=base_url, model=model, api_key_env=api_key_env, samples=samples,
                     temperature=temperature, max_tokens=max_tokens, seed=seed, taxonomy=taxonomy,
                     input_format=input_format, limit=limit, concurrency=concurrency, timeout=timeout,
                     max_retries=max_retries, max_delay=max_delay, invalid_retries=invalid_retries,
                     response_format=response_format, transport=transport, cache=cache, prompt=prompt,
                     include_correct=include_correct, price_input=price_input, price_output=price_output)
    if dry_run:
        render_dry_run(job, _stdout)
        return
    run_judge_job(job, _stderr)


@app.command("judge-eval", epilog="Outputs in --out: metrics.json, summary.md, predictions.jsonl, verdicts.jsonl, "
                                  "steps.png (predicted vs. true step), calibration.png (reliability diagram).")
def judge_eval(
    data: Annotated[str, typer.Argument(help="ProcessBench-format data (JSON array or JSONL of problem, steps, "
        "label = 0-based first wrong step or -1), any split (GSM8K, MATH, OlympiadBench, Omni-MATH), or the "
        "shipped processbench-gsm8k.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report files.")],
    base_url: BaseUrl = None, model: Model = None, api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    samples: Samples = 1, temperature: Temperature = 0.0, max_tokens: MaxTokens = 512, seed: Seed = 0,
    taxonomy: TaxonomyFile = None, input_format: Format = "auto", limit: Limit = None,
    concurrency: Concurrency = None, timeout: Timeout = 120.0, max_retries: MaxRetries = 6,
    max_delay: MaxDelay = 60.0, invalid_retries: InvalidRetries = 2, response_format: ResponseFormatOpt = "auto",
    transport: Transport = "sdk", cache: CacheFile = None, prompt: PromptFiles = None,
    escalate_below: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Escalation: the first "
        "--model judges every item, the others only items where it is unscored, its confidence is below this, "
        "or its samples disagree. The spend of each tier is reported.")] = None,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the 95% intervals.")] = 2000,
) -> None:
    """Score judges against [bold]human first-error labels[/bold] (ProcessBench's metrics).

    Accuracy on the samples with an error, on those without, and their harmonic mean (F1), each with a 95% bootstrap interval; where the judges point (too early / too late, by how many steps); unscored counts; with several judges, a side-by-side table, Cohen's kappa between judges and the ensemble's score; calibration of the stated confidence (reliability table, ECE, accuracy and coverage at thresholds).
    """
    from .judge_eval import EvalJob, run_judge_eval

    job = _judge_job(data, None, base_url=base_url, model=model, api_key_env=api_key_env, samples=samples,
                     temperature=temperature, max_tokens=max_tokens, seed=seed, taxonomy=taxonomy,
                     input_format=input_format, limit=limit, concurrency=concurrency, timeout=timeout,
                     max_retries=max_retries, max_delay=max_delay, invalid_retries=invalid_retries,
                     response_format=response_format, transport=transport, cache=cache, prompt=prompt)
    evaluation, _ = run_judge_eval(EvalJob(job, out, escalate_below, bootstrap, seed), _stderr)
    from quantmedic.judge.meta_eval import to_markdown

    sys.stdout.write(to_markdown(evaluation))
    _stderr.print(f"wrote {out}/metrics.json, summary.md, predictions.jsonl, verdicts.jsonl, steps.png, "
                  "calibration.png")


annotate_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                           help="Human verification of verdicts in Argilla: push, pull, report, and a local server.")
app.add_typer(annotate_app, name="annotate")

ApiUrl = Annotated[Optional[str], typer.Option(envvar="ARGILLA_API_URL", help="Argilla server URL.")]
ApiKey = Annotated[Optional[str], typer.Option(envvar="ARGILLA_API_KEY", show_envvar=True,
                                               help="Argilla API key (an owner's or admin's to push and pull).")]
Workspace = Annotated[Optional[str], typer.Option(help="Argilla workspace (default: your only one).")]
DatasetName = Annotated[str, typer.Option("--dataset", "-d", help="Argilla dataset name.")]


@annotate_app.command("push")
def annotate_push(
    verdicts: Annotated[Path, typer.Argument(help="Verdicts JSONL from `quantmedic judge`.")],
    dataset: DatasetName, api_url: ApiUrl = None, api_key: ApiKey = None, workspace: Workspace = None,
    overlap: Annotated[int, typer.Option(min=1, help="Annotators who must submit each record.")] = 1,
    sample: Annotated[Optional[int], typer.Option(min=1, help="Send only this many verdicts, drawn at random "
        "within strata (seeded); sampling weights are stored so the accuracy estimate stays unbiased.")] = None,
    stratify: Annotated[str, typer.Option(help="Strata for --sample: category, model or none.")] = "category",
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    max_steps: Annotated[int, typer.Option(min=1, help="Steps the step question offers (longer solutions are "
                                                       "skipped).")] = 40,
    include_degenerate: Annotated[bool, typer.Option(help="Also send rule-detected degenerate outputs.")] = False,
    taxonomy: TaxonomyFile = None,
) -> None:
    """Create an Argilla dataset from the taxonomy and push verdicts, the judge's answers pre-filled as suggestions.

    Record ids are the verdict ids: pushing again updates records instead of duplicating them.
    """
    from quantmedic.annotate.connection import ArgillaTarget
    from quantmedic.annotate.push import plan_push, push
    from quantmedic.annotate.sampling import STRATIFY
    from quantmedic.taxonomy.jsonl import read_records
    from quantmedic.taxonomy.records import Verdict

    if stratify not in STRATIFY:
        raise typer.BadParameter(f"choose one of {', '.join(STRATIFY)}", param_hint="--stratify")
    target = ArgillaTarget.from_options(api_url, api_key, workspace)
    plan = plan_push(read_records(verdicts, Verdict), sample=sample, stratify=stratify, seed=seed,
                     include_degenerate=include_degenerate, max_steps=max_steps)
    summary = push(target, dataset, plan, load_taxonomy(taxonomy), max_steps=max_steps, overlap=overlap,
                   console=_stderr)
    skipped = ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()) or "none"
    _stderr.print(f"{'created' if summary['created'] else 'updated'} dataset {summary['dataset']} in workspace "
                  f"{summary['workspace']}: {summary['records']} records pushed (skipped: {skipped})\n"
                  f"annotate at {summary['url']}", highlight=False)


@annotate_app.command("pull")
def annotate_pull(
    dataset: DatasetName,
    verdicts: Annotated[Path, typer.Option(help="The verdicts file that was pushed (reviews are joined to it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Reviews JSONL to write (atomically).")],
    api_url: ApiUrl = None, api_key: ApiKey = None, workspace: Workspace = None,
    attach_verdicts: Annotated[bool, typer.Option(help="Embed each full verdict in its review.")] = False,
) -> None:
    """Export submitted responses as reviews (one per annotator and record); drafts and discarded are counted."""
    from quantmedic.annotate.connection import ArgillaTarget
    from quantmedic.annotate.pull import pull
    from quantmedic.taxonomy.jsonl import read_records, write_records
    from quantmedic.taxonomy.records import Verdict

    target = ArgillaTarget.from_options(api_url, api_key, workspace)
    reviews, counts = pull(target, dataset, read_records(verdicts, Verdict), attach_verdicts=attach_verdicts)
    write_records(out, reviews)
    per = ", ".join(f"{a}: {n}" for a, n in sorted(counts.submitted.items())) or "none"
    _stderr.print(f"{counts.records} records: {sum(counts.submitted.values())} submitted reviews ({per}); "
                  f"{counts.drafts} drafts and {counts.discarded} discarded responses left out; "
                  f"{counts.without_response} records without any response\nwrote {out}", highlight=False)


@annotate_app.command("report")
def annotate_report(
    reviews: Annotated[Path, typer.Argument(help="Reviews JSONL from `quantmedic annotate pull`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and the PNGs.")],
) -> None:
    """Diagnostic accuracy of the judge with 95% Wilson intervals, breakdowns, confusion and agreement."""
    import json as _json

    from quantmedic.annotate.report import diagnostic_report, report_to_json, report_to_markdown
    from quantmedic.taxonomy.errors import InputError as _InputError
    from quantmedic.taxonomy.jsonl import read_records, write_atomic
    from quantmedic.taxonomy.records import Review

    from .plots import accuracy_bars, confusion_heatmap

    loaded = read_records(reviews, Review)
    if not loaded:
        raise _InputError(reviews, "no reviews: nothing was submitted yet")
    report = diagnostic_report(loaded)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.json", [_json.dumps(report_to_json(report), indent=2) + "\n"])
    markdown = report_to_markdown(report)
    write_atomic(out / "report.md", [markdown])
    accuracy_bars(report.by_category, out / "accuracy_by_category.png")
    confusion_heatmap(report.confusion, out / "category_confusion.png")
    sys.stdout.write(markdown)
    _stderr.print(f"wrote {out}/report.json, report.md, accuracy_by_category.png, category_confusion.png")


@annotate_app.command("serve")
def annotate_serve(
    home: Annotated[Path, typer.Option(help="Folder for the database, logs and accounts.json (reused on restart).")]
        = Path("~/.local/share/quantmedic/argilla"),
    port: Annotated[int, typer.Option(help="Port of the web UI and API.")] = 6900,
    annotators: Annotated[int, typer.Option(min=0, help="Annotator accounts to create.")] = 2,
    python: Annotated[Optional[Path], typer.Option(help="Python of the argilla-server environment (default: "
        "$QUANTMEDIC_ARGILLA_PYTHON, else ~/.cache/quantmedic/argilla-venv).")] = None,
    install: Annotated[bool, typer.Option("--install", help="First create that environment (argilla-server 2.8.0, "
        "osmem-server, click<8.2; about 90 s, from PyPI).")] = False,
) -> None:
    """Start a local Argilla (argilla-server 2.8 on SQLite, osmem as its search engine, Debian's redis-server) for annotators on a laptop; print the URL and the owner's and annotators' credentials; stop everything on Ctrl-C."""
    from quantmedic.annotate.server import DEFAULT_VENV, install_server_env, serve

    if install:
        _stderr.print(f"creating the Argilla server environment in {python or DEFAULT_VENV} ...")
        python = install_server_env(python.parent.parent if python else DEFAULT_VENV)
    serve(home.expanduser(), python=python, port=port, annotators=annotators)


from .commands_eval import register as _register_eval_commands  # noqa: E402
from .commands_models import register as _register_model_commands  # noqa: E402
from .commands_medicine import register as _register_medicine_commands  # noqa: E402
from .commands_study import register as _register_study_commands  # noqa: E402

_register_model_commands(app)
_register_eval_commands(app)
_register_medicine_commands(app)
_register_study_commands(app)


@app.command("taxonomy")
def show_taxonomy(
    check: Annotated[Optional[Path], typer.Option(help="Validate this taxonomy file instead of printing.")] = None,
) -> None:
    """Print the default error taxonomy (YAML) to copy and edit, or --check your own."""
    if check is not None:
        taxonomy = load_taxonomy(check)
        _stdout.print(f"{check}: ok ({len(taxonomy.categories)} categories, {len(taxonomy.subtype_ids)} subtypes)")
        return
    sys.stdout.write(default_taxonomy_text())


@app.command()
def schema(folder: Annotated[Path, typer.Argument(help="Folder to write the schemas into.")]) -> None:
    """Write the JSON Schemas of the shared records (problem, attempt, verdict, review, preference pair)."""
    for path in write_schemas(folder):
        _stdout.print(f"wrote {path}")


@app.command()
def data() -> None:
    """List the real public data shipped with quantmedic."""
    from .shipped import shipped_path

    for name, (_, description) in SHIPPED.items():
        _stdout.print(f"[bold]{name}[/bold]  {description}\n    {shipped_path(name)}")


def main() -> None:
    """Console-script entry point: clear one-line errors and documented exit codes."""
    try:
        app()  # standalone: usage errors print themselves and exit 2
    except (InputError, EmbeddedJudgeUnavailable, AnnotateError, ArgillaServerError) as error:
        _stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        sys.exit(EXIT_BAD_INPUT)
    except JudgeRunAborted as error:
        _stderr.print(f"[red]error:[/red] the judge endpoint refused the request ({escape(str(error))}); check "
                      "--base-url, --model and the API key variable", highlight=False)
        sys.exit(EXIT_ABORTED)
    except KeyboardInterrupt:
        _stderr.print("interrupted: answers received so far are cached; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
