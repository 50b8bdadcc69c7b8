"""Which library modules a workflow script runs, read from its imports, and their fingerprint.

Snakemake reruns a `script:` rule when the script changes, not when the library code behind it
does. Each rule therefore passes the fingerprint of its script's import closure within
`src/varprune` as a param: editing any module the job can execute reruns the job and what
follows, and editing a module it never imports leaves it alone. The closure is found
statically (every `import varprune…` / `from varprune… import …`, at any depth of the file,
including imports inside functions), so the list is never kept by hand; the data files of
the imported packages (the report's template) count as their code.
Pure standard library: the workflow computes it at parse time.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "varprune"


def _module_file(src: Path, dotted: str) -> Path | None:
    """The file of module `dotted` (e.g. `varprune.pruning.cycle`) under `src`, or None."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = src.joinpath(*parts[1:]) if len(parts) > 1 else src
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _package_inits(src: Path, dotted: str) -> list[Path]:
    """The `__init__.py` of every package that importing `dotted` executes."""
    parts = dotted.split(".")
    inits = []
    for depth in range(1, len(parts)):
        init = src.joinpath(*parts[1:depth]) / "__init__.py"
        if init.is_file():
            inits.append(init)
    return inits


def _own_name(src: Path, path: Path) -> str:
    relative = path.relative_to(src).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, src: Path) -> set[str]:
    """Dotted names of the varprune modules a file imports (submodules named in `from` included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _own_name(src, path) if path.is_relative_to(src) else None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                if own is None:
                    continue
                package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _package_data(init: Path) -> list[Path]:
    """The data files of the package whose `__init__.py` is `init` (templates and the like):
    every non-Python file in its folder tree, outside its subpackages and caches."""
    files = []
    for path in init.parent.rglob("*"):
        folders = path.relative_to(init.parent).parents
        inside_subpackage = any((init.parent / f / "__init__.py").is_file() for f in folders if str(f) != ".")
        if (path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
                and not inside_subpackage):
            files.append(path)
    return files


def import_closure(script: str | Path, src: str | Path) -> list[Path]:
    """Every file under `src` (the `varprune` package folder) that running `script` can import,
    and the data files of the packages among them (a report template reruns the report),
    sorted by path."""
    script, src = Path(script).resolve(), Path(src).resolve()
    seen: set[Path] = set()
    queue = [script]
    while queue:
        path = queue.pop()
        for name in _imported_modules(path, src):
            for found in [_module_file(src, name), *_package_inits(src, name)]:
                if found is not None and found not in seen:
                    seen.add(found)
                    queue.append(found)
    data = {file for init in seen if init.name == "__init__.py" for file in _package_data(init)}
    return sorted(seen | data)


def code_fingerprint(script: str | Path, src: str | Path) -> str:
    """A short hash of the names and contents of `import_closure(script, src)`."""
    src = Path(src).resolve()
    digest = hashlib.sha256()
    for path in import_closure(script, src):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
