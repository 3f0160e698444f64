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
be an empty directory (``--overwrite`` replaces it); the export is written beside it and moved
in when complete, with the umask's permissions (``experiments.run_paths``). Exit status: see
:func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from adalora.architectures import replace_module
from adalora.layers import LoRALinear, SVDLinear
from adalora.methods import METHODS
from experiments.models import load_tokenizer, package_model_dir
from experiments.results import read_result
from experiments.run_paths import RunPathError, check_output, find_run, staged_output
from experiments.weights import LoadedRun, ModelSpec, WeightsError, build_base, load_run, method_owned_names

PEFT_TASK_TYPES = {"sequence_classification": "SEQ_CLS", "question_answering": "QUESTION_ANS",
                   "seq2seq_lm": "SEQ_2_SEQ_LM"}
PEFT_PREFIX = "base_model.model."
SUITE_FORMAT_HINT = ("it stays in the suite's own format: <run_dir>/weights/*.safetensors, loaded with "
                     "experiments.weights.load_run(run_dir) and evaluated with python -m experiments.evaluate")


class ExportError(ValueError):
    """The run cannot be exported in the requested format; the message says what can be done."""


def head_modules(model: nn.Module, loaded: LoadedRun) -> list[str]:
    """The task head's top-level modules present in this model (PEFT's ``modules_to_save``)."""
    modules = dict(model.named_modules())
    return [p.rstrip(".") for p in loaded.handle.arch.head_prefixes if p.rstrip(".") in modules]


def _head_tensors(loaded: LoadedRun, heads: list[str]) -> dict[str, torch.Tensor]:
    owned = set(method_owned_names(loaded.handle))
    out = {}
    for name, param in loaded.model.named_parameters():
        if name in owned or not param.requires_grad:
            continue
        if not any(name.startswith(h + ".") for h in heads):
            raise ExportError(f"trained parameter {name} is neither the method's nor the task head's; "
                              "PEFT's LoRA/AdaLoRA cannot hold it")
        out[PEFT_PREFIX + name] = param.detach().clone()
    return out


def _base_location(spec: ModelSpec) -> str | None:
    source = spec.model.get("source")
    if source == "hub":
        return spec.model.get("pretrained")
    if source == "package":
        return str(package_model_dir(spec.model["package"]))
    return None  # tiny: random init, rebuilt from the seed (--with-base writes it)


def peft_adapter(loaded: LoadedRun, total_steps: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config, adapter state dict) of a LoRA- or AdaLoRA-kind run."""
    handle, spec = loaded.handle, loaded.spec
    if handle.kind not in ("lora", "adalora"):
        raise ExportError(
            f"method {handle.name!r} ({handle.kind}) has no PEFT LoRA/AdaLoRA form; "
            + ("use --format merged for a plain transformers checkpoint, or " if handle.kind in ("bitfit", "full_ft") else "")
            + SUITE_FORMAT_HINT
        )
    heads = head_modules(loaded.model, loaded)
    tensors = _head_tensors(loaded, heads)
    settings = handle.settings
    config: dict[str, Any] = {
        "task_type": PEFT_TASK_TYPES[spec.head], "target_modules": sorted(handle.adapted),
        "modules_to_save": heads or None, "lora_alpha": settings.alpha, "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "base_model_name_or_path": _base_location(spec),
    }
    if handle.kind == "lora":
        ranks = {m.r for m in handle.adapted.values()}
        if len(ranks) != 1:
            raise ExportError(f"LoRA layers with different ranks {sorted(ranks)}; LoraConfig needs rank_pattern")
        config.update(peft_type="LORA", r=ranks.pop(), use_rslora=False)
        for name, module in handle.adapted.items():
            assert isinstance(module, LoRALinear)
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()
        return config, tensors
    rank_pattern = {}
    for name, module in handle.adapted.items():
        assert isinstance(module, SVDLinear)
        keep = module.lora_E.detach().view(-1) != 0
        rank_pattern[f"{name}.lora_E"] = keep.tolist()
        tensors[f"{PEFT_PREFIX}{name}.lora_A"] = module.lora_A.detach()[keep].clone()
        tensors[f"{PEFT_PREFIX}{name}.lora_E"] = module.lora_E.detach()[keep].clone()
        tensors[f"{PEFT_PREFIX}{name}.lora_B"] = module.lora_B.detach()[:, keep].clone()
    config.update(
        peft_type="ADALORA", init_r=settings.init_r, target_r=settings.target_r, tinit=settings.tinit,
        tfinal=settings.tfinal, deltaT=settings.deltaT, beta1=settings.beta1, beta2=settings.beta2,
        orth_reg_weight=settings.orth_reg_weight, total_step=total_steps, rank_pattern=rank_pattern,
    )
    return config, tensors


def variant_note(run_dir: str | os.PathLike) -> str | None:
    """For an ablation variant: the exported adapter computes its outputs, not its training procedure."""
    name = ((read_result(run_dir) or {}).get("run") or {}).get("method")
    kind = METHODS.get(name, (None, None))[0]
    if name in ("lora", "adalora") or kind not in ("lora", "adalora"):
        return None
    return (f"note: {name!r} is a {kind} variant; PEFT computes its outputs exactly, but training it further "
            f"with PEFT would follow plain {kind}, not {name}")


def export_peft(run_dir: str | os.PathLike, out: str | os.PathLike, which: str = "final", with_base: bool = False,
                overwrite: bool = False) -> Path:
    """Write the PEFT adapter directory of a run; returns ``out`` (written whole or not at all)."""
    record = read_result(run_dir) or {}
    loaded = load_run(run_dir, which)
    total_steps = (record.get("train") or {}).get("total_steps")
    if loaded.handle.kind == "adalora" and not total_steps:
        raise ExportError(f"{run_dir}/result.json records no train.total_steps (AdaLoraConfig.total_step)")
    config, tensors = peft_adapter(loaded, total_steps)
    out = Path(out)
    with staged_output(out, overwrite, keep=Path(run_dir)) as stage:
        if with_base:
            _save_pretrained(build_base(loaded.spec), loaded.spec, stage / "base_model")
            config["base_model_name_or_path"] = str(out.resolve() / "base_model")  # where it will be
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(stage / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        (stage / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def merged_model(loaded: LoadedRun) -> nn.Module:
    """The trained model with ΔW folded into each adapted linear layer (in place; plain transformers modules)."""
    handle = loaded.handle
    if handle.kind == "adapter":
        raise ExportError(f"method {handle.name!r} adds bottleneck layers that cannot be merged into the base "
                          f"weights; {SUITE_FORMAT_HINT}")
    with torch.no_grad():
        for name, module in handle.adapted.items():
            base = module.base_layer
            base.weight.add_(module.delta_weight().to(base.weight.dtype))
            replace_module(loaded.model, name, base)
    for param in loaded.model.parameters():
        param.requires_grad_(True)
    return loaded.model


def _save_pretrained(model: nn.Module, spec: ModelSpec, out: Path) -> None:
    model.save_pretrained(out)
    load_tokenizer(spec.model).save_pretrained(out)


def export_merged(run_dir: str | os.PathLike, out: str | os.PathLike, which: str = "final",
                  overwrite: bool = False) -> Path:
    """Write the merged transformers checkpoint of a run; returns ``out`` (written whole or not at all)."""
    loaded = load_run(run_dir, which)
    model = merged_model(loaded)
    with staged_output(out, overwrite, keep=Path(run_dir)) as stage:
        _save_pretrained(model, loaded.spec, stage)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: exported; 2: the run cannot be exported as asked (the message says why and what
    to do: no such run, several runs, --out in the way, no or unreadable weights, a format the method
    has no form in); 3: an unexpected error (its traceback is printed)."""
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
    except (ExportError, WeightsError, RunPathError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - exit 3, not Python's 1: a bug is not a refused export
        traceback.print_exc()
        return 3
    print(f"[export] {args.format} ({args.which} weights) of {run_dir} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
