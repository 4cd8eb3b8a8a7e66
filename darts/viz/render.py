"""Drawing a genotype's cells to PNG files with Graphviz's ``dot``.

A picture is a by-product of a run, never a reason to stop one: a search must not die at the end
of an epoch because Graphviz is missing or misbehaves. So :func:`draw_genotype` always writes each
cell's DOT source (a user can render it later with ``dot -Tpng cell.dot -o cell.png``), and where
``dot`` is not installed, fails, or hangs it warns once and leaves that cell out of what it
returns. Files are written under temporary names and renamed into place, so a crash, a kill or a
broken ``dot`` never leaves a half-written picture for TensorBoard or a person to read.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import warnings
from pathlib import Path

from darts.viz.dot_source import cell_to_dot
from darts.viz.images import is_complete_png

DOT_TIMEOUT_S = 30.0  # a cell of a dozen nodes takes dot well under a second
INSTALL_HINT = "install Graphviz with `apt-get install graphviz` (or `make setup`)"


def _temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path``: on the same file system, so os.replace is atomic there.

    The file is not created here (as mkstemp would, mode 0600), so whoever writes it gets the
    user's usual permissions."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = _temporary_sibling(path)
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _one_line(stderr: bytes) -> str:
    """dot's last complaint, which names the problem; earlier lines are usually context."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


def _render_png(executable: str, dot_path: Path, png_path: Path, timeout_s: float) -> str | None:
    """Render ``dot_path`` to ``png_path``; None on success, else what went wrong, in a few words."""
    temporary = _temporary_sibling(png_path)
    try:
        result = subprocess.run([executable, "-Tpng", "-o", str(temporary), str(dot_path)], capture_output=True,
                                timeout=timeout_s, check=False)
        if result.returncode != 0:
            return f"dot exited with status {result.returncode}: {_one_line(result.stderr)}"
        # A dot killed by a signal or short of disk space can exit 0 over an empty or cut-off file.
        if not is_complete_png(temporary):
            return "dot did not write a complete PNG"
        os.replace(temporary, png_path)
        return None
    except subprocess.TimeoutExpired:  # subprocess.run has already killed it
        return f"dot did not finish within {timeout_s:g} s"
    except OSError as err:  # dot found on PATH but not runnable, or the directory not writable
        return f"dot could not be run: {err}"
    finally:
        temporary.unlink(missing_ok=True)


def draw_genotype(genotype, directory, prefix: str = "", *, dot_timeout_s: float = DOT_TIMEOUT_S) -> dict[str, Path]:
    """Draw each cell of ``genotype`` as ``directory/{prefix}{cell}.png``; return {cell: png path}.

    ``genotype`` is anything with ``cell_graphs() -> {cell name: CellGraph}``. Beside each PNG
    goes the ``.dot`` source it was rendered from. Cells that could not be drawn (no ``dot`` on
    PATH, ``dot`` failing or running past ``dot_timeout_s``) are missing from the result, with one
    warning per call; their ``.dot`` files are still written, and an older PNG of the same name is
    removed so that no picture in ``directory`` disagrees with the source beside it.
    """
    directory = Path(directory)
    if not callable(getattr(genotype, "cell_graphs", None)):
        raise TypeError(f"cannot draw a {type(genotype).__name__}: it has no cell_graphs() method")
    directory.mkdir(parents=True, exist_ok=True)
    sources = {}
    for cell, graph in genotype.cell_graphs().items():
        dot_path = directory / f"{prefix}{cell}.dot"
        # 'normal cell', 'reduce cell', but NAS-Bench-201's one 'cell' not 'cell cell'.
        title = cell if cell.endswith("cell") else f"{cell} cell"
        _write_text_atomically(dot_path, cell_to_dot(graph, title=title))
        sources[cell] = dot_path

    executable = shutil.which("dot")
    if executable is None:
        for dot_path in sources.values():
            dot_path.with_suffix(".png").unlink(missing_ok=True)
        warnings.warn(f"Graphviz's dot is not on PATH, so no cell pictures were drawn; {INSTALL_HINT}. "
                      f"The cells' DOT sources are in {directory}.", RuntimeWarning, stacklevel=2)
        return {}

    drawings, failures = {}, []
    for cell, dot_path in sources.items():
        png_path = dot_path.with_suffix(".png")
        problem = _render_png(executable, dot_path, png_path, dot_timeout_s)
        if problem is None:
            drawings[cell] = png_path
        else:
            png_path.unlink(missing_ok=True)
            failures.append(f"{cell} ({problem})")
    if failures:
        warnings.warn(f"Graphviz could not draw cell(s) {'; '.join(failures)}; their DOT sources are in "
                      f"{directory}.", RuntimeWarning, stacklevel=2)
    return drawings
