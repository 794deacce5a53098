"""`seal bench round`: one ReSTEM round's E-step on a fixed workload, the reference-style
exhaustive evaluation next to seal's fast E-step, in one run.

Workload: P passages of a SQuAD file x k self-edits sampled once and saved (default
`bench/workload_round.json`: 8 dev passages x 5 self-edits, the first 8 of the seed-0 shuffle;
the racing rule was chosen on other passages, scripts/race_curves.py). Every path scores the
same self-edits at the inner-loop and reward defaults (LoRA r32 on all linear layers, lr 1e-3,
5 epochs; containment reward from greedy answers), and ReSTEM's filter keeps the best self-edit
per passage if its reward is > 0 (equal rewards ordered by the gold answers' log-prob, as
`restem.tie_break` does by default; each path orders by its own log-probs).

Paths, each in a fresh subprocess:
  ref          exhaustive, reference style: per self-edit a deep copy, a PEFT LoRA and
               `transformers.Trainer` (batch 1, gradient accumulation to 8), then greedy
               answers with transformers' `generate` and the gold answers' log-probs from a
               forward of their own (bench._ref_train; `Speedups.share_prefill` off), one
               self-edit after another: the paper's E-step on a CPU
  exhaustive   seal's inner loop, every self-edit trained and graded in full (k adapters side by
               side, one common seed per passage, as `seal train`)
  racing       the same with `restem.selection racing` at its defaults (seal/engine/racing.py)
  racing x2    racing on two single-thread processes, the passages split between them, run at
               once (wall time: the slower one); only with --threads 2
  noise        exhaustive with other inner-loop seeds: how often reward noise alone changes the
               kept self-edit (the floor any selection is measured against)
and self-edit sampling on the workload's prompts: tokens/s against the roofline of a decode step
(every step reads all weights once: batch x bandwidth / weight bytes; and the matmul peak).

Times exclude model loading and the unadapted model's grades (once per passage, the same for
every path). Agreement is per passage: does the path keep the same self-edit (or none) as the
exhaustive path with the same seeds.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

from seal.bench import inner_loop as B
from seal.bench import machine as M
from seal.bench import workers as P
from seal.bench import workload as W
from seal.engine.jobs import job_seed

ROUND_WORKLOAD = "bench/workload_round.json"


# ----------------------------------------------------------------------------- jobs and keeps

def round_jobs(wl: dict, seed_offset: int = 0, passages: list[str] | None = None) -> list:
    """The E-step's jobs as `seal train` builds them: parsable self-edits only, one common seed per
    passage, grouped by passage (a passage's k self-edits train side by side)."""
    from seal import knowledge as K
    jobs = []
    for p in wl["passages"]:
        if passages is not None and p["id"] not in passages:
            continue
        passage = K.Passage(p["id"], p["title"], p["context"], [K.QA(q["question"], q["answer"], p["title"]) for q in p["questions"]])
        for j, c in enumerate(p["selfedits"]):
            items = K.parse_selfedit(c, wl["template"])
            if items:
                jobs.append(K.Job(f"{p['id']}/{j}", [p["id"]], K.training_examples(passage, items, wl["include_passage"]),
                                  passage.questions, job_seed(wl["seed"] + seed_offset, p["id"]), group=p["id"]))
    return jobs


def kept(rewards: dict[str, float | None], tiebreak: dict[str, float | None] | None = None) -> dict[str, int | None]:
    """ReSTEM's best-positive filter per passage (restem.select_kept: equal rewards ordered by
    `tiebreak`, then the first; None: nothing > 0). Keys 'passage/sample'; a None reward (stopped
    by racing) is never kept."""
    from seal.engine.restem import select_kept

    def split(key: str) -> tuple[str, int]:
        pid, j = key.split("/")
        return pid, int(j)

    out: dict[str, int | None] = {split(k)[0]: None for k in rewards}
    for pid, j, _ in select_kept({split(k): r for k, r in rewards.items()}, "best-positive",
                                 tiebreak={split(k): v for k, v in (tiebreak or {}).items()}):
        out[pid] = j
    return out


def agreement(path: dict, reference: dict) -> dict:
    """Per passage: the same self-edit kept (or none by both), and the reference reward lost by
    keeping the path's choice instead of the reference's (0 when none is kept). `path` and
    `reference` are path results: 'rewards' by 'passage/sample' and optional 'tiebreak' (the
    gold-answer log-probs that order equal rewards). `no_loss`: the share of passages where the
    path's choice is worth as much as the reference's under the reference's rewards (a tie that
    went the other way counts here, not in `same_kept`)."""
    ref = reference["rewards"]
    kp, kr = kept(path["rewards"], path.get("tiebreak")), kept(ref, reference.get("tiebreak"))
    pids = sorted(kr)
    same = [kp.get(p) == kr[p] for p in pids]

    def value(pid, j):
        return 0.0 if j is None else (ref.get(f"{pid}/{j}") or 0.0)

    loss = [value(p, kr[p]) - value(p, kp.get(p)) for p in pids]
    return {"passages": len(pids), "same_kept": sum(same) / len(pids) if pids else None,
            "no_loss": sum(x <= 1e-12 for x in loss) / len(pids) if pids else None,
            "kept_reward_loss_mean": sum(loss) / len(loss) if loss else None,
            "kept_reward_loss_max": max(loss) if loss else None,
            "differ": [p for p, s in zip(pids, same) if not s]}


# ----------------------------------------------------------------------------- workers

def _base_grades(model, tok, chat, jobs, ev, speed=None) -> tuple[dict, float]:
    from seal import knowledge as K
    from seal.training.generation import HFGenerator
    seen = {}
    for j in jobs:
        seen.setdefault(j.passage_ids[0], j.questions)
    t = time.perf_counter()
    graded = K.score_rows(model, tok, HFGenerator(model, tok), chat, list(seen.values()), [-1] * len(seen), ev,
                          speed=speed)
    return {pid: K.mean_metrics(g) for pid, g in zip(seen, graded)}, time.perf_counter() - t


def _load(spec: dict):
    import torch

    from seal.config import ModelConfig
    from seal.training.models import load_model, uses_chat
    torch.set_num_threads(spec["threads"])
    mcfg = ModelConfig(name=spec["model"])
    model, tok = load_model(mcfg)
    wl = json.loads(Path(spec["workload"]).read_text())
    jobs = round_jobs(wl, spec.get("seed_offset", 0), spec.get("passages"))
    return model, tok, uses_chat(tok, mcfg), jobs


def run_round_fast(spec: dict) -> dict:
    """Seal's E-step on the workload: exhaustive, or racing when spec['race'] is set."""
    from seal import knowledge as K
    from seal.config import EvalConfig, InnerLoopConfig
    from seal.engine.jobs import run_inner_jobs
    from seal.engine.racing import Race, rung_epochs
    from seal.training.generation import HFGenerator
    from seal.training.models import model_device, pick_dtype
    model, tok, chat, jobs = _load(spec)
    inner, ev = InnerLoopConfig(), K.reward_eval_config(EvalConfig())
    base, base_s = _base_grades(model, tok, chat, jobs, ev)
    race = None
    if spec.get("race"):
        r = spec["race"]
        race = Race(rung_epochs(r["first"], r["eta"], inner.epochs), r["eta"], r["score"])
    res = {}
    t = time.perf_counter()
    run_inner_jobs(K.QAInnerLoop(inner, ev, race=race), model, tok, HFGenerator(model, tok), chat, jobs,
                   lambda j, x: res.__setitem__(j.key, x))
    secs = time.perf_counter() - t
    rewards = {j.key: None if res[j.key].get("raced_out") else res[j.key]["metrics"][ev.reward] - base[j.passage_ids[0]][ev.reward]
               for j in jobs}
    tiebreak = {j.key: None if res[j.key].get("raced_out") else res[j.key]["metrics"].get("logprob") for j in jobs}
    return {"path": spec["name"], "evaluations": len(jobs), "seconds": secs, "base_seconds": base_s,
            "rewards": rewards, "tiebreak": tiebreak, "raced_out": sum(bool(x.get("raced_out")) for x in res.values()),
            "executed_train_tokens": sum(x["train"]["executed_tokens"] for x in res.values()),
            "train_seconds": sum(x["train_seconds"] for x in res.values()),
            "stopped_at": {k: x["race"]["stopped_at"] for k, x in res.items() if "race" in x},
            "reward_metric": ev.reward, "race": spec.get("race"), "peak_rss_mib": M.rss_peak_mib(),
            "inner_dtype": str(pick_dtype(inner.dtype, model_device(model))).removeprefix("torch.")}


def run_round_ref(spec: dict) -> dict:
    """The reference-style exhaustive E-step: one self-edit at a time (bench._ref_train)."""
    from seal import knowledge as K
    from seal.config import EvalConfig, InnerLoopConfig
    from seal.training.generation import HFGenerator
    from seal.training.inner_loop import Speedups
    model, tok, chat, jobs = _load(spec)
    inner, ev = InnerLoopConfig(), EvalConfig()
    ref_speed = Speedups(share_prefill=False)  # reference style: generate, then a log-prob forward of its own
    base, base_s = _base_grades(model, tok, chat, jobs, ev, ref_speed)
    rewards, tiebreak, secs = {}, {}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for j in jobs:
            t = time.perf_counter()
            pm, *_ = P.ref_train(model, tok, j, inner, j.seed, 0, 0, tmp)
            graded = K.score_rows(pm, tok, HFGenerator(pm, tok), chat, [j.questions], [-1], ev, speed=ref_speed)[0]
            secs += time.perf_counter() - t
            m = K.mean_metrics(graded)
            rewards[j.key] = m[ev.reward] - base[j.passage_ids[0]][ev.reward]
            tiebreak[j.key] = m.get("logprob")
            del pm
    return {"path": spec["name"], "evaluations": len(jobs), "seconds": secs, "base_seconds": base_s,
            "rewards": rewards, "tiebreak": tiebreak, "reward_metric": ev.reward, "peak_rss_mib": M.rss_peak_mib()}


def memory_bandwidth(mib: int = 512, reps: int = 5) -> float:
    """Best GB/s of a large tensor copy (bytes read + bytes written), with this process's threads."""
    import torch
    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.numel() * 4 / best / 1e9


def run_round_sample(spec: dict) -> dict:
    """Self-edit sampling on the workload's prompts (the E-step's first half), against the roofline."""
    import torch

    from seal import knowledge as K
    from seal.config import SelfEditConfig
    from seal.training.generation import HFGenerator
    from seal.training.models import model_device, pick_dtype
    model, tok, chat, _ = _load(spec)
    wl = json.loads(Path(spec["workload"]).read_text())
    passages = [K.Passage(p["id"], p["title"], p["context"], []) for p in wl["passages"]]
    se = SelfEditConfig(k=wl["k"])
    sampler = spec.get("sampler", "hf")
    gen = HFGenerator(model, tok, decoder=sampler, dtype=spec.get("dtype", "fp32"))
    dtype = pick_dtype(gen.dtype, model_device(model))
    t = time.perf_counter()
    comps = K.sample_selfedits(gen, tok, chat, passages, se, se.k, job_seed(wl["seed"], "selfedit", "own"), {},
                               lambda p, c: None)
    secs = time.perf_counter() - t
    new_toks = sum(min(se.max_new_tokens, len(tok(c, add_special_tokens=False)["input_ids"]) + 1)
                   for cs in comps.values() for c in cs)
    weight_bytes = sum(p.numel() * dtype.itemsize for p in model.parameters())  # as the decode reads them
    dims = M.model_dims(model)
    bw = memory_bandwidth()
    peak = M.matmul_peak(1024, 256, 3)
    flops_peak = peak["fp32" if dtype == torch.float32 else "bf16"]["gflops"] * 1e9
    batch = min(se.batch_size, len(passages) * se.k)
    bw_limit = batch * bw * 1e9 / weight_bytes  # tokens/s if a step only had to read the weights once
    flop_limit = flops_peak / (2 * dims["matmul_params"])
    return {"path": spec["name"], "sampler": sampler, "seconds": secs, "completions": sum(len(c) for c in comps.values()),
            "generated_tokens": new_toks, "tokens_per_second": new_toks / secs, "batch_size": batch,
            "max_new_tokens": se.max_new_tokens, "weight_bytes": weight_bytes, "dtype": str(dtype),
            "bandwidth_gbs": bw, "bandwidth_limit_tokens_per_second": bw_limit,
            "compute_limit_tokens_per_second": flop_limit,
            "fraction_of_bandwidth_limit": new_toks / secs / bw_limit,
            "fraction_of_roofline": new_toks / secs / min(bw_limit, flop_limit),
            "single_stream_bandwidth_limit_tokens_per_second": bw * 1e9 / weight_bytes}


WORKERS = {"round-fast": run_round_fast, "round-ref": run_round_ref, "round-sample": run_round_sample}
P.WORKERS.update(WORKERS)  # P.run_path and P.start_worker find these paths by kind


def run_parallel(specs: list[dict], in_process: bool) -> list[dict]:
    """Run specs at once, each in its own process (in turn when in_process, for tests)."""
    if in_process:
        return [P.worker_for(s["kind"])(s) for s in specs]
    with tempfile.TemporaryDirectory() as tmp:
        started = [P.start_worker(s, tmp) for s in specs]
        return [P.finish_worker(p, op, s) for (p, op), s in zip(started, specs)]


# ----------------------------------------------------------------------------- the benchmark

def race_settings() -> dict:
    from seal.config import ReSTEMConfig
    d = ReSTEMConfig()
    return {"first": d.race_first, "eta": d.race_eta, "score": d.race_score}


def bench_round(args) -> dict:
    from seal import knowledge as K
    from seal.config import ReSTEMConfig
    t_start = time.time()
    wpath = Path(args.workload)
    if not wpath.exists():
        if not Path(args.data).exists():
            raise K.DataError(f"{args.data}: no such data file (--data)")
        print(f"sampling the workload once: {args.passages} passages x {args.k} self-edits -> {wpath}", flush=True)
        wl = P.run_path({"kind": "generate", "name": "generate", "model": args.model, "threads": args.threads,
                         "data": args.data, "passages": args.passages, "k": args.k, "seed": args.seed}, args.in_process)
        wpath.parent.mkdir(parents=True, exist_ok=True)
        wpath.write_text(json.dumps(wl, indent=1) + "\n")
    wl = json.loads(wpath.read_text())
    if wl.get("version") != W.WORKLOAD_VERSION:
        raise K.DataError(f"{wpath}: workload version {wl.get('version')} (expected {W.WORKLOAD_VERSION})")
    base = {"model": args.model, "threads": args.threads, "workload": str(wpath)}
    race = race_settings()
    ties = ReSTEMConfig().tie_break
    pids = [p["id"] for p in wl["passages"]]
    specs = [("ref", {"kind": "round-ref"}), ("exhaustive", {"kind": "round-fast"}),
             ("racing", {"kind": "round-fast", "race": race})]
    if args.noise:
        specs.append(("noise", {"kind": "round-fast", "seed_offset": 1}))
    paths: dict[str, dict] = {}
    for name, extra in specs:
        print(f"running path {name!r} ...", flush=True)
        paths[name] = P.run_path({**base, **extra, "name": name}, args.in_process)
        print(f"  {paths[name]['seconds']:.0f} s", flush=True)
    if args.threads == 2 and args.two_workers:
        print("running path 'racing x2' (two single-thread processes at once) ...", flush=True)
        halves = [pids[0::2], pids[1::2]]
        parts = run_parallel([{**base, "kind": "round-fast", "race": race, "threads": 1, "passages": h,
                               "name": f"racing-x2-{i}"} for i, h in enumerate(halves)], args.in_process)
        paths["racing x2"] = {"path": "racing x2", "evaluations": sum(p["evaluations"] for p in parts),
                              "seconds": max(p["seconds"] for p in parts), "parts": parts,
                              "rewards": {k: v for p in parts for k, v in p["rewards"].items()},
                              "tiebreak": {k: v for p in parts for k, v in p["tiebreak"].items()},
                              "raced_out": sum(p["raced_out"] for p in parts)}
        print(f"  {paths['racing x2']['seconds']:.0f} s", flush=True)
    sampling = None
    if args.sampling:
        sampling = {}
        for decoder, dtype in (("hf", "fp32"), ("pruned", "fp32"), ("pruned", "auto")):
            name = decoder if dtype == "fp32" else f"{decoder} {dtype}"
            print(f"measuring self-edit sampling ({name}) ...", flush=True)
            sampling[name] = P.run_path({**base, "kind": "round-sample", "name": f"sampling-{decoder}-{dtype}",
                                         "sampler": decoder, "dtype": dtype}, args.in_process)
    if ties == "first":  # the filter orders equal rewards by sample alone
        for p in paths.values():
            p.pop("tiebreak", None)
    ex = paths["exhaustive"]
    agree = {name: agreement(p, ex) for name, p in paths.items() if name != "exhaustive"}
    agree["racing vs ref"] = agreement(paths["racing"], paths["ref"])
    agree["exhaustive vs ref"] = agreement(ex, paths["ref"])
    ref_s = paths["ref"]["seconds"]
    return {
        "command": "seal bench round", "argv": sys.argv[1:], "seed": args.seed,
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "inner_loop_config": B.inner_defaults(), "race": race, "tie_break": ties,
        "workload": {"file": str(wpath), "hash": W.workload_hash(wl), "data": wl["data"], "data_sha256": wl["data_sha256"],
                     "passage_ids": pids, "k": wl["k"], "model": wl["model"]},
        "machine": M.machine_info(args.threads), "gpu": "none lent to this run (CPU only)",
        "paths": paths, "speedup_vs_ref": {n: ref_s / p["seconds"] for n, p in paths.items()},
        "agreement_with_exhaustive": agree, "sampling": sampling, "wall_seconds": time.time() - t_start,
    }


def render(r: dict) -> str:
    m = r["machine"]
    lines = [(f"workload: {len(r['workload']['passage_ids'])} passages x {r['workload']['k']} self-edits "
             f"({r['workload']['file']}, sha256 {r['workload']['hash'][:12]}, data {r['workload']['data_sha256'][:12]})"),
             (f"machine: {m['cpu_model']}, flags {' '.join(m['cpu_flags'])}, torch {m['torch']}, {m['torch_threads']} "
             f"threads; GPU: {r['gpu']}"),
             (f"racing: first rung at epoch {r['race']['first']}, eta {r['race']['eta']}, rung score {r['race']['score']}; "
              f"equal rewards ordered by {r.get('tie_break', 'first')} (restem.tie_break)"),
             (f"precision: seal's inner loop {r['paths']['exhaustive'].get('inner_dtype', '?')} (inner.dtype auto: bf16 "
              f"where the CPU has AVX-512 BF16 or AMX); ref fp32 (transformers.Trainer's default)"),
             "", (f"{'path':<12} {'evals':>5} {'stopped':>7} {'seconds':>8} {'s/eval':>7} {'vs ref':>7} "
             f"{'same kept':>9} {'no loss':>7} {'kept loss':>9}")]
    for name, p in r["paths"].items():
        a = r["agreement_with_exhaustive"].get(name)
        same = "-" if a is None else f"{a['same_kept']:.2f}"
        no_loss = "-" if a is None or a.get("no_loss") is None else f"{a['no_loss']:.2f}"
        loss = "-" if a is None else f"{a['kept_reward_loss_mean']:+.3f}"
        lines.append(f"{name:<12} {p['evaluations']:>5} {p.get('raced_out', 0):>7} {p['seconds']:>8.0f} "
                     f"{p['seconds'] / max(1, p['evaluations']):>7.1f} {r['speedup_vs_ref'][name]:>6.1f}x {same:>9} {no_loss:>7} {loss:>9}")
    a = r["agreement_with_exhaustive"]
    lines += ["", ("same kept / kept loss: against the exhaustive path with the same seeds (loss: its reward minus the "
              "reward, under exhaustive evaluation, of what the path kept; mean over passages); no loss: the share of "
              "passages where that loss is 0 (the same choice, or an equally rewarded one)"),
              (f"racing vs ref: same kept {a['racing vs ref']['same_kept']:.2f}; exhaustive vs ref: same kept "
              f"{a['exhaustive vs ref']['same_kept']:.2f} (implementation noise: PEFT + Trainer vs seal's loop)")]
    if "noise" in a:
        lines.append(f"noise floor (exhaustive, other seeds): same kept {a['noise']['same_kept']:.2f}, kept loss "
                     f"{a['noise']['kept_reward_loss_mean']:+.3f}")
    for decoder, s in (r.get("sampling") or {}).items():
        lines += ["", (f"sampling ({decoder} decoder): {s['tokens_per_second']:.1f} tokens/s ({s['generated_tokens']} tokens, "
                  f"{s['completions']} completions, batch {s['batch_size']}, {s['dtype']}); memory bandwidth "
                  f"{s['bandwidth_gbs']:.1f} GB/s, weights {s['weight_bytes'] / 1e6:.0f} MB -> limit "
                  f"{s['bandwidth_limit_tokens_per_second']:.0f} tokens/s at this batch "
                  f"({s['fraction_of_bandwidth_limit']:.1%}); compute limit {s['compute_limit_tokens_per_second']:.0f} "
                  f"tokens/s; {s['fraction_of_roofline']:.1%} of the roofline")]
    return "\n".join(lines)


def cmd_round(args, argv=None) -> int:
    result = bench_round(args)
    out = Path(args.out)
    B.write_report("round", result, render(result), out, out.with_suffix(".md"), argv)
    return 0


def add_cli(subparsers) -> None:
    """`seal bench`: `inner-loop` (bench/inner_loop.py) and `round`."""
    import argparse
    sub = B.add_cli(subparsers)
    q = sub.add_parser("round", help="one ReSTEM round's E-step: reference-style exhaustive vs seal's racing",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--model", default="default", help="model (default: the bundled SmolLM2-135M-Instruct)")
    q.add_argument("--data", default="../shared/data/squad/dev.json", help="SQuAD file a new workload is drawn from")
    q.add_argument("--passages", type=B.at_least(1), default=8, help="passages in a new workload (default 8)")
    q.add_argument("--k", type=B.at_least(1), default=5, help="self-edits per passage in a new workload (default 5)")
    q.add_argument("--workload", default=ROUND_WORKLOAD, help="fixed workload file (created if missing)")
    q.add_argument("--seed", type=B.at_least(0), default=0, help="seed of a new workload")
    q.add_argument("--threads", type=B.at_least(1), default=2, help="torch threads per path (default 2)")
    q.add_argument("--noise", action=argparse.BooleanOptionalAction, default=True,
                   help="exhaustive again with other seeds: the reward noise floor (default on)")
    q.add_argument("--two-workers", action=argparse.BooleanOptionalAction, default=True,
                   help="with --threads 2: racing on two single-thread processes at once (default on)")
    q.add_argument("--sampling", action=argparse.BooleanOptionalAction, default=True,
                   help="time self-edit sampling against the memory-bandwidth roofline (default on)")
    q.add_argument("--out", default="results/bench_round.json", help="JSON result file (and a .md copy)")
    q.add_argument("--in-process", action="store_true", help="every path in this process (tests)")
    q.set_defaults(func=cmd_round)


if __name__ == "__main__":  # the worker process of a `round-*` path (workers.start_worker)
    P.worker_main(sys.argv[2], sys.argv[3])
