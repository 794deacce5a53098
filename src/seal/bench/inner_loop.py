"""`seal bench inner-loop`: how fast seal's inner loop scores a self-edit, next to the paper's
reference-style inner loop, on one fixed saved workload.

Workload. P passages of a SQuAD file, each with k fixed self-edit texts sampled once (fixed
seed) and saved to a JSON file (`bench/workload.json`), so every later run trains on exactly
the same texts. Self-edit generation speed (batched sampling, KV cache) is measured when the
workload is written, or again with `--measure-generation`.

Paths, each in its own fresh subprocess (so each peak RSS is its own):
  fast          seal's default: `run_inner_jobs` -> `train_adapters` (parallel_adapters=5, per-adapter
                AdamW) and the reward (gain in gold-answer log-probability), no answer generation
  fast+gen      the same, also generating every answer greedily (batched, KV cache)
  ref           reference style: per self-edit a deep copy of the model, a PEFT LoRA (same rank,
                alpha, targets, lr, epochs), `transformers.Trainer` with
                per_device_train_batch_size=1 (gradient accumulation to the same batch of 8),
                then greedy generation of every answer plus the same log-probability metric
  ref seed 2    the reference path again with other seeds (LoRA init, data order): the reward's
                own noise, on a documented subset
  ref pad2048   the reference path with every training sequence padded to 2048 tokens (as the
                paper's code does), timed on a few sequences and extrapolated per evaluation

FLOP counts are analytic (see `bench.machine.sequence_train_flops`); the matmul peak is measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from seal.bench.machine import machine_info, matmul_peak
from seal.bench.workers import PAD_LEN, run_path
from seal.bench.workload import WORKLOAD_VERSION, make_jobs, workload_hash
from seal.runs import atomic_write_json

# ----------------------------------------------------------------------------- report

def _rate(r: dict) -> dict:
    secs = r.get("estimated_seconds", r["seconds"])
    train_s = r.get("estimated_train_seconds", r["train_seconds"])
    return {
        "evals_per_min": 60.0 * r["evaluations"] / secs if secs else float("nan"),
        "seconds_per_eval": secs / r["evaluations"],
        "train_tokens_per_s": r["train_tokens"] / r["train_seconds"] if r["train_seconds"] else float("nan"),
        "train_gflops": r["train_flops"] / r["train_seconds"] / 1e9 if r["train_seconds"] else float("nan"),
        "eval_gflops": r["eval_flops"] / r["eval_seconds"] / 1e9 if r["eval_seconds"] else float("nan"),
        "train_share": train_s / secs if secs else float("nan"),
    }


def _within_passage_spearman(a: dict, b: dict) -> float | None:
    from seal.stats import spearman
    by_p: dict[str, list[str]] = {}
    for key in a:
        if key in b:
            by_p.setdefault(key.split("/")[0], []).append(key)
    vals = [spearman([a[k] for k in ks], [b[k] for k in ks]) for ks in by_p.values() if len(ks) >= 3]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def fidelity(a: dict, b: dict) -> dict:
    from seal.stats import spearman
    keys = sorted(set(a) & set(b))
    return {"n": len(keys), "spearman": spearman([a[k] for k in keys], [b[k] for k in keys]),
            "spearman_within_passage_mean": _within_passage_spearman(a, b),
            "mean_reward_a": sum(a[k] for k in keys) / len(keys) if keys else None,
            "mean_reward_b": sum(b[k] for k in keys) / len(keys) if keys else None}


def render(result: dict) -> str:
    peak = result["matmul_peak"]
    p32, p16 = peak["fp32"]["gflops"], peak["bf16"]["gflops"]
    lines = []
    g = result["generation"]
    w = result["workload"]
    sub = f" (subset: workload passages {w['subset']})" if w.get("subset") else ""
    lines.append(f"workload: {len(w['benchmarked_passage_ids'])} passages{sub} x {w['k']} self-edits "
                 f"= {w['evaluations']} evaluations  (sha256 {result['workload']['hash'][:12]}, "
                 f"data {result['workload']['data_sha256'][:12]})")
    lines.append(f"machine: {result['machine']['cpu_model']}, torch {result['machine']['torch']}, "
                 f"{result['machine']['torch_threads']} threads; matmul peak fp32 {p32:.1f} GFLOP/s "
                 f"({peak['fp32']['size']}^2), bf16 {p16:.2f} GFLOP/s ({peak['bf16']['size']}^2); "
                 f"CPU flags {' '.join(result['machine'].get('cpu_flags', [])) or '?'}")
    lines.append(f"self-edit generation ({g.get('measured', 'when the workload was created')}): "
                 f"{g['tokens_per_second']:.1f} tokens/s ({g['generated_tokens']} tokens, {g['completions']} "
                 f"completions, batch {g['batch_size']}, {g['seconds']:.1f} s)")
    lines.append("")
    head = (f"{'path':<26}{'evals':>6}{'s/eval':>9}{'evals/min':>10}{'train tok/s':>12}{'train GFLOP/s':>14}"
            f"{'%fp32':>7}{'eval GFLOP/s':>13}{'%fp32':>7}{'peak RSS MiB':>13}")
    lines += [head, "-" * len(head)]
    for name, r in result["paths"].items():
        x = result["rates"][name]
        star = "*" if r.get("extrapolated") else ""
        lines.append(f"{name + star:<26}{r['evaluations']:>6}{x['seconds_per_eval']:>9.1f}{x['evals_per_min']:>10.2f}"
                     f"{x['train_tokens_per_s']:>12.0f}{x['train_gflops']:>14.1f}{x['train_gflops'] / p32:>7.0%}"
                     f"{x['eval_gflops']:>13.1f}{x['eval_gflops'] / p32:>7.0%}{r['peak_rss_mib']:>13.0f}")
    if any(r.get("extrapolated") for r in result["paths"].values()):
        lines.append("* padded to 2048: training timed on a few padded sequences per self-edit and extrapolated "
                     "to the full update (epochs x sequences); s/eval and evals/min are estimates; "
                     "its tok/s and GFLOP/s count the padding it executes.")
    lines.append("")
    for name, f in result["fidelity"].items():
        lines.append(f"reward agreement {name}: Spearman {_na(f['spearman'], '.3f')} over {f['n']} self-edits "
                     f"(mean within-passage {_na(f['spearman_within_passage_mean'], '.3f')}); "
                     f"mean reward {_na(f['mean_reward_a'], '+.3f')} vs {_na(f['mean_reward_b'], '+.3f')}")
    lines.append("")
    lines.append(result["notes"]["flops"])
    lines.append(result["notes"]["timing"])
    lines.append("")
    lines.append(result["summary"])
    return "\n".join(lines)


def _na(x, spec: str) -> str:
    """`x` formatted, or n/a where a statistic is undefined (None)."""
    return "n/a" if x is None else format(x, spec)


def summary_line(result: dict) -> str:
    """Speed-up over the reference-style path first, then the fraction of the machine's matmul
    peak, peak RSS and reward agreement (the issue's order), then the other ratios."""
    rates, paths, fid = result["rates"], result["paths"], result["fidelity"]
    peak = result["matmul_peak"]
    p32, p16 = peak["fp32"]["gflops"], peak["bf16"]["gflops"]
    top = peak.get("machine", dict(peak["fp32"], dtype="fp32"))
    sp = rates["fast"]["evals_per_min"] / rates["ref"]["evals_per_min"]
    tg = rates["fast"]["train_gflops"]
    parts = [f"{sp:.1f}x self-edit evaluations/min over the reference-style (unpadded) inner loop"]
    if top["dtype"] == "bf16":
        parts.append(f"training at {tg / p16:.0%} of the bf16 matmul peak ({tg:.1f}/{p16:.0f} GFLOP/s)")
    else:
        parts.append(f"training at {tg / p32:.0%} of this machine's matmul peak, which is fp32 "
                     f"({tg:.1f}/{p32:.0f} GFLOP/s; bf16 is emulated here at {p16:.2f} GFLOP/s, "
                     f"so the bf16 'peak' is {tg / p16:.0f}x below what training reaches)")
    parts.append(f"peak RSS {paths['fast']['peak_rss_mib'] / 1024:.1f} GiB (reference {paths['ref']['peak_rss_mib'] / 1024:.1f} GiB)")
    f1 = fid.get("fast vs ref")
    f2 = fid.get("ref vs ref (seed noise)")
    if f1:
        s = f"reward Spearman fast-vs-ref {_na(f1['spearman'], '.2f')} (n={f1['n']})"
        if f2:
            s += f" vs ref-vs-ref {_na(f2['spearman'], '.2f')} (n={f2['n']})"
        parts.append(s)
    if "fast+gen" in rates:
        parts.append(f"{rates['fast+gen']['evals_per_min'] / rates['ref']['evals_per_min']:.1f}x with answer generation")
    if "ref pad2048" in rates:
        parts.append(f"{rates['fast']['evals_per_min'] / rates['ref pad2048']['evals_per_min']:.0f}x over padded-2048 (est.)")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- command

def speedup_variants() -> dict[str, tuple[int, dict[str, bool]]]:
    """The ablation of `inner_loop.Speedups`: name -> (parallel adapters, switches turned off):
    all on, each switch off alone, all off (shared by `--ablate` and bench/ab_inner_loop.py)."""
    from seal.training.inner_loop import Speedups
    names = [f.name for f in dataclasses.fields(Speedups)]
    out = {"all on": (5, {})}
    out.update({f"-{n}": (5, {n: False}) for n in names})
    out["all off"] = (5, {n: False for n in names})
    return out


def bench_inner_loop(args) -> dict:
    from seal import knowledge as K
    threads = args.threads
    import torch
    torch.set_num_threads(threads)
    t_start = time.time()
    wpath = Path(args.workload)
    base_spec = {"model": args.model, "threads": threads, "workload": str(wpath), "seed": args.seed}
    gen_stats = None
    if wpath.exists():
        wl = json.loads(wpath.read_text())
        if wl.get("version") != WORKLOAD_VERSION:
            raise K.DataError(f"{wpath}: workload version {wl.get('version')} (expected {WORKLOAD_VERSION})")
        if wl["model"] != args.model:
            print(f"note: workload was sampled with model {wl['model']!r}; benchmarking {args.model!r}")
        if Path(args.data).exists() and K.file_sha256(args.data) != wl["data_sha256"]:
            print(f"note: {args.data} differs from the file the workload was built from (sha256); "
                  "the workload carries its own passages, so the benchmark is unchanged")
        print(f"workload: {wpath} ({len(wl['passages'])} passages x {wl['k']} self-edits)")
    else:
        if not Path(args.data).exists():
            raise K.DataError(f"{args.data}: no such data file (--data)")
        print(f"sampling the workload once: {args.passages} passages x {args.k} self-edits -> {wpath}")
        wl = run_path({**base_spec, "kind": "generate", "name": "generate", "data": args.data,
                       "passages": args.passages, "k": args.k, "max_new_tokens": args.max_new_tokens}, args.in_process)
        wpath.parent.mkdir(parents=True, exist_ok=True)
        wpath.write_text(json.dumps(wl, indent=1) + "\n")
        gen_stats = dict(wl["generation"], measured="this run, while creating the workload")
    if args.measure_generation and gen_stats is None:
        print("measuring self-edit generation speed")
        fresh = run_path({**base_spec, "kind": "generate", "name": "generate", "data": wl["data"] if Path(wl["data"]).exists() else args.data,
                          "passages": len(wl["passages"]), "k": wl["k"],
                          "max_new_tokens": wl["generation"]["max_new_tokens"]}, args.in_process)
        gen_stats = dict(fresh["generation"], measured="this run (--measure-generation)")
    if gen_stats is None:
        gen_stats = dict(wl["generation"], measured="when the workload was created (rerun with --measure-generation)")

    pids = [p["id"] for p in wl["passages"]]
    if args.subset:
        bad = [i for i in args.subset if not 0 <= i < len(pids)]
        if bad:
            raise K.DataError(f"--subset {bad}: the workload has passages 0..{len(pids) - 1}")
        pids = [pids[i] for i in args.subset]
    all_keys = [j.key for j in make_jobs(wl) if j.key.split("/")[0] in pids]

    def keys_of(n_passages: int, per_passage: int = 0) -> list[str]:
        ps = pids if n_passages <= 0 else pids[:n_passages]
        out = [k for k in all_keys if k.split("/")[0] in ps]
        if per_passage:
            out = [k for k in out if int(k.split("/")[1]) < per_passage]
        return out

    print("measuring the matmul peak")
    peak = matmul_peak(args.peak_size, args.bf16_peak_size)
    specs = [("fast", {"kind": "fast", "generate": False, "jobs": all_keys})]
    if not args.skip_generate_variant:
        specs.append(("fast+gen", {"kind": "fast", "generate": True, "jobs": all_keys}))
    specs.append(("ref", {"kind": "ref", "jobs": keys_of(args.ref_passages)}))
    if args.noise_passages != 0:
        specs.append(("ref seed 2", {"kind": "ref", "seed_offset": 1,
                                     "jobs": keys_of(args.noise_passages, args.noise_selfedits)}))
    if args.padded_selfedits > 0:
        specs.append(("ref pad2048", {"kind": "ref", "pad_to": args.pad_to, "max_seqs": args.padded_seqs,
                                      "jobs": keys_of(1, args.padded_selfedits)}))
    for pa in args.parallel_variants:
        specs.append((f"fast pa={pa}", {"kind": "fast", "parallel_adapters": pa, "jobs": all_keys}))
    if args.compile_variant:
        specs.append(("fast compile", {"kind": "fast", "compile": True, "jobs": all_keys}))
    if args.ablate:
        # each speed-up switched off alone, then all of them, on the first passages only
        jobs = keys_of(args.ablate_passages)
        variants = speedup_variants()
        variants["all off pa=1"] = (1, variants["all off"][1])
        for name, (pa, off) in variants.items():
            specs.append((f"ablate: {name}", {"kind": "fast", "jobs": jobs, "parallel_adapters": pa, "speedups": off}))

    paths = {}
    for name, extra in specs:
        print(f"running path {name!r} ...", flush=True)
        t = time.time()
        paths[name] = run_path({**base_spec, **extra, "name": name}, args.in_process)
        print(f"  done in {time.time() - t:.0f} s", flush=True)
    rates = {n: _rate(r) for n, r in paths.items()}
    fid = {}
    if "rewards" in paths.get("ref", {}):
        fid["fast vs ref"] = fidelity(paths["fast"]["rewards"], paths["ref"]["rewards"])
    if "ref seed 2" in paths:
        fid["ref vs ref (seed noise)"] = fidelity(paths["ref"]["rewards"], paths["ref seed 2"]["rewards"])
    if "fast+gen" in paths:
        fid["fast vs fast+gen (same training)"] = fidelity(paths["fast"]["rewards"], paths["fast+gen"]["rewards"])
    dims = paths["fast"]["dims"]
    result = {
        "command": "seal bench inner-loop", "argv": sys.argv[1:], "seed": args.seed,
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "inner_loop_config": inner_defaults(),
        "workload": {"file": str(wpath), "hash": workload_hash(wl), "data": wl["data"], "data_sha256": wl["data_sha256"],
                     "passage_ids": wl["passage_ids"], "passages": len(wl["passages"]), "k": wl["k"],
                     "subset": args.subset or None, "benchmarked_passage_ids": pids,
                     "evaluations": len(all_keys), "model": wl["model"]},
        "machine": machine_info(threads), "matmul_peak": peak, "generation": gen_stats,
        "model_dims": dims, "paths": paths, "rates": rates, "fidelity": fid,
        "subsets": {n: {"evaluations": r["evaluations"]} for n, r in paths.items()},
        "notes": {
            "flops": (f"FLOPs: N = {dims['matmul_params'] / 1e6:.1f}M matmul parameters (all nn.Linear incl. the tied "
                      "lm_head; embedding lookup excluded). Training = 4N per token (forward + input-gradient "
                      "backward; frozen base gets no weight gradient) + causal attention 6*L*d_attn*T^2 per "
                      "sequence (forward 2*L*d*T^2, backward 2x), LoRA terms neglected (<2%). Evaluation = 2N per "
                      "token + forward attention for the log-prob pass, and prompt prefill + 2N per generated token "
                      "+ KV-cache attention for greedy generation. %fp32 = achieved / this run's fp32 matmul peak."),
            "timing": ("Times exclude model loading and the unadapted model's baseline scores (once per passage, "
                       "shared by its k self-edits); the reference path's time includes its per-self-edit deep copy, "
                       "PEFT wrapping and Trainer setup. Each path runs in its own fresh subprocess; peak RSS is that "
                       "process's maximum (model load included)."),
        },
        "wall_seconds": None,
    }
    result["summary"] = summary_line(result)
    result["wall_seconds"] = time.time() - t_start
    return result


def inner_defaults() -> dict:
    from seal.config import InnerLoopConfig, to_dict
    return to_dict(InnerLoopConfig())


def write_report(name: str, result: dict, text: str, out: Path, md: Path, argv) -> None:
    """Print a benchmark's report and save it: the result as strict JSON (an undefined figure is
    null) and the printed text as Markdown with the command that made it."""
    print()
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    md.write_text(f"# seal bench {name}\n\n```\n" + text + "\n```\n\nCommand: `seal bench " +
                  " ".join(argv[1:] if argv and argv[:1] == ["bench"] else (argv or [])) + "`\n")
    print(f"\nwrote {out} and {md}")


def cmd_inner_loop(args, argv=None) -> int:
    result = bench_inner_loop(args)
    out = Path(args.out)
    write_report("inner-loop", result, render(result), out, Path(args.md) if args.md else out.with_suffix(".md"), argv)
    return 0


def at_least(low: int):
    """An argparse type: an integer >= low (a clear usage error instead of a failure mid-benchmark)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def add_cli(subparsers) -> argparse._SubParsersAction:
    """`seal bench` with `inner-loop`; returns its subcommands (seal.bench.round.add_cli adds `round`)."""
    p = subparsers.add_parser("bench", help="benchmarks", description="Benchmarks of seal's hot paths.")
    sub = p.add_subparsers(dest="bench", required=True)
    q = sub.add_parser("inner-loop", help="inner-loop speed vs a reference-style (PEFT + Trainer) inner loop",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--model", default="default", help="model to adapt (default: the bundled SmolLM2-135M-Instruct)")
    q.add_argument("--data", default="../shared/data/squad/dev.json", help="SQuAD file the workload is drawn from")
    q.add_argument("--passages", type=at_least(1), default=3, help="passages in a new workload (default 3)")
    q.add_argument("--k", type=at_least(1), default=5, help="self-edits per passage in a new workload (default 5)")
    q.add_argument("--max-new-tokens", type=at_least(0), default=0, help="self-edit length cap for a new workload (0: selfedit default)")
    q.add_argument("--workload", default="bench/workload.json", help="fixed workload file (created if missing)")
    q.add_argument("--measure-generation", action="store_true", help="time self-edit sampling again in this run")
    q.add_argument("--out", default="results/bench_inner_loop.json", help="JSON result file")
    q.add_argument("--md", default="", help="Markdown copy of the printed report (default: --out with .md)")
    q.add_argument("--seed", type=at_least(0), default=0, help="seed of the workload (passage choice, sampling, inner-loop seeds)")
    q.add_argument("--threads", type=at_least(1), default=2, help="torch threads for every path (default 2)")
    q.add_argument("--subset", type=int, nargs="*", default=[], metavar="I",
                   help="benchmark only these workload passages (0-based), e.g. to fit a time budget")
    q.add_argument("--ref-passages", type=at_least(0), default=0, help="reference path on the first N passages (0: all)")
    q.add_argument("--noise-passages", type=at_least(-1), default=1,
                   help="second-seed reference run on the first N passages (0: skip; -1: all)")
    q.add_argument("--noise-selfedits", type=at_least(0), default=0, help="... and the first M self-edits of each (0: all)")
    q.add_argument("--padded-selfedits", type=at_least(0), default=2, help="self-edits (of passage 1) for the padded-2048 variant (0: skip)")
    q.add_argument("--pad-to", type=at_least(1), default=PAD_LEN, help="padded length of the padded variant (default 2048, as the paper's code)")
    q.add_argument("--padded-seqs", type=at_least(1), default=2, help="padded sequences timed per self-edit, then extrapolated")
    q.add_argument("--skip-generate-variant", action="store_true", help="no fast path with answer generation")
    q.add_argument("--parallel-variants", type=int, nargs="*", default=[], metavar="N",
                   help="extra fast-path runs with inner.parallel_adapters=N (e.g. 1)")
    q.add_argument("--compile-variant", action="store_true", help="extra fast-path run under torch.compile")
    q.add_argument("--ablate", action="store_true",
                   help="extra fast-path runs with each inner_loop.Speedups switch off, all off, and all off "
                        "with one adapter at a time (on --ablate-passages passages)")
    q.add_argument("--ablate-passages", type=at_least(1), default=1, help="workload passages for --ablate (default 1)")
    q.add_argument("--peak-size", type=at_least(1), default=2048, help="fp32 matmul size for the peak")
    q.add_argument("--bf16-peak-size", type=at_least(1), default=512, help="bf16 matmul size for the peak (emulated bf16 is slow)")
    q.add_argument("--in-process", action="store_true", help="run every path in this process (tests; peaks then mix)")
    q.set_defaults(func=cmd_inner_loop)
    return sub

