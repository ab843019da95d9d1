"""`hardwire report`: a regression run directory as one static HTML page.

The page needs no server and no network: the CSS is inline and the trend chart is an SVG
drawn here. It shows pass/fail per test, failures grouped by signature (with their seeds and
reproduction commands), functional and code coverage per block with the uncovered items,
performance figures and the trend across runs. Every string that comes from a log, a test
name or a coverage file is escaped. tools/run_results.py describes the run directory.
"""

from __future__ import annotations

from html import escape

from hardwire.run_results import (
    STATUSES,
    RunData,
    code_percent,
    coverage_groups,
    functional_percent,
    group_failures,
    history_with_this_run,
    percent,
)

HISTORY_ROWS = 30
SERIES = (("pass rate", "#2e7d32"), ("functional coverage", "#1565c0"), ("code coverage", "#ef6c00"))

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 16px 40px; color: #1d1d1f; }
h1 { margin: 20px 0 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta, .muted { color: #666; } code, pre { font: 12.5px ui-monospace, monospace; }
pre { background: #f4f4f6; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap; word-break: break-all; }
nav a { margin-right: 14px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 90px; }
.tile b { display: block; font-size: 22px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #fafafa; }
.status { font-weight: 600; border-radius: 3px; padding: 1px 6px; font-size: 12px; }
.passed { background: #e6f4ea; color: #1e6b30; } .failed, .error { background: #fde7e9; color: #a50e0e; }
.skipped { background: #f1f1f1; color: #555; }
.failure-group { border: 1px solid #f3b7bd; border-left: 5px solid #c62828; border-radius: 6px;
                 padding: 8px 12px; margin: 12px 0; }
.failure-group h3 { margin: 2px 0 6px; font-size: 15px; }
.bar { background: #eee; border-radius: 3px; height: 10px; width: 160px; display: inline-block; }
.bar span { background: #1565c0; display: block; height: 10px; border-radius: 3px; }
.holes code { display: inline-block; margin: 1px 6px 1px 0; color: #a50e0e; }
.finding { color: #a50e0e; font-weight: 600; }
.cov-group td:nth-child(-n+3), .code-block td:nth-child(-n+3) { white-space: nowrap; }
"""


# --- the page --------------------------------------------------------------------------------------

def render(run: RunData) -> str:
    suite = run.suite
    title = f"hardwire regression {suite.get('timestamp', '')}".strip()
    body = "\n".join((_header(run), _failures(run), _tests(run), _functional_coverage(run), _code_coverage(run),
                      _performance(run), _history(run)))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _header(run: RunData) -> str:
    s = run.suite
    meta = " &middot; ".join(escape(str(v)) for v in (f"run {run.run_id}", s.get("timestamp"), s.get("hostname"),
                                                          f"{s['time']} s" if s.get("time") else None) if v)
    tiles = [("tests", len(run.tests)), *((status, run.count(status)) for status in STATUSES),
             ("failure groups", len(group_failures(run.tests))),
             ("functional coverage", _pct(functional_percent(run.coverage))),
             ("code coverage", _pct(code_percent(run.code_coverage)))]
    tile_html = "".join(f'<div class="tile" data-name="{escape(name)}"><b>{escape(str(value))}</b>{escape(name)}</div>'
                        for name, value in tiles)
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("failures", "failures"), ("tests", "tests"), ("functional-coverage", "functional coverage"),
        ("code-coverage", "code coverage"), ("performance", "performance"), ("history", "history")))
    return (f'<header><h1>hardwire regression</h1><p class="meta">{meta}</p>'
            f'<div class="tiles">{tile_html}</div><nav>{nav}</nav></header>')


def _failures(run: RunData) -> str:
    groups = group_failures(run.tests)
    if not groups:
        return '<section id="failures"><h2>Failures by signature</h2><p>No failures.</p></section>'
    parts = [f'<section id="failures"><h2>Failures by signature</h2><p>{len(groups)} signatures, '
             f'{sum(len(g.tests) for g in groups)} failing tests.</p>']
    for group in groups:
        n = len(group.tests)
        seeds = ", ".join(escape(s) for s in group.seeds) or '<span class="muted">none recorded</span>'
        repro = "".join(f'<pre class="reproduce">{escape(cmd)}</pre>' for cmd in group.reproductions) or \
            '<p class="muted">no reproduction command recorded</p>'
        tests = "".join(f"<li><code>{escape(t.test_id)}</code> <span class='muted'>{escape(_first_line(t))}</span>"
                        + "".join(f'<pre class="test-reproduce">{escape(cmd)}</pre>' for cmd in t.reproductions)
                        + "</li>" for t in group.tests)
        parts.append(f'<article class="failure-group" data-count="{n}">'
                     f'<h3><span class="count">{n} {"test" if n == 1 else "tests"}</span>: '
                     f'<code class="signature">{escape(group.signature)}</code></h3>'
                     f'<p>seeds: <span class="seeds">{seeds}</span></p><p>reproduce:</p>{repro}'
                     f'<details{" open" if n <= 5 else ""}><summary>tests</summary><ul>{tests}</ul></details>'
                     f"</article>")
    return "".join(parts) + "</section>"


def _first_line(test) -> str:
    return next((s.strip() for s in (test.message or test.text).splitlines() if s.strip()), "")


def _tests(run: RunData) -> str:
    order = {status: i for i, status in enumerate(STATUSES)}
    rows = "".join(
        f'<tr class="test" data-status="{escape(t.status)}"><td><span class="status {escape(t.status)}">'
        f'{escape(t.status)}</span></td><td><code class="test-id">{escape(t.test_id)}</code></td>'
        f'<td>{t.time:.2f}</td><td>{escape(", ".join(t.seeds))}</td></tr>'
        for t in sorted(run.tests, key=lambda t: (order.get(t.status, 9), t.test_id)))
    return (f'<section id="tests"><h2>Tests</h2><table><tr><th>status</th><th>test</th><th>seconds</th>'
            f"<th>seeds</th></tr>{rows}</table></section>")


def _functional_coverage(run: RunData) -> str:
    head = '<section id="functional-coverage"><h2>Functional coverage</h2>'
    if run.coverage is None:
        return head + '<p class="muted">not collected</p></section>'
    rows, notes = [], []
    for g in coverage_groups(run.coverage):
        holes = "".join(f"<code>{escape(h)}</code>" for h in g.holes) or '<span class="muted">none</span>'
        rows.append(f'<tr class="cov-group" data-group="{escape(g.name)}"><td><b>{escape(g.name)}</b></td>'
                    f"<td>{g.covered} / {len(g.bins)}</td><td>{_bar(percent(g.covered, len(g.bins)))}</td>"
                    f'<td class="holes">{holes}</td></tr>')
        notes += [f'<li class="finding">{escape(n)}: hit {hits} times although declared unreachable</li>'
                  for n, hits in g.unexpected.items()]
        notes += [f"<li><code>{escape(n)}</code>: {escape(why)}</li>" for n, why in g.unreachable.items()
                  if n not in g.unexpected]
    unreachable = f"<h3>Declared unreachable</h3><ul>{''.join(notes)}</ul>" if notes else ""
    return (head + f"<p>{_pct(functional_percent(run.coverage))} of the reachable bins hit.</p>"
            "<table><tr><th>block</th><th>bins hit</th><th></th><th>uncovered</th></tr>"
            + "".join(rows) + "</table>" + unreachable + "</section>")


def _code_coverage(run: RunData) -> str:
    head = '<section id="code-coverage"><h2>Code coverage</h2>'
    if not run.code_coverage:
        return head + '<p class="muted">not collected</p></section>'
    rows = []
    for name, b in run.code_coverage.items():
        lines = percent(b.get("lines_hit", 0), b.get("lines_total", 0))
        toggles = percent(b.get("toggles_hit", 0), b.get("toggles_total", 0))
        uncovered = "".join(f"<code>{escape(str(u))}</code>" for u in b.get("uncovered", [])) or \
            '<span class="muted">none</span>'
        rows.append(f'<tr class="code-block"><td><b>{escape(name)}</b></td>'
                    f'<td>{b.get("lines_hit", 0)} / {b.get("lines_total", 0)} {_bar(lines)}</td>'
                    f'<td>{b.get("toggles_hit", 0)} / {b.get("toggles_total", 0)} {_bar(toggles)}</td>'
                    f'<td class="holes">{uncovered}</td></tr>')
    waived = [f"<li><b>{escape(name)}</b> <code>{escape(str(w.get('unit')))}</code>, {w.get('lines')} lines: "
              f"{escape(str(w.get('reason')))}</li>"
              for name, b in run.code_coverage.items() for w in b.get("waived", [])]
    waivers = (f'<h3>Waived: unreachable on their module, left out of the counts</h3><ul id="waived">{"".join(waived)}'
               "</ul>" if waived else "")
    return (head + "<table><tr><th>block</th><th>lines</th><th>toggles</th><th>uncovered</th></tr>"
            + "".join(rows) + "</table>" + waivers + "</section>")


def _performance(run: RunData) -> str:
    head = '<section id="performance"><h2>Performance</h2>'
    if not run.perf:
        return head + '<p class="muted">not collected</p></section>'
    names = list(dict.fromkeys(k for figures in run.perf.values() for k in figures))
    header = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = "".join(f"<tr><td><b>{escape(die)}</b></td>"
                   + "".join(f"<td>{escape(str(figures.get(n, '')))}</td>" for n in names) + "</tr>"
                   for die, figures in run.perf.items())
    return head + f"<table><tr><th>die</th>{header}</tr>{rows}</table></section>"


def _history(run: RunData) -> str:
    records = history_with_this_run(run)
    rows = "".join(
        f"<tr><td>{escape(str(r.get('timestamp', '')))}</td><td>{escape(str(r.get('tests', '')))}</td>"
        f"<td>{escape(str(r.get('passed', '')))}</td><td>{escape(str(r.get('failed', '')))}</td>"
        f"<td>{escape(str(r.get('error', '')))}</td><td>{escape(_pct(r.get('functional_coverage')))}</td>"
        f"<td>{escape(_pct(r.get('code_coverage')))}</td></tr>" for r in reversed(records[-HISTORY_ROWS:]))
    runs = f"{len(records)} run" if len(records) == 1 else f"{len(records)} runs"
    return (f'<section id="history"><h2>History</h2><p>{runs} (this one last).</p>{trend_svg(records)}'
            "<table><tr><th>run</th><th>tests</th><th>passed</th><th>failed</th><th>errors</th>"
            f"<th>functional coverage</th><th>code coverage</th></tr>{rows}</table></section>")


def _bar(value: float | None) -> str:
    width = 0.0 if value is None else max(0.0, min(100.0, float(value)))
    return f'<span class="bar"><span style="width:{width:.1f}%"></span></span> {_pct(value)}'


def _pct(value) -> str:
    return "n/a" if value is None else f"{value}%"


# --- the trend chart ---------------------------------------------------------------------------------

def series_values(record: dict) -> tuple[float | None, ...]:
    ran = (record.get("tests") or 0) - (record.get("skipped") or 0)
    pass_rate = percent(record.get("passed") or 0, ran)
    return pass_rate, record.get("functional_coverage"), record.get("code_coverage")


def trend_svg(records: list[dict], width: int = 760, height: int = 240) -> str:
    """Pass rate and coverage per run, 0-100%, as inline SVG (a native tooltip on each point)."""
    left, right, top, bottom = 44, 16, 14, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(records) - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if len(records) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / 100)

    parts = [f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="pass rate and coverage per run">']
    for tick in (0, 25, 50, 75, 100):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e3e3e3"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#666">{tick}%</text>')
    for k, (label, colour) in enumerate(SERIES):
        points = [(x(i), y(float(v)), v, r) for i, r in enumerate(records)
                  if (v := series_values(r)[k]) is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline class="series" data-series="{label}" fill="none" stroke="{colour}" '
                         f'stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"><title>'
                  f'{escape(str(r.get("timestamp", "")))} {label}: {v}%</title></circle>' for px, py, v, r in points]
        parts.append(f'<rect x="{left + 170 * k}" y="{height - 16}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + 170 * k + 14}" y="{height - 7}" font-size="11">{label}</text>')
    for i in sorted({0, len(records) - 1}) if records else []:
        stamp = str(records[i].get("timestamp", ""))[:16] or f"run {i + 1}"
        parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" font-size="11" fill="#666" '
                     f'text-anchor="{"start" if i == 0 and len(records) > 1 else "end" if i else "middle"}">'
                     f"{escape(stamp)}</text>")
    return "".join(parts) + "</svg>"
