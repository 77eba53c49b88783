"""The door's status page (GET /status): one self-contained HTML page, no script and no asset from anywhere.

It shows what runs (the hot model or set and its state), memory as a bar with the guard's floor marked, the last
requests with their tok/s, usage per client key, the last verify per model and variant with its decode rate over the
runs (as `sparkstack verify --host` recorded them here), and the switch history. It reloads itself every REFRESH_S
(`<meta http-equiv="refresh">`), so it needs nothing but the browser. Everything written into it is escaped.
"""

import html
import json
import socket
import time

REFRESH_S = 5
GIB = 1024 ** 3

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}
.bar{position:relative;width:32em;height:1.4em;background:#cfe8cf;border:1px solid #888}
.used{position:absolute;left:0;top:0;bottom:0;background:#7a9cc6}
.floor{position:absolute;top:-.3em;bottom:-.3em;width:2px;background:#c00}
.hot{color:#060;font-weight:bold}.loading{color:#a60}.none{color:#888}.err{color:#c00}
"""


def escape(value):
    return html.escape(str(value), quote=True)


def _ago(when, now):
    seconds = max(0, int(now - when))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def read_verify_history(path, limit=500):
    """(model, variant) -> its runs, oldest first, from the host's copy of verify's history (the last `limit`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()[-limit:]
    except OSError:
        return {}
    series = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            series.setdefault((str(entry.get("model")), str(entry.get("variant"))), []).append(entry)
    return {key: sorted(runs, key=lambda r: str(r.get("time"))) for key, runs in series.items()}


def sparkline(runs, width=160, height=28):
    """An inline SVG of the runs' decode tok/s (INSTRUMENT runs hollow), the baseline dashed."""
    points = [(n, r.get("decode_tok_s")) for n, r in enumerate(runs) if isinstance(r.get("decode_tok_s"), (int, float))]
    baseline = next((r.get("baseline_tok_s") for r in reversed(runs) if r.get("baseline_tok_s")), None)
    if not points:
        return ""
    top = max([v for _, v in points] + [baseline or 0]) * 1.1 or 1
    span = max(1, len(runs) - 1)
    def x(n):
        return 4 + (width - 8) * n / span
    def y(v):
        return height - 3 - (height - 6) * v / top
    line = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in points)
    dots = "".join(
        f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="2.5" '
        f'fill="{"none" if "INSTRUMENT" in (runs[n].get("results") or {}).values() else "#36c"}" stroke="#36c"/>'
        for n, v in points)
    base = (f'<line x1="0" x2="{width}" y1="{y(baseline):.1f}" y2="{y(baseline):.1f}" stroke="#888" '
            f'stroke-dasharray="3,3"/>' if baseline else "")
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="decode tok/s over the runs">{base}'
            f'<polyline points="{line}" fill="none" stroke="#36c"/>{dots}</svg>')


def _rate(tok_s):
    return "" if tok_s is None else f"{tok_s:.1f}"


def render(view):
    """The page for `view`: a dict the door builds (Door.status_view) of plain values."""
    now = view["now"]
    hot = view["hot"]
    if hot:
        what = f"set {hot} ({', '.join(view['models'])})" if view["set"] else hot
        running = f'<span class="hot" id="hot">{escape(what)}</span> hot for {escape(view["hot_for_s"])} s'
    elif view["loading"]:
        running = f'<span class="loading" id="hot">loading {escape(view["loading"])}</span>'
    else:
        running = '<span class="none" id="hot">no model is hot</span>'
    if view["switching"]:
        running += f' &middot; switching to {escape(view["switching"])}'
    memory = view["memory"]
    bar = '<p class="err" id="memory">the memory guard is not reporting (sparkstack-memory-guard.service)</p>'
    if memory:
        total, available, floor = memory["total"], memory["available"], memory.get("floor")
        used_share = 100 * (total - available) / total
        marker = (f'<div class="floor" id="floor" style="left:{100 * (1 - floor / total):.1f}%" '
                  f'title="the guard stops the hot model below {floor / GIB:.1f} GiB available"></div>'
                  if floor else "")
        bar = (f'<div class="bar"><div class="used" style="width:{used_share:.1f}%"></div>{marker}</div>'
               f'<p id="memory">{available / GIB:.1f} GiB available of {total / GIB:.1f} GiB'
               + (f"; the guard stops the hot model below {floor / GIB:.1f} GiB available" if floor else "")
               + "</p>")
    guard = view.get("guard_action")
    if guard:
        bar += f'<p class="err">memory guard: {escape(guard)}</p>'
    rows = "".join(
        f"<tr><td>{escape(_ago(r['at'], now))}</td><td>{escape(r['client'])}</td><td>{escape(r['model'])}</td>"
        f"<td>{escape(r['route'])}</td><td class=\"{'err' if r['status'] >= 400 else ''}\">{escape(r['status'])}</td>"
        f"<td>{r['seconds']:.2f} s</td><td>{escape(r['completion_tokens'])}</td>"
        f"<td>{_rate(r['tok_s'])}</td></tr>"
        for r in reversed(view["recent"])) or '<tr><td colspan="8">no request yet</td></tr>'
    usage = "".join(
        f"<tr><td>{escape(client)}</td><td>{u['requests']}</td><td>{u['prompt_tokens']}</td><td>{u['completion_tokens']}</td>"
        f"<td>{u['errors']}</td></tr>" for client, u in sorted(view["usage"].items())) or '<tr><td colspan="5">none yet</td></tr>'
    switches = "".join(
        f"<tr><td>{escape(_ago(s['at'], now))}</td><td>{escape(s['from'] or 'none')}</td><td>{escape(s['to'] or 'none')}</td>"
        f"<td>{escape(s['why'])}</td></tr>" for s in reversed(view["switches"])) or '<tr><td colspan="4">none seen</td></tr>'
    verify_rows = "".join(
        f"<tr><td>{escape(model)}</td><td>{escape(variant)}</td><td>{escape(runs[-1].get('time'))}</td>"
        f"<td>{_rate(runs[-1].get('decode_tok_s'))}</td><td>{escape(runs[-1].get('baseline_tok_s') or '')}</td>"
        f"<td>{escape(' '.join(f'{k}={v}' for k, v in (runs[-1].get('results') or {}).items()))}</td>"
        f"<td>{sparkline(runs)}</td></tr>"
        for (model, variant), runs in sorted(view.get("verify", {}).items())) or \
        '<tr><td colspan="7">no verify run recorded here yet (sparkstack verify --host)</td></tr>'
    wedges = "".join(
        f"<tr><td>{escape(model)}</td><td class=\"{'err' if w.get('state') == 'stopped' else ''}\">{escape(w.get('state'))}</td>"
        f"<td>{escape(_ago(w.get('at') or now, now))}</td><td>{escape(w['restarts_last_hour'])}</td>"
        f"<td>{escape(w.get('reason'))}<pre>{escape(chr(10).join((w.get('last_logs') or [])[-5:]))}</pre></td></tr>"
        for model, w in sorted(view.get("wedges", {}).items())) or '<tr><td colspan="5">no wedge seen</td></tr>'
    host = escape(socket.gethostname())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>sparkstack: {host}</title><style>{STYLE}</style></head>
<body>
<h1>sparkstack on {host}</h1>
<p>{running}; {view['in_flight']} in flight, {view['waiting']} waiting for a load</p>
<h2>Memory</h2>
{bar}
<h2>Last requests</h2>
<table><tr><th>when</th><th>client</th><th>model</th><th>route</th><th>status</th><th>time</th><th>tokens</th><th>tok/s</th></tr>
{rows}</table>
<h2>Usage per client key</h2>
<table><tr><th>client</th><th>requests</th><th>prompt</th><th>completion</th><th>errors</th></tr>
{usage}</table>
<h2>Last verify per model and variant</h2>
<table id="verify"><tr><th>model</th><th>variant</th><th>when</th><th>tok/s</th><th>baseline</th><th>results</th><th>decode tok/s over the runs</th></tr>
{verify_rows}</table>
<h2>Wedges</h2>
<table id="wedges"><tr><th>model</th><th>state</th><th>when</th><th>restarts this hour</th><th>why, and its last log lines</th></tr>
{wedges}</table>
<h2>Switches</h2>
<table><tr><th>when</th><th>from</th><th>to</th><th>why</th></tr>
{switches}</table>
<p class="none">refreshes every {REFRESH_S} s &middot; {escape(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime()))}</p>
</body></html>
"""
