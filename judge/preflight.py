"""Where a judging job will write, checked before anything is loaded, started or sent: the verdicts
file (``judge --out``) or the report folder (``judge-eval --out``), and the answer cache.

A folder where a file goes, a file where a folder goes, an output under a file, an output that is
the input, or a cache that is not SQLite is an :class:`~quantmedic.taxonomy.errors.InputError`
(one line, exit 1) before the embedded judge starts or the first request goes out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from quantmedic.taxonomy.outputs import check_output_file, check_output_folder

from .cache import check_cache
from .job import JudgeJob


def check_job(job: JudgeJob, out_dir: Path | None = None, files: Iterable[str] = ()) -> None:
    """Check the job's cache and outputs (``out_dir`` with ``files``: judge-eval's report folder)."""
    if job.out is not None:
        check_output_file(job.out, inputs=[job.input], what="verdicts")
    if out_dir is not None:
        check_output_folder(out_dir, files=files, inputs=[job.input], what="report")
    if job.cache is not None:
        check_cache(job.cache)
