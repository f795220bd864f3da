"""The benchmark record as bench prints it: a header line and a Markdown table."""

from __future__ import annotations


def table(r: dict) -> str:
    """The benchmark record ``r`` as a header line and a Markdown table of throughputs (``not run`` where a
    pipeline was skipped)."""
    u = r["unit"]
    r = {k: ("not run" if v is None else v) for k, v in r.items()}
    lines = [
        f"# {r['date']}  {r['device']} ({r['device_name']}, {r['cpu_cores']} cores)  torch {r['torch']}  "
        f"{r['modality']}  {r['backbone']} ({r['backbone_params'] / 1e6:.1f} M params)  {r['image_size']} px  "
        f"batch {r['batch_size']}  {r['steps']} timed steps",
        f"| pipeline | {u} |",
        "|---|---|",
        f"| framework: uint8 cache + {r['augment']} augmentation online, {r['framework_workers']} workers, "
        f"{r['precision']}{', channels_last' if r['channels_last'] else ''}"
        f"{', compile' if r['compile'] else ''} | {r['framework_img_s']:,.1f} |",
        f"| study-style: 640x480 JPEG + PIL every epoch, fp32, {r['study_workers']} workers | "
        f"{_num(r['study_style_img_s'])} |",
        f"| ratio | {_num(r['ratio'], 2)}x |",
        f"| loader alone (no model), framework | {r['loader_img_s']:,.1f} "
        f"({r['loader_over_model']:.1f}x what the model consumes) |",
        f"| evaluation (no grad), framework | {r['eval_img_s']:,.1f} |",
        f"| model alone (one batch kept on the device), framework | {r['model_only_img_s']:,.1f} |",
        f"| paper protocol, {r['protocol']} ({r['protocol_how']}) | {r['protocol_s']:,.1f} s "
        f"(study-style {_num(r['study_style_protocol_s'])} s) |",
    ]
    if r.get("run_steps") not in (None, "not run"):
        lines.append(
            f"| real training run: {r['run_steps']} steps in {r['run_epochs']} epochs of {r['passes_per_epoch']} "
            f"pass(es), validation and checkpoints included | {r['run_img_s']:,.1f} (waited for data "
            f"{r['data_wait_fraction']:.1%} of {r['run_wall_s']} s) |"
        )
    return "\n".join(lines)


def _num(x, digits: int = 1) -> str:
    return x if isinstance(x, str) else f"{x:,.{digits}f}"
