"""``funcml explain``: attributions of a latent classifier, in latent and signal space (captum)."""

from __future__ import annotations

import click

from funcml.cli.common import (data_options, device_option, emit_json, info, json_option, load_data,
                               overwrite_option, parse_resolution)


def _window(text: str | None) -> tuple[int, ...] | None:
    from funcml.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x") if v.strip())
    except ValueError:
        raise ConfigError(f"--window must look like 4, 4x4 or 2x4x4; got {text!r}") from None


def _fmt(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def summary_lines(report: dict) -> list[str]:
    """Human-readable lines of an explanation report."""
    lines = []
    for space in ("latent", "signal"):
        s = report.get(space)
        if not s:
            continue
        head = f"{space} space"
        if space == "signal":
            head += (f" (H = {s['encode_steps']}; re-encoded predictions agree "
                     f"{s['fidelity']['prediction_agreement']:.0%})")
        lines.append(head + ":")
        if s.get("completeness"):
            c = s["completeness"]
            lines.append(f"  IG completeness: mean |gap| {c['gap_mean_abs']:.3g} vs mean |f(x) - f(baseline)| "
                         f"{c['output_change_mean_abs']:.3g}")
        q = s.get("quality")
        if q:
            for mode in ("deletion", "insertion"):
                m = q[mode]
                lines.append(f"  {mode:>9} AUC {_fmt(m['auc'])} (random order {_fmt(m['auc_random'])}; better than "
                             f"random for {m['better_than_random']:.0%} of signals)")
        r = s.get("randomisation")
        if r and "full" in r:
            lines.append(f"  randomisation check: Spearman |attr| trained vs randomised classifier "
                         f"{_fmt(r['full']['spearman_abs'])} (low = attributions depend on the learnt weights)")
        elif r:
            lines.append(f"  randomisation check: {r['skipped']}")
    cf = report.get("counterfactual")
    if cf and "flipped" in cf:
        lines.append(f"counterfactuals: {cf['flipped']:.0%} flipped, mean distance {_fmt(cf['distance_mean'])} "
                     f"standardised units" + (f", mean |change| of the decoded signal {cf['change_mean_abs']:.3g}"
                                             if "change_mean_abs" in cf else ""))
    elif cf:
        lines.append(f"counterfactuals: {cf['skipped']}")
    return lines


@click.command("explain")
@click.option("--latents", "latents", required=True, type=click.Path(), help="Latent set (from `funcml encode`).")
@click.option("--classifier", "classifier_dir", required=True, type=click.Path(),
              help="Classifier directory written by `funcml classify --out`.")
@click.option("--model", "model_dir", default=None, type=click.Path(),
              help="Field-model directory (default: the one embedded in LATENTS).")
@click.option("--data", "data", default=None,
              help="The DATA the latents were encoded from (default: the source recorded in LATENTS).")
@click.option("--indices", default=None, help="Rows of LATENTS to explain, e.g. 0-15 or 3,7,10-12 "
              "(default: the first 16 test rows).")
@click.option("--method", type=click.Choice(["ig", "saliency", "gradshap", "occlusion"]), default="ig",
              show_default=True, help="captum attribution method (occlusion for k-NN/XGBoost/GNN).")
@click.option("--space", type=click.Choice(["latent", "signal", "both"]), default="both", show_default=True,
              help="Attribute over latent dimensions, over signal samples (through the encoder), or both.")
@click.option("--target", default="predicted", show_default=True,
              help="Class to explain: predicted, true, or a class name/value.")
@click.option("--output", type=click.Choice(["logodds", "proba"]), default="logodds", show_default=True,
              help="Explained score of the target class.")
@click.option("--encode-steps", type=click.IntRange(1), default=None,
              help="H of the differentiable encoder in signal space (default: the model's; smaller is faster).")
@click.option("--ig-steps", type=click.IntRange(1), default=16, show_default=True, help="Integration points of ig.")
@click.option("--window", default=None, help="Occlusion window in signal space, e.g. 4x4 (default ~1/8 per side).")
@click.option("--signal-baseline", type=click.Choice(["blur", "mean", "zero"]), default="blur", show_default=True,
              help="Reference signal of ig/occlusion and of the deletion/insertion curves.")
@click.option("--latent-baseline", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
              help="Reference latent: zero (where the encoder starts) or the training mean.")
@click.option("--quality/--no-quality", default=True, show_default=True, help="Deletion/insertion curves.")
@click.option("--sanity/--no-sanity", default=True, show_default=True, help="Model-randomisation check.")
@click.option("--counterfactual/--no-counterfactual", default=True, show_default=True,
              help="Counterfactual latents (decoded) along the classifier's gradient.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Signals per encoder call in signal space.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(),
              help="Folder for explain.json, attributions.safetensors and the PNG figures.")
@overwrite_option
@device_option
@json_option
@data_options
def explain_command(latents, classifier_dir, model_dir, data, indices, method, space, target, output, encode_steps,
                    ig_steps, window, signal_baseline, latent_baseline, quality, sanity, counterfactual, batch_size,
                    seed, out, overwrite, device, as_json, resolution, channels, split_seed, val_fraction,
                    test_fraction, data_option):
    """Explain the classifier CLF on rows of LATENTS: attributions over latent dimensions (per signal
    and per class), over the signal's samples/pixels/voxels through the differentiable encoder,
    counterfactual maps, deletion/insertion AUCs and the model-randomisation sanity check."""
    from pathlib import Path

    from funcml.devices import resolve_device
    from funcml.errors import OutputExistsError
    from funcml.latents import LatentSet
    from funcml.tasks.classify import load_classifier
    from funcml.tasks.explain import ExplainConfig, check_compatible, explain_latent_set, parse_indices, write_outputs

    if Path(out).exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    cfg = ExplainConfig(method=method, output=output, target=target, space=space, ig_steps=ig_steps,
                        window=_window(window), encode_steps=encode_steps, latent_baseline=latent_baseline,
                        signal_baseline=signal_baseline, quality=quality, sanity=sanity,
                        counterfactual=counterfactual, batch_size=batch_size, seed=seed).validate()
    latent_set = LatentSet.open(latents)
    classifier = load_classifier(classifier_dir)
    check_compatible(latent_set, classifier)
    rows = parse_indices(indices, len(latent_set))
    need_model = space != "latent" or counterfactual
    model = None
    if need_model and (model_dir is not None or latent_set.model_dir is not None):
        model = latent_set.load_model(model_dir, device=resolve_device(device))
    elif space != "latent":
        latent_set.load_model(model_dir)  # raises the clear "pass --model DIR" error
    signals = None
    if space != "latent":
        spec = data or latent_set.manifest["source"].get("spec")
        res = parse_resolution(resolution) or tuple(latent_set.signal_shape[1:])
        signals = load_data(spec, res, channels, split_seed, val_fraction, test_fraction, data_option)
    info(f"explain {classifier_dir} ({getattr(classifier, 'kind', '?')}) on {latent_set.path} with {method}")
    result = explain_latent_set(latent_set, classifier, model=model, signals=signals, rows=rows, config=cfg, log=info,
                                progress=True)
    files = write_outputs(result, out, overwrite=overwrite)
    for line in summary_lines(result.report):
        info(line)
    info(f"report, attributions and figures -> {out}")
    if as_json:
        emit_json({**result.report, "files": files})


def register(cli: click.Group) -> None:
    cli.add_command(explain_command)
