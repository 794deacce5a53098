"""A registry's versions for a user: `seal history` (every version, its documents and what each
adapt measured; `--verify` checks every adapter against its recorded hash) and `seal rollback`."""

from __future__ import annotations

import json

from seal.config import ConfigError
from seal.documents.adapt import MAX_VERSION, figures_text, printable, selfedit_text
from seal.documents.registry import DocumentRow, Registry


def history(path: str, as_json: bool = False, verify: bool = False) -> dict:
    """`seal history`: every version; with `verify`, every adapter checked against its recorded
    sha256 (`out["verify"]`, see `check_versions`)."""
    reg = Registry.open(path)
    try:
        out = {"registry": str(reg.path), "format_version": int(reg.meta("format_version")), "model": reg.model,
               "current": reg.current, "versions": [], "events": reg.events()}
        for vid in reg.version_ids():
            v = reg.version(vid)
            s = v["summary"]
            out["versions"].append({
                "version": vid, "parent": v["parent"], "created": v["created"], "current": vid == reg.current,
                "documents": len(reg.documents(vid)), "probe_means": s.get("probe_means"), "refused": s.get("refused", []),
                "added": [_doc_json(reg, d) for d in reg.introduced(vid)]})
        problems = reg.verify()
        if verify:
            out["verify"] = check_versions(reg)
    finally:
        reg.close()
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        print_history(out)
    if verify and not as_json:
        print_verify(out)
    elif not verify:
        for p in problems:
            print(f"warning: {p}")
    return out


def check_versions(reg: Registry) -> dict:
    """Which documents' adapters are damaged (size or sha256 not what was recorded at commit, a
    file missing or unreadable), which versions hold them, and which versions still serve."""
    damaged = reg.damaged()
    versions = {}
    for vid in reg.version_ids():
        versions[vid] = [{"document": d.id, "title": d.title, "source": d.source, "problem": damaged[d.id]}
                         for d in reg.documents(vid) if d.id in damaged]
    intact = [v for v, bad in versions.items() if not bad]
    n_docs = reg.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    return {"documents_checked": n_docs, "problems": reg.verify(), "damaged_documents": sorted(damaged),
            "versions": {str(v): bad for v, bad in versions.items()}, "intact_versions": intact,
            "newest_intact": max(intact) if intact else None}


def print_verify(h: dict) -> None:
    v, cur = h["verify"], h["current"]
    print(f"\nverify: {v['documents_checked']} document adapter(s) checked against the size and sha256 recorded at "
          "commit")
    for p in v["problems"]:
        if not p.startswith("document "):  # (a damaged document is listed below with its versions)
            print(f"  problem: {printable(p)}")
    seen = set()
    for vid, bad in v["versions"].items():
        for d in bad:
            if d["document"] not in seen:
                seen.add(d["document"])
                print(f"  damaged: document {d['document']} \"{printable(d['title'])}\" ({printable(d['source'])}): "
                      f"{printable(d['problem'])}")
    for vid, bad in v["versions"].items():
        if bad:
            flag = " (current)" if int(vid) == cur else ""
            print(f"  version {vid}{flag} cannot serve document(s) {', '.join(str(d['document']) for d in bad)}")
    if not seen and not v["problems"]:
        print(f"  every adapter is intact; all {len(v['versions'])} version(s) serve")
        return
    intact = v["intact_versions"]
    if cur in intact:
        print(f"  the current version {cur} is intact and serves")
    else:
        print(f"  the current version {cur} is damaged; intact: {', '.join(map(str, intact))}; "
              f"`seal rollback {v['newest_intact']}` serves the newest intact version")


def _doc_json(reg: Registry, d: DocumentRow) -> dict:
    return {"document": d.id, "source": d.source, "title": d.title, "sha256": d.sha256, "text_sha256": d.text_sha256,
            "chunk": d.chunk, "chunks": d.chunks, "adapter": str(reg.adapter_path(d.adapter)), "record": d.record}


def print_history(h: dict) -> None:
    print(f"registry {h['registry']} (format {h['format_version']}, model {h['model']}): "
          f"{len(h['versions'])} version(s), current {h['current']}")
    for v in reversed(h["versions"]):
        flag = "  <- current" if v["current"] else ""
        parent = "" if v["parent"] is None else f", parent {v['parent']}"
        means = v["probe_means"] or {}
        probe = "" if not means or means.get("f1") is None else \
            f"; probes: f1 {means['f1']:.2f}, containment {means['containment']:.2f}"
        print(f"\nversion {v['version']}{parent}, {v['created']}: {v['documents']} document(s){probe}{flag}")
        if v["version"] == 0:
            print("  the base model, no adapters")
        for d in v["added"]:
            r = d["record"]
            chunk = f", chunk {d['chunk'] + 1}/{d['chunks']}" if d["chunks"] > 1 else ""
            print(f"  + document {d['document']}: \"{printable(d['title'])}\" from {printable(d['source'])}{chunk}, "
                  f"sha256 {d['sha256'][:16]}")
            print(f"    adapter {d['adapter']}")
            print(selfedit_text(r, "    "))
            for q in r["probes"]:
                print(f"    probe ({q['kind']}): {printable(q['question'])} -> {printable(q['answer'])}")
            print(f"    {figures_text(r, r['gate'].get('metric', 'f1'))}")
            if "questions" in r and "after" in r["questions"]:
                q = r["questions"]
                print(f"    labelled questions ({q['n']}): containment {q['before'].get('containment', 0):.2f} -> "
                      f"{q['after'].get('containment', 0):.2f}")
        for x in v["refused"]:
            print(f"  x refused by the gate: {printable(x['source'])} (drop {x['gate']['drop']:.3f} > {x['gate']['threshold']:g})")
    rollbacks = [e for e in h["events"] if e["kind"] == "rollback"]
    if rollbacks:
        print("\nrollbacks: " + "; ".join(f"{e['time']} {e['detail']['from']} -> {e['version']}" for e in rollbacks))




def rollback(path: str, version: int, lock_wait: float = 0.0) -> int:
    reg = Registry.open(path, lock_wait=lock_wait)
    try:
        before = reg.rollback(version)
    finally:
        reg.close()
    print(f"version {version} is current (was {before}); nothing was deleted: `seal rollback {before}` returns to it")
    return 0


def parse_version(text: str) -> int:
    t = text.strip().lower().lstrip("v")
    if not (t.isascii() and t.isdigit()):
        raise ConfigError(f"VERSION must be a version number (e.g. 2 or v2), got {text!r}")
    if len(t) > 30 or int(t) > MAX_VERSION:  # (SQLite's integers are 64-bit)
        raise ConfigError(f"VERSION {printable(text[:40])}{'...' if len(text) > 40 else ''} is past the largest "
                          f"version number ({MAX_VERSION}); `seal history` lists the versions")
    return int(t)

