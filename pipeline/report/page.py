"""Renders the run report as one self-contained HTML page: inline SVG charts and CSS bars, images as data URIs, no
scripts and nothing fetched, so it opens from a bucket or a laptop alike. pipeline.report gathers what it shows."""

import html

from model import display
from pipeline import records

_STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2330; margin: 0;
       background: #f4f5f7; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 0 0 12px; }
.sub { color: #5b6475; margin-bottom: 18px; }
section { background: #fff; border-radius: 10px; padding: 18px 22px; margin: 0 0 18px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 12px; }
.tile { border: 1px solid #e3e6eb; border-radius: 8px; padding: 10px 14px; min-width: 120px; }
.tile b { display: block; font-size: 22px; } .tile span { color: #5b6475; font-size: 12px; }
.ok { color: #1a7f37; } .bad { color: #c62828; } .warn { color: #b26a00; }
.status { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; }
.status.ok { background: #e6f4ea; } .status.bad { background: #fdecea; } .status.warn { background: #fff4e0; }
table { border-collapse: collapse; } td, th { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
th { color: #5b6475; font-weight: 600; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(5, 1fr); gap: 10px; }
.panel { border: 1px solid #e3e6eb; border-radius: 8px; padding: 8px; }
.panel.flag { border: 2px solid #c62828; background: #fff7f7; }
.panel .name { font-weight: 600; font-size: 13px; } .panel .value { font-size: 12px; color: #5b6475; }
.flagline { color: #c62828; font-weight: 600; font-size: 12px; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 12px; }
.card { border: 1px solid #e3e6eb; border-radius: 8px; padding: 10px; }
.card .pics { display: flex; gap: 8px; align-items: flex-end; }
.card img { border: 1px solid #d0d4da; background: #fff; }
.card img.seen { image-rendering: pixelated; width: 84px; height: 84px; background: #000; }
.card .key { font-size: 11px; color: #5b6475; overflow-wrap: anywhere; margin: 6px 0 4px; }
.example { font-size: 12px; overflow-wrap: anywhere; }
.example-row { font-size: 11px; color: #5b6475; overflow-wrap: anywhere; margin: 0 0 3px 12px; }
.card .table-row { font-size: 11px; color: #2f3747; overflow-wrap: anywhere; margin: 0 0 4px; }
.message { font-size: 12px; color: #8a1c1c; margin-bottom: 4px; overflow-wrap: anywhere; }
.card .pred { font-weight: 600; }
.bars { margin-top: 6px; } .bar { display: flex; align-items: center; font-size: 11px; height: 15px; }
.bar .label { width: 78px; color: #5b6475; white-space: nowrap; overflow: hidden; }
.bar .track { flex: 1; background: #eef0f3; height: 9px; border-radius: 2px; }
.bar .fill { height: 9px; background: #8c96a8; border-radius: 2px; } .bar.top .fill { background: #1f6feb; }
.bar .pct { width: 40px; text-align: right; color: #5b6475; }
.missing { width: 84px; height: 84px; display: flex; align-items: center; justify-content: center; font-size: 11px;
           color: #5b6475; border: 1px dashed #c4c9d1; text-align: center; }
.note { color: #5b6475; font-size: 12px; }
.heat td.cell { text-align: right; font-variant-numeric: tabular-nums; padding: 4px 8px; min-width: 34px;
                border: 1px solid #fff; }
.heat th.row { text-align: right; } .heat th.col { writing-mode: vertical-rl; transform: rotate(180deg); }
.card.pair { grid-column: span 2; } .pair .sides { display: flex; gap: 14px; } .pair .side { flex: 1; }
"""

BLUE, GREY, RED, BAND = "#1f6feb", "#8c96a8", "#c62828", "#dbe7fb"


def page(title: str, subtitle: str, sections: list) -> str:
    """The whole document: `sections` are (heading, inner HTML) pairs."""
    body = "".join(f"<section><h2>{html.escape(heading)}</h2>{inner}</section>" for heading, inner in sections)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1><div class=sub>{html.escape(subtitle)}</div>{body}</main>"
            "</body></html>")


def esc(value) -> str:
    """Text for the page: HTML-escaped, with control and bidirectional characters shown as escapes (model.display),
    so a name can neither break the page nor read as something it is not."""
    return html.escape(display.visible(str(value)))


def key_text(key: str, css: str = "key") -> str:
    """An input's key as a line of the page: shortened in the middle when long, with the whole key once, in the
    tooltip, only then; lines break after path separators."""
    shown = esc(display.shortened(key)).replace("/", "/<wbr>")
    title = f" title='{esc(key)}'" if display.is_shortened(key) else ""
    return f"<div class={css}{title}>{shown}</div>"


def keyed_card_head(row: dict) -> str:
    """A picture card's key line (key_text) and, for an input a table named, a line with its table row and kept
    columns (a sheet or disagreement row's table_row and kept pairs: pipeline.outputs.sheet)."""
    where = row.get("table_row")
    if where is None:
        return key_text(row["key"])
    pairs = [(pair["name"], pair["value"]) for pair in row.get("kept") or []]
    return key_text(row["key"]) + key_text(records.table_row_text(where, pairs), "table-row")


def tiles(items: list) -> str:
    """Big numbers with a caption: (value text, caption, css class or '')."""
    return "<div class=tiles>" + "".join(
        f"<div class=tile><b class='{css}'>{esc(value)}</b><span>{esc(caption)}</span></div>"
        for value, caption, css in items) + "</div>"


def table(header: list, rows: list, numeric: set = frozenset(), html_column: list = None) -> str:
    """A plain table; columns whose index is in `numeric` are right-aligned. Cells are escaped; `html_column`, if
    given, is one more cell per row of HTML made here."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    extra = html_column or [""] * len(rows)
    body = "".join("<tr>" + "".join(f"<td class='{'num' if i in numeric else ''}'>{esc(cell)}</td>"
                                     for i, cell in enumerate(row))
                   + (f"<td>{more}</td>" if html_column is not None else "") + "</tr>"
                   for row, more in zip(rows, extra))
    return f"<table><tr>{head}</tr>{body}</table>"


def share_chart(history: list, tonight: float, band, width: int = 200, height: int = 64) -> str:
    """A class's share over the earlier nights (grey line), the usual band (shaded) and tonight (a dot, red when it
    lies outside the band). `history` holds shares (0-1), oldest first; `band` is (low, high) or None."""
    values = list(history) + [tonight]
    top = max(max(values), band[1] if band else 0.0, 0.05) * 1.15
    step = (width - 16) / max(len(values) - 1, 1)
    y = lambda share: height - 6 - (height - 12) * share / top  # noqa: E731
    parts = [f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>"]
    if band:
        tall = max(y(band[0]) - y(band[1]), 1)
        parts.append(f"<rect x='4' y='{y(band[1]):.1f}' width='{width - 8}' height='{tall:.1f}' "
                     f"fill='{BAND}'/>")
    points = " ".join(f"{8 + i * step:.1f},{y(share):.1f}" for i, share in enumerate(values))
    if len(values) > 1:
        parts.append(f"<polyline points='{points}' fill='none' stroke='{GREY}' stroke-width='1.5'/>")
    outside = band is not None and not band[0] <= tonight <= band[1]
    parts.append(f"<circle cx='{8 + (len(values) - 1) * step:.1f}' cy='{y(tonight):.1f}' r='4' "
                 f"fill='{RED if outside else BLUE}'/>")
    parts.append("</svg>")
    return "".join(parts)


def histogram(counts: list, width: int = 200, height: int = 60, marker: float = None) -> str:
    """Bars of counts over equal bins of [0, 1]; `marker` draws the low-confidence threshold as a dashed line."""
    bins = len(counts)
    peak = max(max(counts), 1)
    bar = (width - 8) / bins
    parts = [f"<svg width='{width}' height='{height + 14}' viewBox='0 0 {width} {height + 14}' role='img'>"]
    for index, count in enumerate(counts):
        tall = (height - 4) * count / peak
        parts.append(f"<rect x='{4 + index * bar:.1f}' y='{height - tall:.1f}' width='{max(bar - 1, 1):.1f}' "
                     f"height={tall:.1f} fill='{BLUE}'/>")
    if marker is not None:
        x = 4 + (width - 8) * marker
        parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height}' stroke='{RED}' stroke-dasharray='3 2'/>")
    parts.append(f"<text x='4' y='{height + 12}' font-size='10' fill='#5b6475'>0</text>"
                 f"<text x='{width - 12}' y='{height + 12}' font-size='10' fill='#5b6475'>1</text></svg>")
    return "".join(parts)


# A card's probabilities beyond this many are summed up by their largest: 40 bars would bury the picture.
MAX_BARS = 10


def probability_bars(probabilities, class_names: tuple) -> str:
    """The tutorials' bar chart of the probabilities in class order (the largest MAX_BARS, largest first, for a model
    of more classes), the predicted class in blue."""
    top = max(range(len(probabilities)), key=lambda i: probabilities[i])
    shown = range(len(probabilities))
    if len(probabilities) > MAX_BARS:
        shown = sorted(shown, key=lambda i: -probabilities[i])[:MAX_BARS]
    rows = []
    for index in shown:
        name, value = class_names[index], probabilities[index]
        rows.append(f"<div class='bar{' top' if index == top else ''}'><span class=label>{esc(name)}</span>"
                    f"<span class=track><div class=fill style='width:{100 * value:.1f}%'></div></span>"
                    f"<span class=pct>{100 * value:.0f}%</span></div>")
    return "<div class=bars>" + "".join(rows) + "</div>"


def heat_map(rows: list, columns: list, counts: dict, row_title: str, column_title: str) -> str:
    """A table of counts[row][column] shaded by size: blue where the row and column name the same class, red
    elsewhere (a flip matrix: one model's label down, the other's across)."""
    largest = max([amount for row in counts.values() for amount in row.values()] or [1])
    head = "".join(f"<th class=col>{esc(name)}</th>" for name in columns)
    body = []
    for name in rows:
        cells = []
        for other in columns:
            amount = counts.get(name, {}).get(other, 0)
            strength = 0.08 + 0.85 * amount / largest if amount else 0.0
            colour = "31,111,235" if name == other else "198,40,40"
            ink = "#fff" if strength > 0.5 else "#1d2330"
            cells.append(f"<td class=cell style='background:rgba({colour},{strength:.2f});color:{ink}'>"
                         f"{amount or ''}</td>")
        body.append(f"<tr><th class=row>{esc(name)}</th>{''.join(cells)}</tr>")
    return (f"<table class=heat><tr><th>{esc(row_title)} ↓ · {esc(column_title)} →</th>{head}</tr>"
            f"{''.join(body)}</table>")


def image(data_uri: str, css: str, alt: str, size: int = None) -> str:
    sized = f" width={size} height={size}" if size else ""
    return f"<img class='{css}' src='{data_uri}' alt='{esc(alt)}'{sized}>"


def missing(text: str) -> str:
    return f"<div class=missing>{esc(text)}</div>"
