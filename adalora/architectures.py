"""Which linear layers each architecture adapts, and which modules form its task head.

Targets are explicit per architecture (never a bare ``dense`` suffix, which would also
catch DeBERTa's ``pooler.dense``, the PEFT default's 73rd matrix). Every adapted matrix gets
a (layer, weight type) label so rank patterns can be drawn as the paper's Figure 3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

# Order of the weight types in heatmaps (rows), as in the paper's Figure 3.
ENCODER_WEIGHT_TYPES = ("W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2")


@dataclass(frozen=True)
class Architecture:
    name: str
    patterns: tuple[tuple[re.Pattern[str], str], ...]
    head_prefixes: tuple[str, ...]

    def weight_type(self, module_name: str) -> tuple[int, str] | None:
        """(layer index, weight type) of an adapted linear, or None if it is not a target."""
        for pattern, wtype in self.patterns:
            match = pattern.fullmatch(module_name)
            if match:
                return int(match.group(1)), wtype
        return None


def _compile(rows: list[tuple[str, str]]) -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(r"(?:.*\.)?" + pat), wtype) for pat, wtype in rows)


def _encoder_rows(q: str, k: str, v: str) -> list[tuple[str, str]]:
    layer = r"encoder\.layer\.(\d+)\."
    return [
        (layer + r"attention\.self\." + q, "W_q"),
        (layer + r"attention\.self\." + k, "W_k"),
        (layer + r"attention\.self\." + v, "W_v"),
        (layer + r"attention\.output\.dense", "W_o"),
        (layer + r"intermediate\.dense", "W_f1"),
        (layer + r"output\.dense", "W_f2"),
    ]


def _bart_rows() -> list[tuple[str, str]]:
    rows = []
    for stack, attn, prefix in (
        ("encoder", "self_attn", "enc."),
        ("decoder", "self_attn", "dec.self."),
        ("decoder", "encoder_attn", "dec.cross."),
    ):
        for proj, wtype in (("q_proj", "W_q"), ("k_proj", "W_k"), ("v_proj", "W_v"), ("out_proj", "W_o")):
            rows.append((rf"{stack}\.layers\.(\d+)\.{attn}\.{proj}", prefix + wtype))
    for stack, prefix in (("encoder", "enc."), ("decoder", "dec.")):
        rows.append((rf"{stack}\.layers\.(\d+)\.fc1", prefix + "W_f1"))
        rows.append((rf"{stack}\.layers\.(\d+)\.fc2", prefix + "W_f2"))
    return rows


ARCHITECTURES: dict[str, Architecture] = {
    "deberta-v2": Architecture(
        "deberta-v2",
        _compile(_encoder_rows("query_proj", "key_proj", "value_proj")),
        ("pooler.", "classifier.", "qa_outputs."),
    ),
    "bert": Architecture(
        "bert",
        _compile(_encoder_rows("query", "key", "value")),
        ("bert.pooler.", "classifier.", "qa_outputs."),
    ),
    # BART's lm_head is tied to the shared embedding, so its generation head trains nothing.
    "bart": Architecture("bart", _compile(_bart_rows()), ("classification_head.", "qa_outputs.")),
}


def architecture_of(model: nn.Module) -> Architecture:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture {model_type!r}; supported: {sorted(ARCHITECTURES)}."
            " Add its target patterns and head prefixes to adalora/architectures.py"
        )
    return ARCHITECTURES[model_type]


def type_matches(weight_type: str, targets: tuple[str, ...]) -> bool:
    """``W_q`` selects every query projection (``enc.W_q``, ``dec.cross.W_q``, ...)."""
    short = weight_type.rsplit(".", 1)[-1]
    return weight_type in targets or short in targets


def find_targets(model: nn.Module, arch: Architecture, targets: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """Linear modules to adapt, name → (layer, weight type); an empty match is an error."""
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        label = arch.weight_type(name)
        if label is not None and type_matches(label[1], targets):
            found[name] = label
    if not found:
        raise ValueError(f"targets {list(targets)} match no linear layer of this {arch.name} model")
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
