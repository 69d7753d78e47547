"""What an audit writes: ``audit.csv`` (one row per flagged image), ``exclude.txt`` (for
``train --exclude``), ``feature_map.png`` and ``audit.html``, a self-contained page of
thumbnails grouped by kind, most certain first, like report.html.
"""

import base64
import csv
import html
import io
import json

import matplotlib
import numpy as np
from PIL import Image

from resnet_transfer.files import json_safe, write_text_atomic
from resnet_transfer.report import LITERAL_TEXT, save_figure, subplots

__all__ = ["AUDIT_COLUMNS", "KINDS", "plot_feature_map", "write_audit_csv", "write_audit_page", "write_exclude_list"]

AUDIT_COLUMNS = ("path", "split", "kind", "score", "given_label", "suggested_label", "partner_path")
KINDS = {
    "label_issue": ("Label issues", "the given label is probably wrong: a classifier that never saw the image "
                    "(k-fold cross-validation on the features) is confident of another class (confident learning, "
                    "cleanlab). Score: 1 - the given label's probability."),
    "leakage": ("Leakage across splits", "the same or a nearly identical image in two splits: every reported "
                "accuracy counts it as unseen. Score: cosine similarity of the features (1: the same pixels)."),
    "duplicate": ("Duplicates within a split", "the same or a nearly identical image twice in one split. Score: "
                  "cosine similarity of the features (1: the same pixels)."),
    "outlier": ("Outliers", "far from every class: the Mahalanobis distance of the image's features to the nearest "
                "class, beyond Tukey's far-out fence of the training images' distances. Score: 1 - exp(-distance / "
                "median distance)."),
}
_SHOWN_PER_KIND = 60
_THUMBNAIL = 72


def _row(finding, names: dict, labels: dict, class_names: tuple) -> dict:
    partner = finding.partner
    return {
        "path": names[finding.split][finding.index],
        "split": finding.split,
        "kind": finding.kind,
        "score": f"{finding.score:.4f}",
        "given_label": class_names[int(labels[finding.split][finding.index])],
        "suggested_label": "" if finding.suggested is None else class_names[finding.suggested],
        "partner_path": "" if partner is None else names[partner[0]][partner[1]],
    }


def write_audit_csv(path: str, findings: list, *, names: dict, labels: dict, class_names: tuple) -> list:
    """``audit.csv``: the findings as rows of ``AUDIT_COLUMNS``, by kind, most certain first; returns the rows."""
    rows = [_row(finding, names, labels, class_names) for finding in findings]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AUDIT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return rows


def write_exclude_list(path: str, findings: list, *, names: dict) -> int:
    """``exclude.txt`` for ``train --exclude``: every flagged image once, grouped by kind under
    a comment (a duplicate's or a leak's later image; its partner stays). Edit it before use:
    it is a list of suspects, not of verdicts. Returns how many names it holds."""
    lines, listed = ["# images flagged by resnet-transfer audit: check them, delete the lines of those to keep, then",
                     "# train again with --exclude THIS_FILE"], set()
    for kind, (title, _) in KINDS.items():
        chosen = [names[f.split][f.index] for f in findings if f.kind == kind]
        chosen = [name for name in dict.fromkeys(chosen) if name not in listed]
        if chosen:
            lines += ["", f"# {title.lower()} ({len(chosen)})", *chosen]
            listed.update(chosen)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return len(listed)


@matplotlib.rc_context(LITERAL_TEXT)
def plot_feature_map(path: str, places: list, coordinates: np.ndarray, *, labels: dict, class_names: tuple,
                     flagged: set, misclassified: set) -> None:
    """The t-SNE map: a point per sampled image coloured by its given class; flagged images as
    black crosses, images the out-of-sample classifier gets wrong circled."""
    figure, axis = subplots(figsize=(8, 7))
    classes = np.array([int(labels[split][index]) for split, index in places])
    colours = matplotlib.colormaps["tab20" if len(class_names) > 10 else "tab10"]
    for class_index, name in enumerate(class_names):
        members = classes == class_index
        if members.any():
            axis.scatter(coordinates[members, 0], coordinates[members, 1], s=6, color=colours(class_index % colours.N),
                         label=name if len(class_names) <= 20 else None)
    wrong = np.array([place in misclassified for place in places], dtype=bool)
    if wrong.any():
        axis.scatter(coordinates[wrong, 0], coordinates[wrong, 1], s=40, facecolors="none", edgecolors="black",
                     linewidths=0.5, label="misclassified out of sample")
    marked = np.array([place in flagged for place in places], dtype=bool)
    if marked.any():
        axis.scatter(coordinates[marked, 0], coordinates[marked, 1], s=30, marker="x", color="black",
                     linewidths=1.2, label="flagged by the audit")
    axis.set_title(f"Map of the features (t-SNE of {len(places)} images, all splits)")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(loc="best", fontsize=7, markerscale=2, ncol=2)
    save_figure(figure, path)


def _thumbnail(image: np.ndarray) -> str:
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    scale = _THUMBNAIL / max(picture.size)  # (a digit is enlarged pixel by pixel, a photo shrunk smoothly)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    picture = picture.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def _card(finding, row: dict, images: dict) -> str:
    pictures = _thumbnail(images[finding.split][finding.index])
    if finding.partner is not None:
        pictures += _thumbnail(images[finding.partner[0]][finding.partner[1]])
    label = html.escape(row["given_label"])
    if row["suggested_label"]:
        label += f" &rarr; {html.escape(row['suggested_label'])}?"
    partner = f'<br>with {html.escape(row["partner_path"])}' if row["partner_path"] else ""
    return (f'<figure><div>{pictures}</div><figcaption><b>{row["score"]}</b> {label}<br>'
            f'{html.escape(row["split"])}: {html.escape(row["path"])}{partner}</figcaption></figure>')


def write_audit_page(path: str, *, title: str, findings: list, rows: list, images: dict, summary: dict,
                     overlaps: list, map_png: str) -> None:
    """``audit.html``: counts, then each kind's images (up to 60, most certain first; audit.csv
    lists all), the overlapping classes and the feature map, in one self-contained page."""
    sections = []
    for kind, (heading, meaning) in KINDS.items():
        cards = [_card(finding, row, images) for finding, row in zip(findings, rows) if finding.kind == kind]
        shown = "".join(cards[:_SHOWN_PER_KIND])
        more = f"<p>{len(cards) - _SHOWN_PER_KIND} more in audit.csv.</p>" if len(cards) > _SHOWN_PER_KIND else ""
        body = f'<div class="cards">{shown}</div>{more}' if cards else "<p>None found.</p>"
        sections.append(f'<h2 id="{kind}">{html.escape(heading)} ({len(cards)})</h2><p>{html.escape(meaning)}</p>{body}')
    overlap_rows = "".join(f"<tr><td>{html.escape(row['class_a'])}</td><td>{html.escape(row['class_b'])}</td>"
                           f"<td>{row['images']}</td><td>{row['joint_probability']:.4f}</td></tr>" for row in overlaps)
    overlap = (f"<table><thead><tr><th>class</th><th>class</th><th>images in the overlap</th><th>joint probability"
               f"</th></tr></thead><tbody>{overlap_rows}</tbody></table>" if overlaps else "<p>None.</p>")
    with open(map_png, "rb") as handle:
        feature_map = base64.b64encode(handle.read()).decode("ascii")
    counts = "".join(f'<tr><td><a href="#{kind}">{html.escape(KINDS[kind][0])}</a></td><td>{count}</td></tr>'
                     for kind, count in summary["counts"].items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}} th{{background:#eee}}
.cards{{display:flex;flex-wrap:wrap;gap:.6em}} figure{{margin:0;width:12em;border:1px solid #ddd;padding:.3em;
font-size:.75em;overflow-wrap:anywhere}} figure img{{margin-right:.2em;image-rendering:pixelated}}
img.figure{{max-width:100%;border:1px solid #ddd}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Suspects, not verdicts: look at each before acting. <code>exclude.txt</code> lists them all for
<code>train --exclude</code>; delete the lines of the images to keep. Every row is in <code>audit.csv</code>.</p>
<table><thead><tr><th>kind</th><th>images</th></tr></thead><tbody>{counts}</tbody></table>
{''.join(sections)}
<h2>Overlapping classes</h2><p>The pairs of classes the out-of-sample classifier confuses most (cleanlab's
find_overlapping_classes on the training split): candidates to merge, or to describe better.</p>{overlap}
<h2>Map of the features</h2><img class="figure" alt="t-SNE map of the features" src="data:image/png;base64,{feature_map}">
<h2>How it was measured</h2><pre>{html.escape(json.dumps(json_safe(summary), indent=2))}</pre>
</body></html>
"""
    write_text_atomic(path, page)
