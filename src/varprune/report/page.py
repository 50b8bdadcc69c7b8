"""The report's HTML page: the opening findings, provenance, and the Jinja2 template
(`templates/report.html.j2`) that lays out findings, tables, figures and configuration in one
self-contained file (figures embedded as base64, so it opens offline and can be mailed)."""

from __future__ import annotations

import base64
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
import SimpleITK as sitk
import yaml

from varprune.model.spec import LEGACY_SPEC
from varprune.report.tables import human_comparison, human_int8, human_summary, percent, verdict_table
from varprune.study.compare import HEADROOM_WARNING
from varprune.study.stats import PairedComparison, comparison_from_row, power_note, verdict

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Finding:
    """One sentence of the opening: `lead` in bold, then `text`; `strong` makes it all bold,
    `item` indents it as a bullet."""

    text: str
    lead: str = ""
    strong: bool = False
    item: bool = False


def provenance(config: dict, repo: Path | None) -> dict:
    """Data source, versions and git commit, as this job sees them."""
    import monai
    import snakemake
    import torch

    commit = "unknown"
    if repo is not None:
        try:
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "unknown"
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            if dirty and commit != "unknown":
                commit += " (with uncommitted changes)"
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "data source": config["data"]["source"] + (" (generated phantoms in the IRCADb layout)"
                                                    if config["data"]["source"] == "synthetic" else ""),
        "git commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__, "monai": monai.__version__, "snakemake": snakemake.__version__,
        "SimpleITK": sitk.Version_VersionString(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


SCOPE_PHRASES = {  # pruning.scope: what loses channels
    "transformer": "the MSA and FFN channels of every transformer layer (pruning.scope transformer, "
                   "the paper's)",
    "decoder": "the MSA and FFN channels and the decoder's channels (SETR: its head stages; UNETR: its "
               "convolutional encoders and decoder; groups below pruning.min_group_share of the MACs stay "
               "whole) (pruning.scope decoder)",
    "embedding": "the MSA and FFN channels and the embedding width, i.e. the residual stream through every "
                 "layer (pruning.scope embedding)",
    "all": "the MSA and FFN channels, the decoder's channels (groups below pruning.min_group_share of the "
           "MACs stay whole) and the embedding width, i.e. the residual stream through every layer "
           "(pruning.scope all)",
}


OUTER_WIDTH_PHRASES = {  # pruning.outer_width, where the scope reaches beyond the transformer
    "shared": "; the decoder and embedding widths are the same for every method (fixed's one rate at each "
              "budget, pruning.outer_width shared), so the methods differ only in their MSA and FFN widths",
    "own": "; every method chooses the decoder and embedding widths too (pruning.outer_width own), so a "
           "difference between methods mixes their outer widths with their MSA and FFN allocation",
}


def scope_phrase(pruning: dict) -> str:
    """What the run pruned, how the widths outside the transformer were chosen, and their rounding."""
    scope = pruning.get("scope", "transformer")
    step = pruning.get("round_to", 1)
    rounding = (f"; every kept width is a multiple of {step} or whole (pruning.round_to)" if step > 1 else "")
    if scope == "transformer":
        return SCOPE_PHRASES[scope] + rounding
    return SCOPE_PHRASES[scope] + OUTER_WIDTH_PHRASES[pruning.get("outer_width", "shared")] + rounding


def arch_phrase(model: dict) -> str:
    """The segmenter in a few words, from the `model` config slice."""
    if model.get("arch", LEGACY_SPEC["arch"]) == "setr":
        return (f"SETR-PUP (MONAI ViT, patch {model.get('patch')}, {model.get('num_layers')} layers, "
                f"hidden {model.get('hidden')}, upsampling head {model.get('head_channels')} of "
                f"{model.get('head_kernel')}x{model.get('head_kernel')} convolutions)")
    return f"MONAI UNETR (hidden {model.get('hidden')})"


def findings(table: pd.DataFrame, comparison: pd.DataFrame, room: PairedComparison | None) -> list[Finding]:
    """The opening sentences: what the numbers support, and what they cannot."""
    lines = []
    if room is not None:
        text = verdict("dense_long", "transformer_off", room, metric="dice", explain_power=False)
        lines.append(Finding(f" (how much of the Dice the transformer carries): {text}",
                             lead="Transformer headroom"))
        if room.mean_diff < HEADROOM_WARNING:
            lines.append(Finding(
                f"Warning: the headroom is below {100 * HEADROOM_WARNING:.0f} Dice points. Without its "
                "transformer the model segments almost as well, so this dataset cannot rank transformer "
                "pruning methods: every allocation of widths, including none, looks lossless.", strong=True))
    dice = comparison[comparison.metric == "dice"].dropna(subset=["mean_diff"])
    if len(dice):
        last = dice.budget.max()
        lines.append(Finding(", paired over test cases:",
                             lead=f"At the highest budget ({percent(last)} of the MACs removed)"))
        at_last = dice[dice.budget == last]
        for r in at_last.itertuples():
            lines.append(Finding(verdict(r.method_a, r.method_b, comparison_from_row(r), explain_power=False,
                                         p_adjusted=r.p_adjusted, family=len(at_last)), item=True))
        note = power_note(int(at_last.n_cases.min()))
        if note:
            lines.append(Finding(note, strong=True))
    long = table[table.method == "dense_long"]
    dense = table[table.method == "dense"]
    if len(long) and len(dense):
        lines.append(Finding(
            "Extra fine-tuning alone moves the dense model's test Dice from "
            f"{dense.dice_mean.iloc[0]:.4f} to "
            f"{long.dice_mean.iloc[0]:.4f} (dense_long): differences of pruned models from dense are read "
            "against dense_long."))
    return lines


def render_html(table: pd.DataFrame, figures: dict[str, Path], prov: dict, config: dict,
                run: str, exports: pd.DataFrame | None = None, comparison: pd.DataFrame | None = None,
                room: PairedComparison | None = None, int8: pd.DataFrame | None = None) -> str:
    """A single self-contained page: what the numbers support first, then tables, figures, provenance."""
    comparison = comparison if comparison is not None else pd.DataFrame(columns=["metric", "mean_diff"])
    table_html = human_comparison(comparison, table).to_html(index=False, border=0) if len(comparison) else ""
    verdicts = verdict_table(comparison)
    verdicts_html = verdicts.to_html(index=False, border=0) if len(verdicts) else ""
    return render(
        "report.html.j2",
        run=run,
        arch=arch_phrase(config.get("model", {})),
        scope=scope_phrase(config.get("pruning", {})),
        findings=findings(table, comparison, room),
        verdicts=verdicts_html,
        comparison=table_html,
        summary=human_summary(table).to_html(index=False, border=0),
        exports=exports.to_html(index=False, border=0, float_format=lambda v: f"{v:.1f}")
        if exports is not None and len(exports) else "",
        int8=human_int8(int8).to_html(index=False, border=0) if int8 is not None and len(int8) else "",
        figures={name: embed(path) for name, path in figures.items()},
        provenance=prov,
        config=config,
    )


def embed(path: Path) -> str:
    """A PNG as base64, for an <img> that needs no file next to the page."""
    return base64.b64encode(Path(path).read_bytes()).decode()


def render(template: str, **context) -> str:
    """Fill a template of `templates/` (autoescaped; `config` is shown as YAML)."""
    if "config" in context:
        context["config"] = yaml.safe_dump(context["config"], sort_keys=False)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template(template).render(**context)
