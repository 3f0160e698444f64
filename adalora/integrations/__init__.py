"""Integrations with other training loops; each submodule imports its framework only when imported.

``adalora.integrations.hf``: a ``transformers.Trainer`` callback (and a one-line loss mixin) that
runs AdaLoRA's schedule, allocator and penalty, for this library's methods and PEFT's AdaLoRA.
"""
