"""Execute the project's notebooks with nbclient.

Usage::

    python notebooks/run_notebooks.py                    # every notebook at full size; outputs discarded
    python notebooks/run_notebooks.py --size smoke       # tiny data and few epochs (seconds per notebook)
    python notebooks/run_notebooks.py --inplace          # save the outputs into the notebooks (the committed version)
    python notebooks/run_notebooks.py --out /tmp/nb 02_movielens.ipynb

The size is passed to the kernels in ``BAYES_PERSONA_NOTEBOOK_SIZE`` (``smoke`` or
``full``); each notebook reads it in its first cell. ``02_movielens.ipynb`` needs
MovieLens 100K under ``$BAYES_PERSONA_DATA/ml-100k``; it is never downloaded. Exits 1 when
a notebook fails (the failing cell and its traceback are printed) and 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = ("smoke", "full")
DEFAULT_TIMEOUT = 900  # seconds per cell


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks to run: the named ones (relative to this folder or as paths), else all."""
    if not names:
        return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    out = []
    for name in names:
        path = Path(name)
        if not path.is_file():
            path = HERE / name
        if not path.is_file():
            raise FileNotFoundError(f"no notebook {name!r} (looked in . and {HERE})")
        out.append(path.resolve())
    return out


def run_notebook(
    path: str | os.PathLike,
    size: str = "full",
    *,
    timeout: int = DEFAULT_TIMEOUT,
    out: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
):
    """Execute one notebook in a fresh ``python3`` kernel; return ``(notebook, seconds)``.

    Parameters
    ----------
    path : path of the ``.ipynb``
    size : {"smoke", "full"}
        Set as ``BAYES_PERSONA_NOTEBOOK_SIZE`` for the kernel.
    timeout : int
        Seconds allowed per cell.
    out : path, optional
        Write the executed notebook there (``path`` itself for in-place).
    cwd : path, optional
        Working directory of the kernel; default the notebook's folder.

    Raises
    ------
    nbclient.exceptions.CellExecutionError
        A cell raised; the message holds the cell and its traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # keeps the committed notebooks free of per-run timestamps
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    previous = os.environ.get("BAYES_PERSONA_NOTEBOOK_SIZE")
    os.environ["BAYES_PERSONA_NOTEBOOK_SIZE"] = size  # the kernel inherits this environment
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        if previous is None:
            os.environ.pop("BAYES_PERSONA_NOTEBOOK_SIZE", None)
        else:
            os.environ["BAYES_PERSONA_NOTEBOOK_SIZE"] = previous
    seconds = time.perf_counter() - start
    if out is not None:
        nbformat.write(nb, Path(out))
    return nb, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python notebooks/run_notebooks.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "notebooks", nargs="*", help="notebooks to run (default: every NN_*.ipynb here)"
    )
    ap.add_argument("--size", choices=SIZES, default="full", help="problem size (default full)")
    ap.add_argument(
        "--inplace", action="store_true", help="save the executed notebooks over the originals"
    )
    ap.add_argument(
        "--out", help="folder to write the executed notebooks to (instead of --inplace)"
    )
    ap.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per cell (default {DEFAULT_TIMEOUT})",
    )
    args = ap.parse_args(argv)
    if args.inplace and args.out:
        ap.error("--inplace and --out exclude each other")
    try:
        paths = notebooks(args.notebooks)
    except FileNotFoundError as exc:
        ap.error(str(exc))
    if not paths:
        ap.error(f"no notebooks found in {HERE}")
    from nbclient.exceptions import CellExecutionError

    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in paths:
        dest = path if args.inplace else (out_dir / path.name if out_dir else None)
        print(f"{path.name} ({args.size}) ...", flush=True)
        try:
            _, seconds = run_notebook(path, args.size, timeout=args.timeout, out=dest)
        except CellExecutionError as exc:
            print(f"{path.name} FAILED:\n{exc}", file=sys.stderr, flush=True)
            failed.append(path.name)
            continue
        print(f"{path.name}: {seconds:.0f} s" + (f" -> {dest}" if dest else ""), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
