"""Markdown for ``bench_peers.py``'s result, and writing it into docs/performance.md.

Each run writes one section, between markers named after its models, so a run of 124m,355m and one
of 774m,1.5b keep their own sections and the hand-written text around them stays.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import peers

NAMES = {
    "ours-int8": "**gpt2-edge int8** (`--quantize`)",
    "ours-int4": "**gpt2-edge int4** (`--bits 4`)",
    "llama-q8_0": "llama.cpp q8_0",
    "llama-q4_0": "llama.cpp q4_0",
    "ct2-int8": "CTranslate2 int8",
}
PEER_PREFIXES = ("llama-", "ct2-")


def _cell(summary: dict[str, Any], key: str, digits: int = 1) -> str:
    if key not in summary:
        return "-"
    lo, hi = summary[f"{key}_range"]
    med = summary[key]
    if len(summary["rounds"]) == 1 or lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def model_table(model: str, entry: dict[str, Any], result: dict[str, Any]) -> list[str]:
    scen = [s for s in result["scenarios"] if s in entry["results"]]
    bw = result.get("bandwidth", {}).get("limit_gb_s")
    head = ["engine", "file MiB"]
    for s in scen:
        p = result["scenarios"][s]["prompt"]
        head += [f"prefill ms ({p})", f"decode tok/s ({p})", f"peak RSS MiB ({p})"]
    if "base" in scen and "long" in scen:
        head.append("long / base decode")
    if bw:
        head.append(f"share of {bw:g} GB/s")
    lines = [f"| {' | '.join(head)} |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for engine, files in entry["engines"].items():
        name = NAMES.get(engine, engine)
        if "error" in files:
            lines.append(f"| {name} | | {files['error'][:200]} |")
            continue
        cells = [name, f"{files['file_mib']:.0f}"]
        for s in scen:
            summ = entry["results"][s].get(engine, {})
            if "error" in summ:
                cells += [summ["error"][:120], "", ""]
                continue
            cells += [
                _cell(summ, "prefill_ms"),
                _cell(summ, "decode_tok_s"),
                _cell(summ, "peak_rss_mib", 0),
            ]
        base = entry["results"].get("base", {}).get(engine, {})
        if "base" in scen and "long" in scen:
            long = entry["results"]["long"].get(engine, {})
            ok = "decode_tok_s" in base and "decode_tok_s" in long
            cells.append(f"{100 * long['decode_tok_s'] / base['decode_tok_s']:.0f}%" if ok else "-")
        if bw:
            first = base or entry["results"][scen[0]].get(engine, {})
            share = files["bytes_per_token"] * first.get("decode_tok_s", 0) / (bw * 1e9)
            cells.append(f"{100 * share:.0f}%" if first.get("decode_tok_s") else "-")
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def ratios(entry: dict[str, Any]) -> list[str]:
    """ours / best peer per scenario: decode ×, prefill speed-up ×, RSS ×."""
    out = []
    for scenario, res in entry["results"].items():
        peers_ok = {
            e: s for e, s in res.items() if e.startswith(PEER_PREFIXES) and "decode_tok_s" in s
        }
        if not peers_ok:
            continue
        best = max(peers_ok, key=lambda e: peers_ok[e]["decode_tok_s"])
        fastest_prefill = min(peers_ok, key=lambda e: peers_ok[e]["prefill_ms"])
        least_rss = min(peers_ok, key=lambda e: peers_ok[e]["peak_rss_mib"])
        for ours in ("ours-int8", "ours-int4"):
            o = res.get(ours, {})
            if "decode_tok_s" not in o:
                continue
            decode = o["decode_tok_s"] / peers_ok[best]["decode_tok_s"]
            prefill = peers_ok[fastest_prefill]["prefill_ms"] / o["prefill_ms"]
            rss = o["peak_rss_mib"] / peers_ok[least_rss]["peak_rss_mib"]
            out.append(
                f"- {scenario}, {ours}: decode **{decode:.2f}×** the best peer ({best}); prefill "
                f"{prefill:.2f}× as fast as the fastest peer's ({fastest_prefill}); peak RSS "
                f"{rss:.2f}× the least ({least_rss})"
            )
    return out


def build_table(entry: dict[str, Any]) -> list[str]:
    rows = [(e, f) for e, f in entry["engines"].items() if f.get("build_wall_s") is not None]
    if not rows:
        return []
    lines = ["| engine | build wall s | build peak RSS MiB |", "|---|---:|---:|"]
    for engine, f in rows:
        peak = f.get("build_peak_rss_mib") or "-"
        lines.append(f"| {NAMES.get(engine, engine)} | {f['build_wall_s']:.0f} | {peak} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    cpu = result["cpu"]
    v = result["versions"]
    lines = [
        f"Measured {result['date']} on **{peers.cpu_line(cpu)}**.",
        f"`python benchmarks/{result['command']}`: {result['threads']} threads, greedy, EOS "
        f"ignored, batch 1; {result['rounds']} rounds, engines taking turns (each in its own "
        f"process, one warm-up then {result['repeats_per_process']} runs; median of the rounds, "
        "their range in brackets).",
        "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if k != "llama.cpp system")
        + ".",
    ]
    bw = result.get("bandwidth")
    if bw:
        c1 = (bw.get("c_1t") or {}).get("best_gb_s")
        lines.append(
            f"Memory read bandwidth ({bw['method']}): {bw['limit_gb_s']} GB/s with 2 threads"
            f"{f', {c1} GB/s with 1' if c1 else ''}; the share column is (weight bytes a token "
            f"× decode tok/s of the first scenario) / {bw['limit_gb_s']} GB/s."
        )
    loads = [
        x
        for m in result["models"].values()
        for s in m["results"].values()
        for x in s["_load_average"]
    ]
    if loads:
        flat = [x for pair in loads for x in pair]
        busy = [
            r["busy_at_start"]
            for m in result["models"].values()
            for s in m["results"].values()
            for e, summ in s.items()
            if e != "_load_average"
            for r in summ["rounds"]
            if "busy_at_start" in r
        ]
        mid = statistics.median(busy) if busy else 0
        extra = (
            f"; the CPUs were {min(busy):.0%}–{max(busy):.0%} busy (median {mid:.0%}) with "
            "other jobs as each process started"
            if busy
            else ""
        )
        lines.append(
            f"Load average over the rounds: {min(flat):.2f}–{max(flat):.2f} (2 CPUs){extra}."
        )
    for model, entry in result["models"].items():
        lines += ["", f"#### GPT-2 {model}", ""]
        lines += model_table(model, entry, result)
        r = ratios(entry)
        if r:
            lines += ["", *r]
        b = build_table(entry)
        if b:
            lines += ["", f"Making each model file ({model}):", "", *b]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, key: str, text: str) -> None:
    """Put ``text`` between this key's markers in ``doc`` (created when missing)."""
    begin, end = f"<!-- bench_peers {key} begin -->", f"<!-- bench_peers {key} end -->"
    block = f"{begin}\n{text}{end}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    old = doc.read_text(encoding="utf-8") if doc.is_file() else "# Performance\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = (
        pattern.sub(lambda _: block, old)
        if pattern.search(old)
        else old.rstrip("\n") + "\n\n" + block
    )
    doc.write_text(new, encoding="utf-8")
