"""Defines the report's "Candidate model" section, for a run with --candidate_model: how often the two models agree,
the flip matrix as a heat map, both class mixes side by side, both accuracies on labelled inputs, and the inputs they
disagree on most, each shown as each model saw it (its own card's recipe) with both models' probability bars. It
reads the manifest's `candidate` section, the partition's _labels.json and _disagreements.parquet
(pipeline.outputs.comparison), and the pictures from where the run read them (pipeline.report.pictures).
"""

from model.cards import card_spec
from pipeline.outputs import comparison
from pipeline.report import accuracy, page, pictures


def section(folder: str, manifest: dict, measured) -> str:
    found = manifest["candidate"]
    model, candidate = manifest["model"], found["model"]
    spec, candidate_spec = card_spec.spec_described(model), card_spec.spec_described(candidate)
    agreement = f"{found['agreement']:.1%}" if found["agreement"] is not None else "–"
    confidence = found["mean_confidence"]
    html = page.tiles([
        (agreement, f"agree on the label, of {found['compared']:,} inputs both scored", ""),
        (f"{found['compared'] - found['agreed']:,}", "inputs they label differently", ""),
        *[(f"{confidence[side]:.1%}" if confidence[side] is not None else "–",
           f"mean confidence of the {side} ({described['version']}) on them", "")
          for side, described in (("model", model), ("candidate", candidate))],
        (f"{found['failed']:,}", "inputs the candidate could not score", "bad" if found["failed"] else ""),
    ])
    html += (f"<p class=note>Model {page.esc(model['version'])} ({page.esc(model['path'])}) against candidate "
             f"{page.esc(candidate['version'])} ({page.esc(candidate['path'])}); labels are compared by name.</p>")
    html += _accuracy(measured)
    if found["compared"]:
        html += "<p>Labels, the model's down and the candidate's across:</p>" + page.heat_map(
            list(spec.class_names), list(candidate_spec.class_names), found["flips"], "model", "candidate")
    html += "<p>Class mix, all inputs each scored:</p>" + _mix(found["class_mix"])
    html += _disagreements(folder, spec, candidate_spec, model["version"], candidate["version"])
    return html


def _accuracy(measured) -> str:
    models = (measured or {}).get("models", {})
    if not models:
        return ("<p class=note>No labels yet: `python -m pipeline.report PARTITION --labels FILE` measures both "
                "models once they arrive.</p>")
    parts = []
    for side, described in models.items():
        found = described["accuracy"]
        if found["labelled"] < accuracy.MIN_LABELLED:
            parts.append(f"{side} {page.esc(described['version'])}: too few labels to tell ({found['labelled']:,} "
                         f"labelled inputs; {accuracy.MIN_LABELLED} are needed)")
        else:
            low, high = found["interval"]
            parts.append(f"{side} {page.esc(described['version'])}: <b>{found['accuracy']:.1%}</b> on "
                         f"{found['labelled']:,} labelled inputs (95% interval {low:.1%}-{high:.1%})")
    verdict = ""
    sides = [models.get(side, {}).get("accuracy", {}) for side in ("model", "candidate")]
    if all(found.get("labelled", 0) >= accuracy.MIN_LABELLED for found in sides):
        (model_low, model_high), (candidate_low, candidate_high) = (found["interval"] for found in sides)
        verdict = ("the candidate is better, beyond both intervals" if candidate_low > model_high
                   else "the candidate is worse, beyond both intervals" if candidate_high < model_low
                   else "the intervals overlap: these labels do not tell the two apart")
    return ("<p>Accuracy on labelled inputs: " + "; ".join(parts) + (f" — {verdict}" if verdict else "") + ".</p>")


def _mix(class_mix: dict) -> str:
    totals = {side: max(sum(mix.values()), 1) for side, mix in class_mix.items()}
    names = list(dict.fromkeys([*class_mix["model"], *class_mix["candidate"]]))
    rows = []
    for name in names:
        row = [name]
        for side in ("model", "candidate"):
            amount = class_mix[side].get(name)
            row += [f"{amount:,}", f"{amount / totals[side]:.1%}"] if amount is not None else ["no such class", ""]
        rows.append(row)
    return page.table(["class", "model", "share", "candidate", "share"], rows, numeric={1, 2, 3, 4})


def _disagreements(folder: str, spec, candidate_spec, version: str, candidate_version: str) -> str:
    rows = comparison.read_disagreements(folder)
    if not rows:
        return "<p class=ok>They agree on every input both scored.</p>"
    cards = []
    for row in rows:
        sides = []
        for side, side_spec, name in (("model", spec, version), ("candidate", candidate_spec, candidate_version)):
            seen, original = pictures.pictures(dict(row, input_sha256=row[f"{side}_input_sha256"]), side_spec)
            sides.append(f"<div class=side><div class=pics>{seen}{original if side == 'model' else ''}</div>"
                         f"<div class=pred>{side} {page.esc(name)}: {page.esc(row[f'{side}_label'])} · "
                         f"{row[f'{side}_confidence']:.1%}</div>"
                         f"{page.probability_bars(row[f'{side}_probabilities'], side_spec.class_names)}</div>")
        cards.append(f"<div class='card pair'>{page.keyed_card_head(row)}<div class=sides>{''.join(sides)}</div>"
                     "</div>")
    return (f"<p>The {len(rows)} inputs they disagree on most (both surest of different labels): each as the model "
            "saw it (with the original) and as the candidate saw it, by its own card's recipe.</p>"
            "<div class=sheet>" + "".join(cards) + "</div>")
