"""The model card written beside every exported version (MODEL_CARD.md)."""

from __future__ import annotations

from typing import Any

from serving.training.evaluation import format_report

LIMITS = """\
- English text only; texts longer than the window are cut (the output says `truncated`).
- Trained and evaluated on public research data sets: AG News and Financial PhraseBank are
  licensed for non-commercial research use only (see `../shared/data/README.md`); check
  the licenses before serving this model commercially.
- The int8 variant quantizes activations per batch (dynamic quantization): a borderline
  text's scores can differ slightly with the texts it is batched with.
"""


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    lines = [
        "| data set (test split) | variant | accuracy | macro recall | macro F1 | ECE |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for which in ("baseline", "test"):
        for key, m in sorted(evaluation.get(which, {}).items()):
            name, variant = key.rsplit("/", 1)
            if which == "baseline":
                variant = f"{variant}, before (v{evaluation.get('baseline_version')})"
            lines.append(
                f"| {name} | {variant} | {m['accuracy']:.4f} | {m['macro_recall']:.4f} "
                f"| {m['macro_f1']:.4f} | {m['ece']:.4f} |"
                if "ece" in m
                else f"| {name} | {variant} | {m['accuracy']:.4f} | {m['macro_recall']:.4f} "
                f"| {m['macro_f1']:.4f} | - |"
            )
    return lines


def render_model_card(manifest: dict[str, Any], reports: dict[str, dict[str, Any]]) -> str:
    """Markdown: what the model is, what it learned from, how well it does, how it is served."""
    training = manifest.get("training", {})
    result = training.get("result", {})
    lines = [
        f"# {manifest['name']} version {manifest['version']}",
        "",
        f"- Created: {manifest['created']}",
        f"- Base checkpoint: `{manifest['base_checkpoint']}`",
        f"- Started from: `{training.get('started_from', manifest['base_checkpoint'])}`",
        f"- Training mode: {training.get('mode', 'heads')} ({training.get('reason', '')})",
        f"- Serving window: {manifest['max_length']} tokens; pooling: {manifest['pooling']}",
        "",
        "## Heads",
        "",
    ]
    lines += [_head_line(t) for t in manifest["tasks"]]
    lines += ["", "## Data", "", "| set | task | role | train | val | test | source |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for d in training.get("data", []):
        lines.append(
            f"| {d['name']} | {d.get('task', '')} | {d.get('role', '')} | {d['train_rows']} "
            f"| {d.get('val_rows', '')} | {d.get('test_rows', '')} | `{d.get('source', '')}` |"
        )
    if result:
        config = training.get("config", {})
        lines += [
            "",
            "## Training",
            "",
            f"- Steps: {result['steps']} (best at step {result['best_step']}, validation score "
            f"{result['best_score']:.4f}; stopped early: {result['stopped_early']})",
            # Runs recorded before the device was all on the CPU.
            f"- Window while training: {result['max_length']} tokens; device: "
            f"{result.get('device', 'cpu')}; precision: {result['precision']}; "
            f"{result['seconds']:.0f} s",
            *_adapter_lines(config, result),
            "- Settings: "
            + ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if v is not None),
            "",
            "| step | epoch | rows seen | train loss | validation score |",
            "| --- | --- | --- | --- | --- |",
        ]
        for h in result.get("history", []):
            lines.append(
                f"| {h['step']} | {h['epoch']} | {h['rows_seen']} | {h['train_loss']} "
                f"| {h['val_score']} |"
            )
    lines += _calibration_lines(training)
    lines += ["", "## Evaluation", "", *_metrics_table(manifest.get("evaluation", {})), ""]
    for variant, by_set in reports.items():
        for name, report in by_set.items():
            lines += [
                f"### {name}, {variant}",
                "",
                "```",
                format_report(report),
                "```",
                "",
            ]
            if "confusion" in report:
                lines += [f"Confusion matrix: `reports/{name}_{variant}_confusion.png`", ""]
    variants = manifest.get("variants", {})
    lines += [
        "## Export variants",
        "",
        *(f"- {v}: `{f}` (ONNX opset {manifest['opset']})" for v, f in variants.items()),
        "- `checkpoint/`: PyTorch encoder and tokenizer; `heads.npz`: head weights",
        "- `model.py`: Triton python-backend entry point (CPU)",
        "",
        "## Limits",
        "",
        LIMITS,
    ]
    return "\n".join(lines)


def _head_line(task: dict[str, Any]) -> str:
    """A head's card line: its labels, and for multi-label heads each label's threshold."""
    if task.get("kind") != "multilabel":
        return f"- `{task['name']}` (multi-class): {', '.join(task['labels'])}"
    cuts = ", ".join(
        f"{label} {cut:.3g}" for label, cut in zip(task["labels"], task["thresholds"], strict=False)
    )
    return (
        f"- `{task['name']}` (multi-label; a label is given when its sigmoid score reaches its "
        f"threshold, chosen per label to maximise F1 on validation): {cuts}"
    )


def _calibration_lines(training: dict[str, Any]) -> list[str]:
    """Each head's temperature and validation ECE before and after scaling."""
    found = dict(training.get("calibration", {}))
    for name, figures in training.get("heads", {}).items():
        if isinstance(figures, dict) and "calibration" in figures:
            found[name] = figures["calibration"]
    if not found:
        return []
    lines = [
        "",
        "## Calibration",
        "",
        "Temperature scaling on the validation rows, folded into each head's weights (the "
        "served scores are the calibrated ones); expected calibration error over 15 bins "
        "(top label, or every label's score for multi-label heads).",
        "",
        "| head | temperature | validation ECE before | after | rows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, c in found.items():
        t = c["temperature"]
        if t is None:
            lines.append(
                f"| {name} | not fitted (too few rows) | {c['val_ece_before']:.4f} | - | {c['val_rows']} |"
            )
            continue
        shown = f"{min(t):.3g}-{max(t):.3g} per label" if isinstance(t, list) else f"{t:.3g}"
        lines.append(
            f"| {name} | {shown} | {c['val_ece_before']:.4f} | {c['val_ece_after']:.4f} "
            f"| {c['val_rows']} |"
        )
    return lines


def _adapter_lines(config: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """How the encoder trained (its weights, or LoRA adapters since merged) and how many
    parameters the optimizer updated; runs recorded before adapters existed show neither."""
    if "trainable_params" not in result or not result["total_params"]:
        return []
    adapter = config.get("adapter", "full")
    how = (
        f"LoRA adapters (rank {config.get('lora_rank')}), merged into the encoder before export"
        if adapter == "lora"
        else "the whole encoder"
    )
    share = result["trainable_params"] / result["total_params"]
    return [
        f"- Adapter: {adapter} ({how}); trainable parameters {result['trainable_params']:,} "
        f"of {result['total_params']:,} ({share:.1%})"
    ]
