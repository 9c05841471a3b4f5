"""The bundle's licences folder: write it after a build, check it against the bundle.

    python packaging/licenses.py write dist/sandra   # fills dist/sandra/licenses/
    python packaging/licenses.py check dist/sandra   # exit 1, listing what is not covered

What the bundle ships is read from the bundle itself: the top-level Python modules
(in its PYZ archive, its embedded scripts and its extension modules) and every ELF
file under _internal/. Each gets its licence text from, first match wins:
  - packaging/licenses/third_party.toml: libraries vendored inside wheels (FFmpeg in av.libs,
    ICU beside Qt, ...) and distributions whose wheel has no licence file;
  - Python itself for the interpreter, libpython and the standard library;
  - a distribution's own licence files (its dist-info), which also cover what it
    vendors in <name>.libs/ when its licence text names that library (numpy's does
    for OpenBLAS and libgfortran);
  - Debian's copyright file of the package that owns a system library.
licenses/MANIFEST.json records each component, its licence files and what it covers;
`check` compares that record with the bundle (paths are relative to the bundle). Run both with the build's venv Python:
the module-to-distribution map comes from its installed metadata.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shutil
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THIRD_PARTY = REPO / "packaging" / "licenses" / "third_party.toml"
COMMON_LICENSES = Path("/usr/share/common-licenses")
DPKG_INFO = Path("/var/lib/dpkg/info")
PROJECT = "sandra-desktop"
PYTHON = "python"
_LICENCE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)
_AUDITWHEEL_HASH = re.compile(r"-[0-9a-f]{8}$")


@dataclass
class Component:
    name: str
    licence: str
    texts: list[Path]
    modules: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)


# ---- what the bundle ships ---------------------------------------------------------


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def shipped_libraries(bundle: Path) -> list[str]:
    """Every ELF file of the bundle (the executable too), relative to it; symlinks are not copies."""
    return sorted(
        str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and not p.is_symlink() and _is_elf(p)
    )


def shipped_modules(bundle: Path) -> set[str]:
    """Top-level module names: the PYZ archive, the embedded scripts, the extension modules."""
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(bundle / "sandra"))
    names = {n for n, entry in archive.toc.items() if entry[-1] in ("m", "s")}
    names |= set(archive.open_embedded_archive("PYZ.pyz").toc)
    for rel in shipped_libraries(bundle):
        first = rel.removeprefix("_internal/").split("/", 1)[0]
        if first != "python3.11" and (".cpython-" in rel or rel.endswith(".abi3.so")):
            names.add(first.split(".", 1)[0])
    return {n.split(".", 1)[0] for n in names}


def library_stem(filename: str) -> str:
    """libavcodec-5e6b81c2.so.62.28.102 -> libavcodec; libgfortran-040039e1-0352e75f.so.5 -> libgfortran."""
    stem = filename.split(".so", 1)[0]
    while _AUDITWHEEL_HASH.search(stem):
        stem = _AUDITWHEEL_HASH.sub("", stem)
    return stem


# ---- where each licence comes from ----------------------------------------------------


def _text(ref: str) -> Path:
    return COMMON_LICENSES / ref.removeprefix("common:") if ref.startswith("common:") else REPO / ref


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _project_modules() -> set[str]:
    return {p.parent.name for p in REPO.glob("*/__init__.py")} | {"main", "rthook_bundled_libs"}


def _dist_licence_files(dist: md.Distribution) -> list[Path]:
    found = []
    for f in dist.files or []:
        in_metadata = ".dist-info/" in str(f) or ".egg-info/" in str(f)
        if in_metadata and _LICENCE_FILE.search(f.name) and f.suffix not in (".py", ".pyc"):
            found.append(Path(dist.locate_file(f)))
    return found


def _python_licence() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"


def _module_owners(module: str, dists: dict[str, list[str]]) -> list[str]:
    """The components a top-level module belongs to (several for a namespace like jaraco)."""
    if module in _project_modules():
        return [PROJECT]
    if module.startswith("_sysconfigdata") or module in sys.stdlib_module_names:
        return [PYTHON]
    # PyInstaller's bootloader modules and runtime hooks travel in every bundle.
    if module.startswith(("pyimod", "pyiboot", "pyi_rth", "_pyi_rth")):
        return ["pyinstaller"]
    owners = dists.get(module)
    if not owners:
        raise LookupError(f"no installed distribution provides the module {module!r}")
    return sorted({_normalise(o) for o in owners})


def _licence_name(dist: md.Distribution) -> str:
    meta = dist.metadata
    classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return meta.get("License-Expression") or meta.get("License") or ", ".join(classifiers)


def _debian_packages(names: set[str]) -> dict[str, str]:
    """Library file name -> the Debian package that installed it (from dpkg's file lists;
    one pass over them instead of a slow `dpkg -S` per name)."""
    owners: dict[str, str] = {}
    for listing in sorted(DPKG_INFO.glob("*.list")):
        package = listing.stem.split(":")[0]
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            name = line.rsplit("/", 1)[-1]
            if name in names:
                owners.setdefault(name, package)
    return owners


def plan(bundle: Path) -> dict[str, Component]:
    """Every shipped module and library, grouped into components with their licence texts."""
    table = tomllib.loads(THIRD_PARTY.read_text(encoding="utf-8"))
    dists = md.packages_distributions()
    components: dict[str, Component] = {}

    def component(name: str) -> Component:
        if name in components:
            return components[name]
        if name in table["distributions"]:
            entry = table["distributions"][name]
            made = Component(name, entry["licence"], [_text(t) for t in entry["texts"]])
        elif name in table["libraries"]:
            entry = table["libraries"][name]
            made = Component(name, entry["licence"], [_text(t) for t in entry["texts"]])
        elif name == PYTHON:
            made = Component(name, "PSF-2.0", [_python_licence()])
        else:
            dist = md.distribution(name)
            texts = _dist_licence_files(dist)
            if not texts:
                raise LookupError(f"{name} ships no licence file: add it to {THIRD_PARTY.name}")
            made = Component(name, _licence_name(dist), texts)
        components[name] = made
        return made

    for module in sorted(shipped_modules(bundle)):
        for owner in _module_owners(module, dists):
            component(owner).modules.add(module)

    vendored = {n: key for key, entry in table["libraries"].items() for n in entry["names"]}
    system: list[str] = []
    for rel in shipped_libraries(bundle):
        parts = rel.removeprefix("_internal/").split("/")
        name, stem = parts[-1], library_stem(parts[-1])
        if stem in vendored:
            component(vendored[stem]).files.add(rel)
        elif parts[0] == "python3.11" or name.startswith("libpython"):
            component(PYTHON).files.add(rel)
        elif rel == "sandra":
            component("pyinstaller").files.add(rel)
        elif len(parts) > 1:
            top = parts[0].removesuffix(".libs")
            owner = component(_module_owners(top, dists)[0])
            if parts[0].endswith(".libs") and not _names_library(owner, stem):
                raise LookupError(f"{rel}: vendored by {owner.name}, whose licence does not name it; add it to {THIRD_PARTY.name}")
            owner.files.add(rel)
        elif ".cpython-" in name:
            component(_module_owners(name.split(".", 1)[0], dists)[0]).files.add(rel)
        else:
            system.append(rel)
    owners = _debian_packages({Path(rel).name for rel in system})
    for rel in system:
        package = owners.get(Path(rel).name)
        if package is None:
            raise LookupError(f"{rel}: no Debian package owns it, so its licence is unknown")
        entry = components.setdefault(
            package, Component(package, "see copyright", [Path("/usr/share/doc") / package / "copyright"])
        )
        entry.files.add(rel)
    return components


def _names_library(owner: Component, stem: str) -> bool:
    needle = stem.rstrip("_-0123456789").lower()  # libscipy_openblas64_ -> libscipy_openblas
    return any(needle in t.read_text(encoding="utf-8", errors="replace").lower() for t in owner.texts)


# ---- the licences folder ------------------------------------------------------------------


def write(bundle: Path) -> Path:
    out = bundle / "licenses"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # Debian's copyright files point at these full texts instead of repeating them.
    shutil.copytree(COMMON_LICENSES, out / "common-licenses")
    manifest = []
    for comp in sorted(plan(bundle).values(), key=lambda c: c.name):
        folder = out / comp.name
        folder.mkdir()
        copied = []
        for text in comp.texts:
            target = folder / text.name
            if target.exists():  # two files named LICENSE: keep both
                target = folder / f"{text.parent.name}-{text.name}"
            shutil.copyfile(text.resolve(), target)
            copied.append(str(target.relative_to(out)))
        manifest.append(
            {
                "component": comp.name,
                "licence": comp.licence,
                "texts": copied,
                "modules": sorted(comp.modules),
                "files": sorted(comp.files),
            }
        )
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return out


def load_manifest(bundle: Path) -> list[dict]:
    return json.loads((bundle / "licenses" / "MANIFEST.json").read_text(encoding="utf-8"))


def check(bundle: Path, manifest: list[dict]) -> list[str]:
    """What the licences folder gets wrong about the bundle; empty when it is right."""
    problems = []
    licences = bundle / "licenses"
    covered_files = {f for c in manifest for f in c["files"]}
    covered_modules = {m for c in manifest for m in c["modules"]}
    problems += [f"library without a licence entry: {f}" for f in shipped_libraries(bundle) if f not in covered_files]
    problems += [f"module without a licence entry: {m}" for m in sorted(shipped_modules(bundle) - covered_modules)]
    problems += [f"licence entry for a file not in the bundle: {f}" for f in sorted(covered_files) if not (bundle / f).is_file()]
    for comp in manifest:
        paths = [licences / text for text in comp["texts"]]
        problems += [f"{comp['component']}: licence text missing or empty: {p}" for p in paths if not p.is_file() or not p.stat().st_size]
        # A pointer such as "dual licensed, see the other files" is fine beside the texts,
        # but a component whose texts add up to less than any real licence has none.
        if sum(p.stat().st_size for p in paths if p.is_file()) < 200:
            problems.append(f"{comp['component']}: no real licence text")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("bundle", type=Path, help="the one-folder bundle, e.g. dist/sandra")
    args = parser.parse_args(argv)
    if args.action == "write":
        out = write(args.bundle)
        print(f"licenses: {len(load_manifest(args.bundle))} components written to {out}")
    problems = check(args.bundle, load_manifest(args.bundle))
    for p in problems:
        print(f"licenses: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
