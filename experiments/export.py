"""Export a run's trained adapter for other stacks: ``python -m experiments.export <run_dir> --format ...``.

``--format peft``: a PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``)
for ``PeftModel.from_pretrained(base_model, out)``. Written from the weights alone; peft itself is
not needed here (the tests load the result with it). The conventions it follows (peft 0.21):

* LoRA: ``LoraConfig`` with ``r``, ``lora_alpha`` (scaling α/r as ours), keys ``<module>.lora_A.weight``.
* AdaLoRA: ``AdaLoraConfig`` with ``init_r``, ``target_r``, ``lora_alpha``, the schedule and
  ``total_step``, and ``rank_pattern`` = ``{"<module>.lora_E": [bool] * init_r}`` (kept triplets,
  λ ≠ 0). As PEFT's own ``save_pretrained`` does, A, E and B are cut to the kept triplets; on load
  PEFT resizes each layer to them (rank 0 allowed) and keeps ``ranknum`` = init_r, so the scale
  stays α/(init_r + 1e-5), ours. ``r`` is left at PEFT's default: AdaLoRA ignores it.
* The task head (DeBERTa's pooler + classifier, BERT's pooler + classifier, BART's
  classification head, ``qa_outputs``) goes into ``modules_to_save``; its tensors are stored
  under the plain module names, as PEFT stores a ``modules_to_save`` copy.

Every LoRA-kind and AdaLoRA-kind method exports, ablation variants included: their layers
compute exactly what PEFT's layers compute (Prune-LoRA's 0/1 gates are λ values); only their
training procedure differs, which the exported config cannot describe (a note says so).
Bottleneck adapters (Houlsby, Pfeiffer) have no PEFT form with these weights: they stay in the
suite's own format (``weights/*.safetensors``, ``experiments.weights.load_run``).

``--format merged``: the base model with ΔW merged into each adapted weight (LoRA, AdaLoRA, and
BitFit / full FT as trained), saved with ``save_pretrained`` with its tokenizer: a plain
transformers checkpoint.

``run_dir`` may also be a directory with exactly one run below it. ``--out`` must not exist or
be an empty directory (``--overwrite`` replaces it), and must be neither a symlink nor inside a
run directory; the export is written beside it and moved in when complete, with the umask's
permissions (``experiments.run_paths``). The weights file's spec is data: the model package and
method module it names are imported only when allowed (docs/reliability.md, "Trust boundary").
Exit status: see :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adalora import trust
from adalora.atomic import NoSpaceLeft
from adalora.methods import ExportError, MethodConfigError, resolve_kind
from adalora.methods.base import write_peft_adapter
from experiments.models import _location as model_location
from experiments.models import load_tokenizer
from experiments.results import RESULT_FILE
from experiments.run_paths import RunPathError, check_output, find_run, staged_output
from experiments.tasks import peft_task_type_for_head
from experiments.weights import (
    LoadedRun,
    ModelSpec,
    WeightsError,
    build_base,
    load_run,
    read_record,
    weights_path,
)

FORMAT_NAMES = {"peft": "PEFT", "merged": "merged"}
# What main() answers with one line and exit 2 (the message names the file, key or disk and the fix).
REFUSED = (ExportError, WeightsError, RunPathError, NoSpaceLeft, trust.UntrustedCode, MethodConfigError)
SUITE_FORMAT_HINT = ("it stays in the suite's own format: <run_dir>/weights/*.safetensors, loaded with "
                     "experiments.weights.load_run(run_dir) and evaluated with python -m experiments.evaluate")


def _base_location(spec: ModelSpec) -> str | None:
    """Where the base model's ``from_pretrained`` folder is: the hub id, the package's folder, or for a
    GGUF file in a package the dequantised folder the run loaded (the package itself is never imported)."""
    if spec.model.get("source") == "tiny":
        return None  # random init, rebuilt from the seed (--with-base writes it)
    return model_location(spec.model)


def _refuse(loaded: LoadedRun, fmt: str) -> None:
    """An :class:`ExportError` naming what the method can do instead, unless it exports as ``fmt``."""
    handle = loaded.handle
    if fmt in handle.export_formats:
        return
    other = [f for f in handle.export_formats if f != fmt]
    raise ExportError(f"method {handle.name!r} ({handle.kind}) has no {FORMAT_NAMES[fmt]} form; "
                      + (f"use --format {other[0]}, or " if other else "") + SUITE_FORMAT_HINT)


def peft_adapter(loaded: LoadedRun, total_steps: int | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config, adapter state dict) of a run whose kind has a PEFT form (the kind writes them)."""
    _refuse(loaded, "peft")
    if total_steps:
        loaded.handle.set_total_steps(total_steps)
    try:
        config, tensors = loaded.handle.peft_adapter(peft_task_type_for_head(loaded.spec.head))
    except MethodConfigError as err:
        raise ExportError(f"{err} (result.json records no train.total_steps)") from err
    config["base_model_name_or_path"] = _base_location(loaded.spec)
    return config, tensors


def variant_note(run_dir: str | os.PathLike) -> str | None:
    """For an ablation variant: the exported adapter computes its outputs, not its training procedure."""
    record = read_record(run_dir)
    method = (record.get("config") or {}).get("method") or {"name": (record.get("run") or {}).get("method")}
    try:
        with trust.reading(str(Path(run_dir) / RESULT_FILE)):
            name, kind, defaults = resolve_kind(method)
    except MethodConfigError:
        return None
    # a registered variant (its defaults define it) trains unlike its kind; a method config of its own
    # (e.g. a `peft` row: PEFT's config itself) is what the adapter says
    if name == kind.kind or not defaults or "peft" not in kind.export_formats:
        return None
    return (f"note: {name!r} is a {kind.kind} variant; PEFT computes its outputs exactly, but training it further "
            f"with PEFT would follow plain {kind.kind}, not {name}")


def export_peft(run_dir: str | os.PathLike, out: str | os.PathLike, which: str = "final", with_base: bool = False,
                overwrite: bool = False) -> Path:
    """Write the PEFT adapter directory of a run; returns ``out`` (written whole or not at all)."""
    record = read_record(run_dir)
    out = Path(out)
    with trust.reading(str(weights_path(run_dir, which))):  # the base model's package is the weights' word
        loaded = load_run(run_dir, which)
        config, tensors = peft_adapter(loaded, (record.get("train") or {}).get("total_steps"))
        with staged_output(out, overwrite, keep=Path(run_dir)) as stage:
            if with_base:
                _save_pretrained(build_base(loaded.spec), loaded.spec, stage / "base_model")
                config["base_model_name_or_path"] = str(out.resolve() / "base_model")  # where it will be
            write_peft_adapter(stage, config, tensors)
    return out


def merged_model(loaded: LoadedRun) -> nn.Module:
    """The trained model with ΔW folded into each adapted linear layer (in place; plain transformers modules)."""
    _refuse(loaded, "merged")
    return loaded.handle.merged_model()


def _save_pretrained(model: nn.Module, spec: ModelSpec, out: Path) -> None:
    model.save_pretrained(out)
    load_tokenizer(spec.model).save_pretrained(out)


def export_merged(run_dir: str | os.PathLike, out: str | os.PathLike, which: str = "final",
                  overwrite: bool = False) -> Path:
    """Write the merged transformers checkpoint of a run; returns ``out`` (written whole or not at all)."""
    with trust.reading(str(weights_path(run_dir, which))):  # the base model's package is the weights' word
        loaded = load_run(run_dir, which)
        model = merged_model(loaded)
        with staged_output(out, overwrite, keep=Path(run_dir)) as stage:
            _save_pretrained(model, loaded.spec, stage)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: exported; 2: the run cannot be exported as asked (the message says why and what
    to do: no such run, several runs, --out in the way (a file, a symlink, inside a run directory,
    not empty), no, unreadable or another run's weights, a module or package they name that is not
    allowed, a format the method has no form in, a full disk); 3: an unexpected error (traceback)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory, or a directory with exactly one run below it")
    parser.add_argument("--format", choices=("peft", "merged"), required=True)
    parser.add_argument("--out", type=Path, required=True,
                        help="directory to write; must not exist or be empty (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of an existing --out")
    parser.add_argument("--which", choices=("final", "best"), default="final", help="which saved weights (default final)")
    parser.add_argument("--with-base", action="store_true",
                        help="peft: also write the base model to <out>/base_model (tiny models are random-init)")
    args = parser.parse_args(argv)
    try:
        run_dir = find_run(args.run_dir)
        check_output(args.out, args.overwrite, keep=run_dir)  # before the model is rebuilt
        if args.format == "peft":
            export_peft(run_dir, args.out, args.which, args.with_base, args.overwrite)
            note = variant_note(run_dir)
            if note:
                print(note)
        else:
            export_merged(run_dir, args.out, args.which, args.overwrite)
    except REFUSED as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - exit 3, not Python's 1: a bug is not a refused export
        traceback.print_exc()
        return 3
    print(f"[export] {args.format} ({args.which} weights) of {run_dir} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
