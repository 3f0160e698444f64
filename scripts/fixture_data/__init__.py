"""The fixture data families, one module each; ``scripts/make_fixtures.py`` is the CLI.

``common`` holds the JSONL writer and the sampling helpers every family uses; ``glue`` (with its
word lists in ``glue_lexicon``), ``squad`` and ``summarization`` each write one hub dataset's
schema. Output is byte-for-byte reproducible.
"""
