"""The decoder demo's analysis (``make demo-llm``, after sweep ``demo_llm``): paired table, allocation proof, ranks.

SmolLM2-135M-Instruct (a GGUF file dequantised from Q4_1) fine-tuned with LoRA and AdaLoRA at one
matched budget over several seeds. The pieces are the MiniLM demo's (``analysis.demo``: the paired
AdaLoRA − LoRA table by seed, with ``analysis.stats``' 95% t-interval and paired t-test) and the
paper analysis' (``rank_heatmaps_by_configuration``, ``rank_over_training``); what is new here is
what a decoder demo must show besides: that every rank-adaptive run really allocated, and which
weights ran::

    python -m analysis.demo_llm --results-root outputs/demo_llm --out-dir outputs/demo_llm

Files: ``demo_llm_adalora_vs_lora.md/.csv`` (main metric per task: acc for the topic as multiple
choice, rougeL for the headline; mean ± std over seeds, every seed, AdaLoRA − LoRA paired by seed),
``demo_llm_allocation_proof.md/.csv`` (one row per rank-adaptive run: allocator runs, the steps at
which ranks changed, whether the schedule says they must, total rank at start and end),
``demo_llm_allocation_proof.json`` (the same with each run's final rank pattern, matrix by matrix),
``demo_llm_rank_heatmap_<task>_<budget>.png/.svg/.csv`` (mean final rank over seeds, weight type x
layer: 7 x 30 for SmolLM2), ``demo_llm_rank_over_training_<task>_<budget>.png/.svg`` and
``demo_llm_run_status.csv``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.collect import collect, load_records, status_frame
from analysis.demo import _write_flat, adalora_vs_lora
from analysis.figures import rank_heatmaps_by_configuration, rank_over_training, save_figure
from analysis.labels import budget_rank, method_label, record_labels, task_label
from analysis.tables import allocation_table, successful, to_markdown

PREFIX = "demo_llm_"


def weights_provenance(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per distinct model of the runs, from what each record says ran: for a GGUF model the
    file, its package and the quantisation it was dequantised from (``model.gguf_quant``, which the
    loader checked against the file's own header before the run)."""
    lines = []
    for model in {json.dumps((r.get("config") or {}).get("model") or {}, sort_keys=True) for r in records}:
        cfg = json.loads(model)
        if cfg.get("gguf_file"):
            lines.append(f"{cfg.get('name')}: weights dequantised from {cfg.get('gguf_quant')} "
                         f"({cfg['gguf_file']} in package {cfg.get('package')})")
        else:
            lines.append(f"{cfg.get('name')}: {cfg.get('source')} weights ({cfg.get('pretrained') or cfg.get('package')})")
    return sorted(lines)


def allocation_proof(records: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(table, per-run details with the final pattern): the decoder tables' allocation proof
    (:func:`analysis.tables.allocation_table`: every run whose record carries ``ranks.allocation``, or that
    failed because its ranks never changed), each row here with the run's final rank pattern, matrix by matrix.

    A successful row is the record's own evidence that the allocator ran; a failed one carries the
    reason the run gave (for PEFT's AdaLoRA: ``update_and_allocate`` never called)."""
    records = list(records)
    table = allocation_table(records)
    patterns = {_run_key(r["run"]): ((r.get("ranks") or {}).get("allocation") or {}).get("final_pattern")
                for r in records if r.get("run")}
    details = [{**row, "final_pattern": patterns.get(_run_key(row))} for row in table.to_dict("records")]
    return table, details


def _run_key(run: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(run.get(k) for k in ("model", "task", "method", "budget", "seed"))


def _present_proof(table: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    shown = table.copy()
    shown["task"] = [task_label(t) for t in shown["task"]]
    shown["method"] = [method_label(m, labels) for m in shown["method"]]
    return shown.fillna("")


def _rank_figures(records: list[dict[str, Any]], out: Path) -> tuple[list[Path], dict[str, pd.DataFrame]]:
    """Final-rank heatmap (weight type x layer) and rank-over-training plot per task x budget of AdaLoRA."""
    written: list[Path] = []
    matrices: dict[str, pd.DataFrame] = {}
    cells = sorted({(r["run"]["task"], r["run"]["budget"]) for r in records if r["run"]["method"] == "adalora"},
                   key=lambda tb: (task_label(tb[0]), budget_rank(tb[1])))
    for task, budget in cells:
        for suffix, fig, matrix, first in rank_heatmaps_by_configuration(records, task, budget):
            stem = f"{task}_{budget}{suffix}"
            written += save_figure(fig, out / f"{PREFIX}rank_heatmap_{stem}")
            matrix.to_csv(out / f"{PREFIX}rank_heatmap_{stem}.csv", encoding="utf-8")
            written += save_figure(rank_over_training(first), out / f"{PREFIX}rank_over_training_{stem}")
            matrices[stem] = matrix
    return written, matrices


def write_demo_llm_report(results_root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the decoder demo's tables and figures; returns what the summary prints."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = list(load_records(results_root))
    status = status_frame(loaded)
    status.to_csv(out / f"{PREFIX}run_status.csv", index=False, encoding="utf-8")
    df = successful(collect(results_root))
    if df.empty:
        raise SystemExit(f"no successful runs under {results_root}: run `make demo-llm` (or sweep=demo_llm) first")
    all_records = [record for _, record, _ in loaded if record is not None]
    records = [r for r in all_records if r.get("status") == "success"]
    labels = record_labels(records)
    pair = adalora_vs_lora(df)
    written = _write_flat(pair, out, f"{PREFIX}adalora_vs_lora",
                          "Decoder demo: AdaLoRA vs LoRA at a matched budget (main metric, mean ± std over seeds; "
                          "AdaLoRA − LoRA paired by seed with its 95% t-interval and paired t-test p)")
    proof, details = allocation_proof(all_records)
    written += _write_flat(_present_proof(proof, labels), out, f"{PREFIX}allocation_proof",
                           "Decoder demo: proof that allocation ran (one row per rank-adaptive run)")
    proof_json = out / f"{PREFIX}allocation_proof.json"
    proof_json.write_text(json.dumps(details, indent=1, default=str) + "\n", encoding="utf-8")
    figures, heatmaps = _rank_figures(records, out)
    counts = status["status"].value_counts().to_dict()
    return {"pair": pair, "proof": proof, "heatmaps": heatmaps, "written": [*written, proof_json, *figures],
            "counts": counts, "runs": len(status), "labels": labels, "weights": weights_provenance(records),
            "train_wall_s": float(status.drop_duplicates("run_dir")["wall_time_s"].sum())}


def summary_text(report: Mapping[str, Any], out_dir: str | Path) -> str:
    """The one-screen summary ``make demo-llm`` ends with."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
    proof = report["proof"]
    changed = int((proof["changed at steps"] != "").sum()) if len(proof) else 0
    heatmaps = [f"  {stem}: {m.shape[0]} weight types x {m.shape[1]} layers" for stem, m in report["heatmaps"].items()]
    lines = [
        "",
        f"=== Decoder demo: {report['runs']} runs ({counts}), {report['train_wall_s'] / 60:.1f} min in the runs "
        "themselves ===",
        *report["weights"],
        "",
        "AdaLoRA vs LoRA at the matched budget (main metric on the validation rows: acc % for the topic as multiple",
        "choice, rougeL for the headline; mean ± std over seeds; the last line of each task: AdaLoRA − LoRA paired by",
        "seed, mean [95% t-interval], paired t-test p). A short demonstration run, not a converged comparison.",
        "",
        to_markdown(report["pair"]).rstrip() if len(report["pair"]) else "  (no task with both LoRA and AdaLoRA runs)",
        "",
        f"Proof that allocation ran: {len(proof)} rank-adaptive run(s), {changed} changed their ranks; "
        f"{int((proof['status'] != 'success').sum()) if len(proof) else 0} failed:",
        "",
        to_markdown(_present_proof(proof, report["labels"])).rstrip() if len(proof) else "  (no rank-adaptive runs)",
        "",
        "Final-rank heatmaps (mean over seeds):",
        *heatmaps,
        "",
        f"Files in {out_dir}:",
        *(f"  {p}" for p in sorted(str(p) for p in report["written"] if not str(p).endswith(".svg"))),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-root", default="outputs/demo_llm", help="runs to analyse (default: outputs/demo_llm)")
    parser.add_argument("--out-dir", default=None, help="where tables and figures go (default: the results root)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or args.results_root
    print(summary_text(write_demo_llm_report(args.results_root, out_dir), out_dir))


if __name__ == "__main__":
    main()
