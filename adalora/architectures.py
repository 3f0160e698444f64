"""The architecture contract: which layers a backbone adapts, how they are labelled, and its task head.

An architecture is a registered :class:`Architecture` (docs/architectures.md). It declares

* its targets: a regular expression per adapted matrix, whose group 1 is the layer index, and the
  matrix's weight type (``W_q`` ... ``W_f2``; ``dec.cross.W_q`` in an encoder-decoder). Targets are
  explicit (never a bare ``dense`` suffix, which would also catch DeBERTa's ``pooler.dense``, the PEFT
  default's 73rd matrix), and every matrix gets a (layer, weight type) label so rank patterns draw as
  the paper's Figure 3, rows in the order of :attr:`Architecture.weight_types`;
* the task-head prefixes, which train but are not counted (the paper's accounting);
* the layer classes it adapts: ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2), which stores its
  weight as (in, out): :func:`fan_in_fan_out`;
* its fused projections: GPT-2's ``c_attn`` is one matrix holding W_q, W_k and W_v, labelled as one
  weight type (``W_qkv``) that the paper's names of its parts select and that heatmaps name as fused;
* how a tiny, randomly initialised model of it is configured (``experiments/models.py``).

The paper's six weight types select their counterparts on every built-in backbone (``aliases``: the
Llama family's ``W_gate`` and ``W_up`` are its ``W_f1``, ``W_down`` its ``W_f2``), so the paper's
targets and budget levels mean "every projection" everywhere.

Architectures come from three places, as method kinds do: the built-ins below, a model config's
``arch_module`` (imported through :func:`adalora.trust.import_named_module`; the module calls
:func:`register_architecture`), and installed packages exposing an entry point in the group
``adalora.architectures``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adalora.plugins import entry_point_objects, import_config_module

if TYPE_CHECKING:  # the registry is data that figures read too (heatmap rows): torch is imported where layers are
    from torch import nn

ENTRY_POINT_GROUP = "adalora.architectures"
DOCS = "docs/architectures.md"

# The paper's six weight types (its Figure 3 rows): what the paper's methods target by default.
ENCODER_WEIGHT_TYPES = ("W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2")
LLAMA_WEIGHT_TYPES = ("W_q", "W_k", "W_v", "W_o", "W_gate", "W_up", "W_down")
# The Llama family's gated MLP in the paper's terms: gate and up read the block input, down writes back.
GATED_MLP_ALIASES = {"W_gate": ("W_f1",), "W_up": ("W_f1",), "W_down": ("W_f2",)}


class ArchitectureError(ValueError):
    """An unknown architecture, or a model the named one does not describe; the message says the fix."""


@functools.cache
def adapted_layer_classes() -> tuple[type[nn.Module], ...]:
    """``nn.Linear`` and, where transformers is installed, its ``Conv1D`` (GPT-2's projections)."""
    from torch import nn

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is an optional dependency of the core
        return (nn.Linear,)
    return (nn.Linear, Conv1D)


def fan_in_fan_out(layer: nn.Module) -> bool:
    """Whether ``layer`` stores its weight as (in, out) (transformers' ``Conv1D``), not ``nn.Linear``'s (out, in)."""
    from torch import nn

    return not isinstance(layer, nn.Linear) and isinstance(layer, adapted_layer_classes())


def layer_dims(layer: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of an adapted layer, whichever way round it stores its weight."""
    d0, d1 = layer.weight.shape
    return (d0, d1) if fan_in_fan_out(layer) else (d1, d0)


@dataclass(frozen=True)
class Architecture:
    """One backbone family. Subclass it to override a hook; an instance is what is registered.

    ``name``: the registry key (``model.arch`` in a model config). ``model_types``: the
    ``config.model_type`` values it describes (default: ``name``). ``rows``: (pattern, weight type);
    a pattern is matched against the end of a module name and its group 1 is the layer index.
    ``weight_types``: the labels in heatmap order (default: the rows' order, first appearance).
    ``fused``: label -> the projections one matrix holds. ``aliases``: label -> the paper's
    weight types that also select it. ``layer_classes``: the module classes that may be targets
    (empty: :func:`adapted_layer_classes`, looked up when a model is matched, so that registering an
    architecture imports neither torch nor transformers).

    Model building (``experiments/models.py``): ``config_class`` (a transformers config class name)
    and ``tiny_defaults`` for tiny models (``tiny_follows``: a size that follows another one unless
    set, DeBERTa's pooler width its hidden width; ``tiny_special_ids``: bos/eos from the tokenizer); ``classifier_dropout_field`` (None: the heads have no
    dropout of their own, GPT-2's and the Llama family's ``score``); ``encoder_decoder`` (a
    ``seq2seq_lm`` head, start/end token ids for the tiny config); ``token_type_ids`` (whether the
    forward takes them). ``output_dropout``: the attribute of an output projection's parent that holds
    the dropout module applied right after it (BERT's ``dropout``), where adapters go after it; None
    where no such module follows the projection (T5 applies its FFN dropout *before* ``wo``).
    """

    name: str
    rows: tuple[tuple[str, str], ...]
    head_prefixes: tuple[str, ...]
    model_types: tuple[str, ...] = ()
    weight_types: tuple[str, ...] = ()
    fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    layer_classes: tuple[type[nn.Module], ...] = ()
    config_class: str | None = None
    tiny_defaults: Mapping[str, Any] = field(default_factory=dict)
    tiny_follows: Mapping[str, str] = field(default_factory=dict)
    tiny_special_ids: bool = True
    classifier_dropout_field: str | None = "classifier_dropout"
    encoder_decoder: bool = False
    token_type_ids: bool = False
    output_dropout: str | None = "dropout"

    def __post_init__(self) -> None:
        if not self.name or not self.rows:
            raise TypeError("an Architecture needs a name and at least one (pattern, weight type) row")
        set_ = functools.partial(object.__setattr__, self)
        set_("model_types", tuple(self.model_types) or (self.name,))
        set_("weight_types", tuple(self.weight_types) or tuple(dict.fromkeys(wt for _, wt in self.rows)))
        set_("layer_classes", tuple(self.layer_classes))
        set_("_patterns", tuple((re.compile(r"(?:.*\.)?" + pat), wtype) for pat, wtype in self.rows))

    # ------------------------------------------------------------------ labelling the model's layers
    def weight_type(self, module_name: str) -> tuple[int, str] | None:
        """(layer index, weight type) of an adapted matrix, or None if it is not a target."""
        for pattern, wtype in self._patterns:
            match = pattern.fullmatch(module_name)
            if match:
                return int(match.group(1)), wtype
        return None

    def selects(self, weight_type: str, targets: Iterable[str]) -> bool:
        """Whether ``targets`` select a matrix labelled ``weight_type``: its label, its short form
        (``W_q`` selects ``enc.W_q`` and ``dec.cross.W_q``), a projection a fused matrix holds, or a
        paper weight type it is an alias of."""
        short = weight_type.rsplit(".", 1)[-1]
        names = {weight_type, short, *self.fused.get(short, ()), *self.aliases.get(short, ())}
        return not names.isdisjoint(targets)

    def is_target_layer(self, module: nn.Module) -> bool:
        """Whether ``module`` is of a class this architecture adapts."""
        return isinstance(module, self.layer_classes or adapted_layer_classes())

    def display_label(self, weight_type: str) -> str:
        """A weight type as figures name it: a fused projection says what it holds."""
        parts = self.fused.get(weight_type.rsplit(".", 1)[-1])
        return f"{weight_type} (fused {', '.join(parts)})" if parts else weight_type

    # ------------------------------------------------------------------ building a tiny model
    def tiny_config(self, vocab: Mapping[str, int | None], overrides: Mapping[str, Any]) -> Any:
        """The transformers config of a tiny model: ``tiny_defaults`` under the tokenizer's ids
        (``vocab``: ``vocab_size``, ``pad_token_id``, ``bos_token_id``, ``eos_token_id``) under
        ``overrides``."""
        import transformers

        if self.config_class is None:
            raise ArchitectureError(f"architecture {self.name!r} declares no config_class, so it has no tiny models; "
                                    "use model.source=hub (or set config_class in its registration)")
        ids: dict[str, Any] = {"vocab_size": vocab["vocab_size"], "pad_token_id": vocab["pad_token_id"]}
        if self.tiny_special_ids:  # else a default such as GPT-2's 50256 lies outside the tiny vocabulary
            ids.update(bos_token_id=vocab["bos_token_id"], eos_token_id=vocab["eos_token_id"])
        if self.encoder_decoder:
            ids.update(decoder_start_token_id=self.decoder_start_token_id(vocab),
                       forced_eos_token_id=vocab["eos_token_id"])
        kwargs = {**self.tiny_defaults, **ids, **overrides}
        kwargs.update({key: kwargs[source] for key, source in self.tiny_follows.items() if key not in overrides})
        return getattr(transformers, self.config_class)(**kwargs)

    def decoder_start_token_id(self, vocab: Mapping[str, int | None]) -> int | None:
        """BART starts decoding at ``</s>`` (its eos); T5 overrides this with pad."""
        return vocab["eos_token_id"]


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture | type[Architecture]) -> Any:
    """Register an :class:`Architecture` instance (or a subclass with no required arguments, as a
    class decorator) under its name. The same one twice is harmless; another under a taken name is an
    error. Returns its argument."""
    instance = arch() if isinstance(arch, type) else arch
    if not isinstance(instance, Architecture):
        raise TypeError(f"{arch!r} is not an adalora.architectures.Architecture")
    known = _ARCHITECTURES.get(instance.name)
    if known is not None and known != instance:
        raise ValueError(f"architecture {instance.name!r} is already registered by {type(known).__module__}")
    _ARCHITECTURES[instance.name] = instance
    return arch


def _load_entry_points() -> None:
    """The ``adalora.architectures`` entry points; one that gives an Architecture registers it."""
    for loaded in entry_point_objects(ENTRY_POINT_GROUP):
        if isinstance(loaded, Architecture) or (isinstance(loaded, type) and issubclass(loaded, Architecture)):
            register_architecture(loaded)


def registered_architectures() -> list[str]:
    """Names of the registered architectures (entry points included), sorted."""
    _load_entry_points()
    return sorted(_ARCHITECTURES)


def get_architecture(name: str | None, module: str | None = None) -> Architecture:
    """The registered architecture ``name`` (a name or a ``model_type`` it declares); an unknown one is
    an error listing the registered ones."""
    import_config_module(module, "model.arch_module", ArchitectureError)
    found = _lookup(name)
    if found is None:
        _load_entry_points()
        found = _lookup(name)
    if found is None:
        raise ArchitectureError(
            f"unsupported architecture {name!r}: not registered; registered: {registered_architectures()}. Register your "
            f"own with adalora.architectures.register_architecture in a module named by model.arch_module, or "
            f"an entry point in group {ENTRY_POINT_GROUP!r} (see {DOCS})")
    return found


def _lookup(name: str | None) -> Architecture | None:
    if name in _ARCHITECTURES:
        return _ARCHITECTURES[name]
    return next((a for a in _ARCHITECTURES.values() if name in a.model_types), None)


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture of a transformers model, by its ``config.model_type``."""
    return get_architecture(getattr(getattr(model, "config", None), "model_type", None))


def weight_type_order() -> tuple[str, ...]:
    """Every registered architecture's weight types merged into one order, for figures that hold
    records of several backbones: each architecture's labels keep their own order, and a label new to
    the merge goes after its predecessor in its architecture (``W_qkv`` before ``W_o``, ``W_gate``
    after it)."""
    order: list[str] = []
    for arch in _ARCHITECTURES.values():
        types = [t.rsplit(".", 1)[-1] for t in arch.weight_types]
        for i, label in enumerate(types):
            if label in order:
                continue
            before = [t for t in types[:i] if t in order]
            after = [t for t in types[i + 1:] if t in order]
            at = order.index(before[-1]) + 1 if before else (order.index(after[0]) if after else len(order))
            order.insert(at, label)
    return tuple(order)


def display_label(weight_type: str) -> str:
    """A weight type as figures name it (a fused projection says what it holds), whichever
    registered architecture declares it fused."""
    short = weight_type.rsplit(".", 1)[-1]
    arch = next((a for a in _ARCHITECTURES.values() if short in a.fused), None)
    return weight_type if arch is None else arch.display_label(weight_type)


def type_matches(weight_type: str, targets: tuple[str, ...]) -> bool:
    """``W_q`` selects every query projection (``enc.W_q``, ``dec.cross.W_q``, ...)."""
    short = weight_type.rsplit(".", 1)[-1]
    return weight_type in targets or short in targets


def find_targets(model: nn.Module, arch: Architecture, targets: Iterable[str]) -> dict[str, tuple[int, str]]:
    """Layers to adapt, name → (layer, weight type); an empty match is an error."""
    targets = tuple(targets)
    found = {}
    for name, module in model.named_modules():
        if not arch.is_target_layer(module):
            continue
        label = arch.weight_type(name)
        if label is not None and arch.selects(label[1], targets):
            found[name] = label
    if not found:
        raise ValueError(f"targets {list(targets)} match no linear layer of this {arch.name} model; its weight "
                         f"types: {list(arch.weight_types)}")
    return found


def target_width(model: nn.Module, arch: Architecture, targets: Iterable[str]) -> int:
    """Σ (d_in + d_out) over the target layers: LoRA's parameters per unit of rank on them."""
    return sum(sum(layer_dims(model.get_submodule(n))) for n in find_targets(model, arch, targets))


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# ---------------------------------------------------------------------------------------------- built-ins
def _encoder_rows(q: str, k: str, v: str) -> tuple[tuple[str, str], ...]:
    layer = r"encoder\.layer\.(\d+)\."
    return (
        (layer + r"attention\.self\." + q, "W_q"),
        (layer + r"attention\.self\." + k, "W_k"),
        (layer + r"attention\.self\." + v, "W_v"),
        (layer + r"attention\.output\.dense", "W_o"),
        (layer + r"intermediate\.dense", "W_f1"),
        (layer + r"output\.dense", "W_f2"),
    )


def _seq2seq_rows(layers: str, attention: Mapping[str, tuple[str, str]], projections: Mapping[str, str],
                  ffn: Mapping[str, tuple[str, Mapping[str, str]]]) -> tuple[tuple[str, str], ...]:
    """Rows of an encoder-decoder: per attention block (label prefix -> stack, module path) each
    projection, per stack (label prefix -> stack, {module path: weight type}) its FFN, after the stack's
    last attention block (the heatmap order: encoder, decoder self, cross, decoder FFN)."""
    rows = []
    for i, (prefix, (stack, path)) in enumerate(attention.items()):
        rows += [(rf"{stack}\.{layers}\.(\d+)\.{path}\.{proj}", prefix + wt) for proj, wt in projections.items()]
        if all(later != stack for later, _ in list(attention.values())[i + 1:]):
            ffn_prefix, (_, paths) = next((p, f) for p, f in ffn.items() if f[0] == stack)
            rows += [(rf"{stack}\.{layers}\.(\d+)\.{path}", ffn_prefix + wt) for path, wt in paths.items()]
    return tuple(rows)


_ENCODER_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                 "max_position_embeddings": 512}
_DECODER_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 512, "head_dim": 8}
_QKVO = {"q_proj": "W_q", "k_proj": "W_k", "v_proj": "W_v", "out_proj": "W_o"}

register_architecture(Architecture(
    "deberta-v2", _encoder_rows("query_proj", "key_proj", "value_proj"), ("pooler.", "classifier.", "qa_outputs."),
    config_class="DebertaV2Config", classifier_dropout_field="cls_dropout", token_type_ids=True, tiny_special_ids=False,
    # Relative-position attention set up like DeBERTa-v3-base, only smaller.
    tiny_defaults={**_ENCODER_TINY, "type_vocab_size": 0, "hidden_act": "gelu", "layer_norm_eps": 1e-7,
                   "relative_attention": True, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
                   "share_att_key": True, "pos_att_type": ["p2c", "c2p"], "max_relative_positions": -1,
                   "position_biased_input": False, "pooler_dropout": 0.0},
    tiny_follows={"pooler_hidden_size": "hidden_size"},
))
register_architecture(Architecture(
    "bert", _encoder_rows("query", "key", "value"), ("bert.pooler.", "classifier.", "qa_outputs."),
    config_class="BertConfig", token_type_ids=True, tiny_special_ids=False, tiny_defaults={**_ENCODER_TINY, "type_vocab_size": 2},
))
# RoBERTa's classifier is a two-layer head named ``classifier`` (dense + out_proj); no pooler in its
# sequence-classification model, one (trained, not counted) in the bare model.
register_architecture(Architecture(
    "roberta", _encoder_rows("query", "key", "value"), ("roberta.pooler.", "classifier.", "qa_outputs."),
    config_class="RobertaConfig", tiny_defaults={**_ENCODER_TINY, "type_vocab_size": 1},
))
# BART's lm_head is tied to the shared embedding, so its generation head trains nothing.
register_architecture(Architecture(
    "bart",
    _seq2seq_rows("layers", {"enc.": ("encoder", "self_attn"), "dec.self.": ("decoder", "self_attn"),
                             "dec.cross.": ("decoder", "encoder_attn")}, _QKVO,
                  {"enc.": ("encoder", {"fc1": "W_f1", "fc2": "W_f2"}), "dec.": ("decoder", {"fc1": "W_f1", "fc2": "W_f2"})}),
    ("classification_head.", "qa_outputs."), config_class="BartConfig", encoder_decoder=True,
    tiny_defaults={"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                   "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                   "max_position_embeddings": 512},
))


@dataclass(frozen=True)
class T5Architecture(Architecture):
    """T5 starts decoding at pad, not at eos as BART does."""

    def decoder_start_token_id(self, vocab: Mapping[str, int | None]) -> int | None:
        return vocab["pad_token_id"]


# T5's FFN is ``wi``/``wo`` (v1.0) or gated ``wi_0``/``wi_1``/``wo`` (v1.1, flan-t5). Its lm_head is tied
# to the shared embedding in t5-base, so, as BART's, the generation head is not a trained head.
_T5_FFN = {r"layer\.{n}\.DenseReluDense\.wi": "W_f1", r"layer\.{n}\.DenseReluDense\.wi_0": "W_gate",
           r"layer\.{n}\.DenseReluDense\.wi_1": "W_up", r"layer\.{n}\.DenseReluDense\.wo": "W_f2"}
register_architecture(T5Architecture(
    "t5",
    _seq2seq_rows("block", {"enc.": ("encoder", r"layer\.0\.SelfAttention"),
                            "dec.self.": ("decoder", r"layer\.0\.SelfAttention"),
                            "dec.cross.": ("decoder", r"layer\.1\.EncDecAttention")},
                  {"q": "W_q", "k": "W_k", "v": "W_v", "o": "W_o"},
                  {"enc.": ("encoder", {p.format(n=1): wt for p, wt in _T5_FFN.items()}),
                   "dec.": ("decoder", {p.format(n=2): wt for p, wt in _T5_FFN.items()})}),
    ("classification_head.", "qa_outputs."), config_class="T5Config", encoder_decoder=True, output_dropout=None,
    aliases={"W_gate": ("W_f1",), "W_up": ("W_f1",)},
    tiny_defaults={"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
                   "relative_attention_num_buckets": 8, "relative_attention_max_distance": 32},
))
register_architecture(Architecture(
    "gpt2",
    ((r"h\.(\d+)\.attn\.c_attn", "W_qkv"), (r"h\.(\d+)\.attn\.c_proj", "W_o"),
     (r"h\.(\d+)\.mlp\.c_fc", "W_f1"), (r"h\.(\d+)\.mlp\.c_proj", "W_f2")),
    ("score.", "qa_outputs."), fused={"W_qkv": ("W_q", "W_k", "W_v")}, config_class="GPT2Config",
    classifier_dropout_field=None,
    tiny_defaults={"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "n_positions": 512},
))


def _llama_rows() -> tuple[tuple[str, str], ...]:
    layer = r"layers\.(\d+)\."
    attention = {"q_proj": "W_q", "k_proj": "W_k", "v_proj": "W_v", "o_proj": "W_o"}
    mlp = {"gate_proj": "W_gate", "up_proj": "W_up", "down_proj": "W_down"}
    return (tuple((layer + r"self_attn\." + p, wt) for p, wt in attention.items())
            + tuple((layer + r"mlp\." + p, wt) for p, wt in mlp.items()))


# The Llama family: one decoder block layout (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj) and a
# ``score`` head for sequence classification (``qa_outputs`` for extractive QA).
for _name, _config, _model_types in (
    ("llama", "LlamaConfig", ()), ("mistral", "MistralConfig", ()), ("qwen2", "Qwen2Config", ()),
    ("qwen3", "Qwen3Config", ()), ("gemma", "GemmaConfig", ()), ("gemma2", "Gemma2Config", ()),
    ("gemma3", "Gemma3TextConfig", ("gemma3_text",)),
):
    register_architecture(Architecture(
        _name, _llama_rows(), ("score.", "qa_outputs."), model_types=_model_types or (_name,),
        weight_types=LLAMA_WEIGHT_TYPES, aliases=GATED_MLP_ALIASES, config_class=_config,
        classifier_dropout_field=None, tiny_defaults=_DECODER_TINY,
    ))
