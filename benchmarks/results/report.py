"""`connbench report [RUN_DIR]`: execute notebooks/report.ipynb on a run folder, headless.

papermill runs the notebook with its `run_dir` parameter set; the notebook writes figures/*.png into the run
folder, and nbconvert turns the executed notebook into report.html (code hidden, figures embedded). The folder
is checked before the notebook starts, so a missing, empty or older folder fails with one line.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.errors import ConnbenchError
from benchmarks.results import model
from benchmarks.results.load import load_run
from benchmarks.results.runfolder import write_atomic

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "report.ipynb"
SKIP_PREFIX = "skipped figure "


def build_report(run_dir: Path, notebook: Path = NOTEBOOK) -> list[Path]:
    """Execute the report notebook on `run_dir`; return the paths written: report.html, then figures/*.png."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    run_dir = Path(run_dir).resolve()
    run = load_run(run_dir)  # fails here, with one line, rather than inside the kernel
    model.write(run_dir, run)  # model.csv: the model per strategy, checked on held-out cells
    if not notebook.is_file():
        raise ConnbenchError(f"the report notebook is missing: {notebook}")
    figdir = run_dir / "figures"
    # The new figures go to a fresh folder that replaces figures/ only once the notebook has run: an interrupted
    # report leaves the previous figures and report.html as they were.
    fresh = run_dir / ".figures-new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix="connbench-report-") as tmp:
            executed = Path(tmp) / "report.ipynb"
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters={"run_dir": str(run_dir), "figures_dir": str(fresh)},
                kernel_name="python3",
                cwd=str(notebook.parent.parent),
                progress_bar=False,
                log_output=False,
                # The kernel talks to papermill over Unix sockets in a private folder, not over localhost TCP.
                config=Config({"KernelManager": {"transport": "ipc", "ip": str(Path(tmp) / "kernel")}}),
                # Cell errors reach us through papermill; the kernel's own log (its shutdown interrupt) is noise.
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
            nb = nbformat.read(executed, as_version=4)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    for line in _skipped(nb):
        print(f"report: {line}", file=sys.stderr, flush=True)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"connbench report {run.run_id}"}})
    out = run_dir / "report.html"
    stale = run_dir / ".figures-old"
    shutil.rmtree(stale, ignore_errors=True)
    if figdir.exists():
        figdir.rename(stale)
    fresh.rename(figdir)
    shutil.rmtree(stale, ignore_errors=True)
    write_atomic(out, html)
    return [out, *sorted(figdir.glob("*.png"))]


def _skipped(nb) -> list[str]:
    """The notebook's one-line reasons for the figures it did not draw."""
    lines = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stdout":
                lines += [ln for ln in output.get("text", "").splitlines() if ln.startswith(SKIP_PREFIX)]
    return lines


def cmd_report(run_dir: str | None) -> int:
    """`connbench report`: the given folder, else the newest under results/; prints the paths it wrote."""
    from benchmarks.results.load import newest_run

    folder = Path(run_dir) if run_dir else newest_run()
    for path in build_report(folder):
        print(path, flush=True)
    return 0
