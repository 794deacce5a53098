"""Your own documents: `seal adapt` / `ask` / `history` / `rollback`, without labelled questions.

    seal adapt FILE... [--registry DIR] [--review]   self-edit, update, gate, commit a version
    seal ask QUESTION [--version N]                   answer with the current (or given) version
    seal history                                      versions, documents, self-edits, figures
    seal rollback VERSION                             make an earlier version current

Design: one adapter per document, the base model frozen. A version is the set of documents
(each with its own LoRA adapter, see registry.py) it holds; version 0 is the base model. At
question time the question is routed to one document's adapter by BM25 over title + text, and
the base model answers when no document holds at least `adapt.router_min_coverage` of the
question's content words (`continual.BM25`; the per-doc guard of `seal continual`). Chosen over
merging every update into the weights because
  * forgetting is structural, not hoped away: an update touches only the questions routed to
    its document, so a version cannot degrade what the documents before it taught (in the
    paper's sequential experiment, merged updates forget; `seal continual --continual.guard
    per-doc` measures the difference);
  * rollback is exact and free (a version is a list; nothing is un-merged), and every version
    stays loadable by plain `peft`, one adapter folder per document;
  * every self-edit is written by the same base model, so a document's update does not depend
    on the order documents arrived in.
The cost: a question about two documents at once reaches only one of them, and routing can
fail; the forgetting gate measures exactly that.

`seal adapt`, per document (a chunk of it when it is longer than one update can hold):

    probes    = write_probes(base model, document)             label-free questions (knowledge/probes.py)
    SE_1..k   ~ base model(. | document)                        `adapt.selfedits` self-edits
    lines     = faithfulness filter(SE_i)                       oversight.py, when on
    adapter_i = SFT(base, lines_i + document)                   the inner loop, `inner` defaults
    adapter   = argmax_i probe metric of adapter_i              (k > 1 only)
    gate: with the new document in the version, routing may send the earlier documents'
          probes to the new adapter; the mean `adapt.gate_metric` over the earlier documents
          (each document's probes averaged, then the documents) must not fall by more than
          `adapt.gate_threshold`; else the update is retried at half its scale (up to
          `adapt.gate_halvings` times, `continual.halving_gate`) and then refused.
    commit the version (atomically, registry.Registry.commit) unless every document was
    refused, or `--review` got no `y`.

Each version stores the grades of every probe it holds, as measured under that version. A new
document changes only the probes whose routing it changes (those it captures, or whose BM25
best match moves as its words join the index), so only those are graded again; the rest keep
their grades (same adapter, same prompt, same greedy answer).

Bad input (each one line, exit 2, before any model loads when it can be): an empty, binary or
non-UTF-8 file, a folder, a missing file (reading.py); a document needing more than
`adapt.max_chunks` chunks; a version that does not exist; a registry folder of a newer format;
a registry built on another model; a second writer (registry.py). None touches a committed
version. A document longer than one update can hold is chunked, and `adapt` says so.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from seal import knowledge as K
from seal.config import ConfigError, LoRAConfig, RunConfig
from seal.documents.oversight import ask_yes, filter_items
from seal.documents.reading import Chunk, chunk_documents, read_documents, text_sha256
from seal.documents.registry import (
    DB_NAME,
    DocumentRow,
    NewDocument,
    Registry,
    RegistryError,
    discard_new_registry,
)
from seal.engine.jobs import job_seed
from seal.knowledge.continual import halving_gate
from seal.knowledge.probes import Probe, probe_scores, write_probes
from seal.knowledge.routing import BM25
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.inner_loop import train_adapters
from seal.training.models import (
    DEFAULT_NAME,
    cache_root,
    check_model_name,
    context_window,
    load_model,
    uses_chat,
)

GRADE_KEYS = ("logprob", "containment", "f1", "em", "answer")
MAX_VERSION = 2**63 - 1
"""The largest version number a registry can hold (SQLite's INTEGER)."""


# ----------------------------------------------------------------------------- documents in a version

@dataclass
class Entry:
    """A document as a version serves it: its text, probes and adapter (in memory for a new one,
    read from the registry on use for a committed one)."""

    key: str
    """sha256 of title + text: the same document in two versions has the same key."""
    title: str
    text: str
    probes: list[Probe]
    source: str = ""
    adapter: str | None = None
    weights: dict | None = None
    lora: LoRAConfig | None = None
    doc_id: int | None = None


def entries_of(reg: Registry, vid: int) -> list[Entry]:
    return [_entry(d) for d in reg.documents(vid)]


def _entry(d: DocumentRow) -> Entry:
    probes = [Probe(p["question"], p["answer"], d.title, p.get("kind", "model")) for p in d.record.get("probes", [])]
    return Entry(d.record["key"], d.title, d.text, probes, d.source, d.adapter, doc_id=d.id)


@dataclass
class Server:
    """The loaded base model, and what answering with a version needs."""

    model: object
    tok: object
    gen: object
    chat: bool
    cfg: RunConfig
    reg: Registry | None = None

    def adapter(self, e: Entry) -> tuple[dict, LoRAConfig]:
        if e.weights is not None:
            return e.weights, e.lora
        try:  # checked against the size and sha256 recorded at commit
            weights, conf = self.reg.read_adapter(e.adapter)
        except RegistryError as err:
            raise RegistryError(f"document {e.doc_id} \"{printable(e.title)}\" ({printable(e.source)}): {err}; "
                                "questions routed to other documents still answer; "
                                f"`seal history --verify --registry {self.reg.path}` lists the versions that still serve"
                                ) from None
        dev = next(self.model.parameters()).device
        return ({k: v.to(dev) for k, v in weights.items()},
                LoRAConfig(rank=conf["r"], alpha=float(conf["lora_alpha"]), targets=tuple(conf["target_modules"])))


def route(entries: list[Entry], queries: list[str], min_coverage: float) -> list[tuple[int, float]]:
    """For each query, (index of the entry whose adapter answers it or -1 for the base model,
    the best entry's coverage of the query's content words); see `continual.BM25.best`."""
    if not entries:
        return [(-1, 0.0)] * len(queries)
    index = BM25([f"{e.title}\n{e.text}" for e in entries])
    return [(i if cov >= min_coverage else -1, cov) for i, cov in map(index.best, queries)]


def grade_routed(su: Server, entries: list[Entry], qas: list[K.QA], routes: list[int]) -> list[dict]:
    """Closed-book grades of each QA (against its `answer`) under the adapter it is routed to,
    asked under that document's title as the training sequences were (the base model: no title)."""
    out: list[dict] = [{} for _ in qas]
    for r in sorted(set(routes)):
        idx = [i for i, x in enumerate(routes) if x == r]
        title = entries[r].title if r >= 0 else ""
        group = [K.QA(qas[i].question, qas[i].answer, title) for i in idx]
        with _attached(su, entries[r] if r >= 0 else None):
            graded = probe_scores(su.model, su.tok, su.gen, su.chat, [group], [0 if r >= 0 else -1], su.cfg.eval)
        for i, g in zip(idx, graded[0]["probes"]):
            out[i] = {k: g[k] for k in GRADE_KEYS if k in g} | {"routed_to": entries[r].key if r >= 0 else None}
    return out


@contextlib.contextmanager
def _attached(su: Server, entry: Entry | None):
    """Within the block, the entry's adapter sits in slot 0 (rows 0 use it); nothing for None."""
    if entry is None:
        yield
        return
    weights, conf = su.adapter(entry)
    lora.load_adapter(lora.attach(su.model, conf, 1), 0, weights)
    try:
        yield
    finally:
        lora.detach(su.model)


def doc_means(entries: list[Entry], grades: dict[str, list[dict]], metric: str) -> float | None:
    """Mean over documents of each document's mean `metric` over its probes."""
    per_doc = []
    for e in entries:
        vals = [g[metric] for g in grades.get(e.key, []) if g.get(metric) is not None]
        if vals:
            per_doc.append(sum(vals) / len(vals))
    return sum(per_doc) / len(per_doc) if per_doc else None


# ----------------------------------------------------------------------------- adapt

def model_name_key(name: str) -> str:
    """The model's name as a registry records it: a local path absolute, anything else as given."""
    local = Path(name).expanduser()
    if name != "default" and (name.startswith((".", "/", "~")) or local.exists()):
        return str(local.resolve())
    return name


def peft_base_path(model_cfg) -> str:
    """Where plain `transformers` finds the registry's base model (written into each adapter's
    adapter_config.json, so `AutoPeftModelForCausalLM.from_pretrained(adapter folder)` works):
    the safetensors copy `seal` caches for the default model or a .gguf file, else the name."""
    name = model_cfg.name
    if name == "default":
        return str(cache_root(model_cfg) / DEFAULT_NAME)
    if name.endswith(".gguf"):
        return str(cache_root(model_cfg) / ("gguf-" + Path(name).stem))
    return name


def bind_model(cfg: RunConfig, stored: str | None, explicit: bool, where: str) -> None:
    """Use the registry's model unless one was named; a different one is refused (its adapters
    fit only the model they were trained on)."""
    if not stored:
        cfg.model.name = model_name_key(cfg.model.name)
        return
    if not explicit:
        cfg.model.name = stored
    elif model_name_key(cfg.model.name) != stored:
        raise ConfigError(f"model.name: {where} holds adapters of the model {stored}, not {cfg.model.name}; "
                          "leave --model out (or use another --registry)")


def stored_model(path: str) -> str | None:
    """The model a registry was made with, or None when there is no registry at `path` yet."""
    if not (Path(path) / "registry.sqlite").exists():  # (one being created has none until it is finished)
        return None
    reg = Registry.open(path)
    try:
        return reg.model
    finally:
        reg.close()


def _check(cfg: RunConfig) -> None:
    if not cfg.eval.generate and cfg.adapt.gate_metric != "logprob":
        raise ConfigError(f"eval.generate false leaves no answers for adapt.gate_metric {cfg.adapt.gate_metric}; "
                          "use eval.generate true or adapt.gate_metric logprob")


def adapt(cfg: RunConfig, files: list[str], argv: list[str]) -> int:
    """`seal adapt`: returns 0 when a version was committed (or nothing was new), 1 when nothing
    was committed (every document refused by the gate, or the review said no)."""
    _check(cfg)
    docs = read_documents(files, int(cfg.adapt.max_document_mb * 2**20))  # all checked before the registry or model
    check_model_name(cfg.model.name)
    folder = Path(cfg.adapt.registry)
    folder_existed, registry_existed = folder.exists(), (folder / DB_NAME).exists()
    reg = Registry.open(folder, create=True, model=cfg.model.name, lock_wait=cfg.adapt.lock_wait)
    try:
        swept, unknown = reg.sweep()
        if swept:
            print(f"registry {reg.path}: removed {len(swept)} adapter folder(s) an interrupted adapt left uncommitted")
        if unknown:
            print(f"registry {reg.path}: left alone {len(unknown)} entr{'y' if len(unknown) == 1 else 'ies'} in adapters/ "
                  f"that no version holds and no adapt recorded as its own: {', '.join(unknown[:3])}")
        parent = reg.current
        print(f"registry {reg.path}: version {parent} is current; model {reg.model}")
        model, tok = load_model(cfg.model)
        chat = uses_chat(tok, cfg.model)
        lora.check_targets(model, cfg.inner.lora, "inner.lora.targets")
        chunks = chunk_documents(cfg, tok, chat, context_window(model), docs)
        su = Server(model, tok, HFGenerator(model, tok), chat, cfg, reg)
        return _adapt_chunks(su, reg, parent, chunks, argv)
    except BaseException:
        if not registry_existed:  # a refused first start (a model refused, a document too long) leaves no registry
            reg.close()
            discard_new_registry(folder, folder_existed)
        raise
    finally:
        reg.close()


def _adapt_chunks(su: Server, reg: Registry, parent: int, chunks: list[Chunk], argv: list[str]) -> int:
    cfg, ac = su.cfg, su.cfg.adapt
    working = entries_of(reg, parent)
    grades: dict[str, list[dict]] = dict(reg.version(parent)["summary"].get("probe_grades", {}))
    have = {e.key for e in working}
    now: dict[str, str] = {}  # documents of this call, by key
    new: list[NewDocument] = []
    refused: list[dict] = []
    for c in chunks:
        name = printable(c.doc.source) + (f" (chunk {c.index + 1}/{c.count})" if c.count > 1 else "")
        if c.key in have:
            print(f"{name}: already in version {parent}; skipped" if c.key not in now else
                  f"{name}: the same text as {now[c.key]} (title and text); skipped")
            continue
        have.add(c.key)
        now[c.key] = name
        t0 = time.time()
        entry, record = adapt_one(su, working, grades, c)
        figures = figures_text(record, ac.gate_metric)
        if not record["gate"]["passed"]:
            print(f"{name}: refused by the forgetting gate ({figures}); {time.time() - t0:.0f} s")
            refused.append({"source": c.doc.source, "title": c.doc.title, "chunk": c.index, "key": c.key,
                            "gate": record["gate"]})
            continue
        print(f"{name}: {figures}; {time.time() - t0:.0f} s")
        working.append(entry)
        new.append(NewDocument(c.doc.source, c.doc.title, c.text, c.doc.sha256, text_sha256(c.text), c.index, c.count,
                               entry.weights, entry.lora.rank, entry.lora.alpha, entry.lora.targets, record))
    if not new:
        if refused:
            print(f"nothing committed: every document was refused by the forgetting gate; version {parent} stays current")
            return 1
        print(f"nothing new to adapt; version {parent} stays current")
        return 0
    summary = {"argv": argv, "added": [d.record["key"] for d in new], "refused": refused,
               "probe_grades": grades, "probe_means": {m: doc_means(working, grades, m) for m in K.METRICS},
               "settings": {k: v for k, v in vars(ac).items() if k != "registry"}, "seed": cfg.seed}
    if ac.review:
        show_review(new, refused, ac.gate_metric)
        if not ask_yes(f"commit version {max(reg.version_ids()) + 1} (parent {parent})? [y/N] "):
            print(f"not committed; version {parent} stays current")
            return 1
    print(f"committing version {max(reg.version_ids()) + 1} (parent {parent}, {len(new)} new document(s))", flush=True)
    vid = reg.commit(parent, new, summary, peft_base_path(cfg.model))
    print(f"version {vid} is current: {len(working)} document(s); ask with: seal ask QUESTION --registry {reg.path}")
    return 0


def adapt_one(su: Server, working: list[Entry], grades: dict[str, list[dict]], c: Chunk) -> tuple[Entry, dict]:
    """Probes, self-edits, update and gate for one chunk against the version being built
    (`working`, whose probe grades are `grades`; both updated in place when the chunk passes)."""
    cfg, ac = su.cfg, su.cfg.adapt
    p = K.Passage(c.key[:12], c.doc.title, c.text, [])
    seed = job_seed(cfg.seed, "adapt", c.key)
    probes = write_probes(su.gen, su.tok, su.chat, p, ac.probes, seed, max_new_tokens=ac.probe_max_new_tokens,
                          max_answer_tokens=cfg.eval.max_answer_tokens, fill=ac.probe_fill,
                          temperature=cfg.selfedit.temperature or 1.0)
    record: dict = {"key": c.key, "probes": [{"question": q.question, "answer": q.answer, "kind": q.kind} for q in probes]}
    routes_parent = [r for r, _ in route(working, [q.question for q in probes], ac.router_min_coverage)]
    before = grade_routed(su, working, probes, routes_parent)
    record["probes_before"] = K.mean_metrics(before)
    if c.doc.questions:
        gold_routes = [r for r, _ in route(working, [q.question for q in c.doc.questions], ac.router_min_coverage)]
        record["questions"] = {"n": len(c.doc.questions),
                               "before": K.mean_metrics(grade_routed(su, working, c.doc.questions, gold_routes))}

    # self-edits by the base model, filtered, each trained; the best on the probes is kept
    comps = K.sample_selfedits(su.gen, su.tok, su.chat, [p], cfg.selfedit, ac.selfedits, seed, {}, lambda *_: None)[p.id]
    record["selfedits"], datasets = [], []
    for text in comps:
        items = K.parse_selfedit(text, cfg.selfedit.template)
        lines = [{"line": it, "gain": None, "kept": True} for it in items]
        if ac.faithfulness and items:
            items, lines = filter_items(su.model, su.tok, p, items, ac.faithfulness_min_gain)
        record["selfedits"].append({"text": text, "lines": lines})
        datasets.append(K.training_examples(p, items, cfg.selfedit.include_passage))
    state = lora.attach(su.model, cfg.inner.lora, len(datasets))
    try:
        stats = train_adapters(su.model, su.tok, datasets, cfg.inner, [seed + i for i in range(len(datasets))])
        best = 0
        if len(datasets) > 1:
            scored = probe_scores(su.model, su.tok, su.gen, su.chat, [probes] * len(datasets),
                                  list(range(len(datasets))), cfg.eval)
            for i, s in enumerate(scored):
                record["selfedits"][i]["probe_metrics"] = s["metrics"]
            best = max(range(len(datasets)), key=lambda i: (scored[i]["metrics"].get(ac.gate_metric, float("-inf")), -i))
        weights = lora.adapter_state(state, best)
    finally:
        lora.detach(su.model)
    record["chosen"] = best
    record["selfedit"] = comps[best]
    record["train"] = {"examples": stats["examples"][best], "tokens": stats["tokens"][best],
                       "steps": stats["adapter_steps"][best], "final_loss": stats["final_loss"][best]}
    entry = Entry(c.key, c.doc.title, c.text, probes, c.doc.source, weights=weights, lora=cfg.inner.lora)

    # the gate: earlier documents' probes whose routing the new document changes, graded again
    candidate = working + [entry]
    earlier = [(e.key, i, q) for e in working for i, q in enumerate(e.probes)]
    queries = [q.question for _, _, q in earlier]
    old_routes = [r for r, _ in route(working, queries, ac.router_min_coverage)]
    new_routes = [r for r, _ in route(candidate, queries, ac.router_min_coverage)]
    changed = [j for j in range(len(earlier)) if old_routes[j] != new_routes[j]]
    trial: dict[str, list[dict]] = {}

    def score_after() -> float | None:
        regraded = grade_routed(su, candidate, [earlier[j][2] for j in changed], [new_routes[j] for j in changed])
        trial.clear()
        trial.update({k: list(v) for k, v in grades.items()})
        for j, g in zip(changed, regraded):
            key, i, _ = earlier[j]
            trial[key][i] = g
        return doc_means(working, trial, ac.gate_metric)

    def halve() -> None:
        for k in entry.weights:
            if k.endswith(".lora_B"):
                entry.weights[k] = entry.weights[k] * 0.5

    gate = halving_gate(doc_means(working, grades, ac.gate_metric), ac.gate_threshold, ac.gate_halvings,
                        score_after, halve)
    gate.update(metric=ac.gate_metric, earlier_documents=len(working), earlier_probes=len(earlier),
                rerouted_probes=len(changed))
    record["gate"] = gate
    if gate["passed"]:
        grades.clear()
        grades.update(trial)  # score_after ran at least once: the grades with the update as kept
        routes_new = [r for r, _ in route(candidate, [q.question for q in probes], ac.router_min_coverage)]
        after = grade_routed(su, candidate, probes, routes_new)
        grades[c.key] = after
        record["probes_after"] = K.mean_metrics(after)
        record["routed_to_own"] = sum(r == len(working) for r in routes_new)
        if c.doc.questions:
            gold_routes = [r for r, _ in route(candidate, [q.question for q in c.doc.questions], ac.router_min_coverage)]
            record["questions"]["after"] = K.mean_metrics(grade_routed(su, candidate, c.doc.questions, gold_routes))
    return entry, record


def figures_text(record: dict, metric: str) -> str:
    """One line: the document's probe figures and the gate's."""
    def f(x):
        return "n/a" if x is None else f"{x:.2f}"
    kinds = [p["kind"] for p in record["probes"]]
    text = (f"{len(kinds)} probes ({kinds.count('model')} written by the model, {kinds.count('cloze')} cloze), "
            f"{metric} {f(record['probes_before'].get(metric))} -> {f(record.get('probes_after', {}).get(metric))}")
    lines = record["selfedits"][record["chosen"]]["lines"]
    text += f"; self-edit {sum(x['kept'] for x in lines)} line(s) kept, {sum(not x['kept'] for x in lines)} dropped"
    g = record["gate"]
    if g["before"] is None:
        return text + "; gate: no earlier probes"
    return (text + f"; gate: earlier {metric} {f(g['before'])} -> {f(g['after'])} (drop {f(g['drop'])}, "
            f"threshold {g['threshold']:g}, scale {g['scale']:g}, {g['rerouted_probes']} probe(s) rerouted)")


def show_review(new: list[NewDocument], refused: list[dict], metric: str) -> None:
    for d in new:
        r = d.record
        print(f"\n== {printable(d.source)}" + (f" (chunk {d.chunk + 1}/{d.chunks})" if d.chunks > 1 else "")
              + f": {printable(d.title)}")
        print(selfedit_text(r, "   "))
        print(f"   {figures_text(r, metric)}")
    for x in refused:
        print(f"\n== {printable(x['source'])}: refused by the gate (drop {x['gate']['drop']:.3f} > {x['gate']['threshold']:g})")


def selfedit_text(record: dict, indent: str) -> str:
    se = record["selfedits"][record["chosen"]]
    if not se["lines"]:
        raw = "".join(f"\n{indent}  | {printable(line)}" for line in se["text"].splitlines())
        return f"{indent}self-edit (no usable line; trained on the document alone):{raw}"
    out = [f"{indent}self-edit:"]
    for x in se["lines"]:
        gain = "" if x["gain"] is None else f" (faithfulness {x['gain']:+.2f})"
        out.append(f"{indent}  {'+' if x['kept'] else '-'} {printable(x['line'])}{gain}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- ask (history and rollback: versions.py)

def answer_question(su: Server, entries: list[Entry], question: str) -> tuple[int, float, str]:
    """(the entry the question is routed to or -1, its coverage, the greedy closed-book answer
    under that entry's adapter, asked under its title; the base model with no title for -1)."""
    (r, cov), = route(entries, [question], su.cfg.adapt.router_min_coverage)
    prompt = K.qa_input(su.tok, K.QA(question.strip(), "", entries[r].title if r >= 0 else ""), su.chat)
    window, answer_tokens = context_window(su.model), su.cfg.eval.max_answer_tokens
    n = len(su.tok(prompt, add_special_tokens=False)["input_ids"])
    if window and n + answer_tokens > window:  # refused, not cut: an answer to half a question misleads
        raise ConfigError(f"QUESTION is too long: {n} tokens with its prompt, and the model reads at most {window} "
                          f"(its context window) with the {answer_tokens}-token answer; ask a shorter question")
    with _attached(su, entries[r] if r >= 0 else None):
        raw = su.gen.generate([prompt], n=1, max_new_tokens=su.cfg.eval.max_answer_tokens, temperature=0.0,
                              rows=[0] if r >= 0 else None)[0][0]
    return r, cov, K.clean_answer(raw)


def ask(cfg: RunConfig, question: str, version: int | None) -> dict:
    """Answer `question` with version `version` (None: the current one); prints which version
    answered and which document's adapter it was routed to."""
    if not question.strip():
        raise ConfigError("ask needs a QUESTION")
    reg = Registry.open(cfg.adapt.registry)
    try:
        current = reg.current
        vid = current if version is None else version
        entries = entries_of(reg, vid)  # names a version that does not exist
        model, tok = load_model(cfg.model)
        chat = uses_chat(tok, cfg.model)
        r, cov, answer = answer_question(Server(model, tok, HFGenerator(model, tok), chat, cfg, reg), entries, question)
    finally:
        reg.close()
    which = f"version {vid}" + (" (current)" if vid == current else "")
    if r >= 0:
        e = entries[r]
        print(f"{which} answered, routed to document {e.doc_id} \"{printable(e.title)}\" ({printable(e.source)}; "
              f"coverage {cov:.2f})")
    else:
        print(f"{which} answered with the base model: no document covers the question "
              f"({'no documents' if not entries else f'best coverage {cov:.2f} < {cfg.adapt.router_min_coverage:g}'})")
    print(printable(answer, keep="\n") or "(an empty answer)")
    return {"version": vid, "document": entries[r].doc_id if r >= 0 else None, "coverage": cov, "answer": answer}


def printable(text: str, keep: str = "") -> str:
    """`text` with control characters (terminal escape sequences included, newlines unless in
    `keep`) shown as escapes (`\\x1b`, `\\r`, `\\n`...): a document's title, self-edit or
    answer cannot drive the user's terminal or forge a line of seal's output."""
    return "".join(c if c in keep or c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    short = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
    return short or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


__all__ = ["RegistryError", "adapt", "ask"]
