"""Wall time of one ReSTEM round's E-step inner loop: the local executor against the process and
Ray executors with 2 workers, on the same machine, the same jobs and the same seeds, in one run.

    python scripts/bench_executors.py                       # default model, bench/workload_round.json
    python scripts/bench_executors.py --model tests/tiny --workload /tmp/wl.json --data tests/fixtures/squad_tiny.json

Workload: `seal bench round`'s (bench/workload_round.json: 8 dev passages x 5 self-edits
sampled once; made here if missing, from --data). Jobs are the E-step's (seal/bench/round.py
round_jobs: a passage's k self-edits in one batch, one common seed per passage), at the inner-loop
and reward defaults (LoRA r32 on all linear layers, lr 1e-3, 5 epochs, containment reward).

Paths, each timed from the first job to the last result, model loading excluded:
  local      `LocalExecutor`: batch after batch in this process, --threads torch threads
  processes  `ProcessExecutor`: --workers processes, each --threads / --workers torch threads
  ray        `RayExecutor`: --workers actors, the same threads each (skipped when Ray is not
             installed)
A worker executor's start (Ray, each worker loading the model) is timed separately. The
unadapted model's grades are computed once (not timed) and every reward is checked against the
local one (max absolute difference, same self-edit kept per passage).

Writes --out (JSON: config, seed, data sha256, machine, the times, speed-ups, agreement).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="model (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--workload", default="bench/workload_round.json", help="fixed workload file (made if missing)")
    ap.add_argument("--data", default="../shared/data/squad/dev.json", help="SQuAD file a new workload is drawn from")
    ap.add_argument("--passages", type=int, default=8, help="passages in a new workload")
    ap.add_argument("--k", type=int, default=5, help="self-edits per passage in a new workload")
    ap.add_argument("--seed", type=int, default=0, help="seed of a new workload")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="self-edit length cap of a new workload (0: default)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the local path; split among Ray workers")
    ap.add_argument("--workers", type=int, default=2, help="workers of the process and Ray executors")
    ap.add_argument("--kinds", nargs="+", default=["processes", "ray"], choices=("processes", "ray"),
                    help="executors timed against local (default both; ray is skipped when not installed)")
    ap.add_argument("--epochs", type=int, default=0, help="inner-loop epochs (0: the default, 5)")
    ap.add_argument("--out", default="results/bench_executors.json")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.workers < 1 or args.threads % args.workers:
        ap.error("--threads must be a positive multiple of --workers (each worker gets threads / workers)")

    import torch

    from seal import knowledge as K
    from seal.bench import machine as M
    from seal.bench import workers as P
    from seal.bench import workload as W
    from seal.bench.round import _base_grades, agreement, round_jobs
    from seal.config import EvalConfig, ExecutorConfig, InnerLoopConfig, ModelConfig
    from seal.engine.executors import LocalExecutor, Resident, make_executor
    from seal.engine.jobs import job_batches, run_inner_jobs

    torch.set_num_threads(args.threads)
    t_start = time.time()
    wpath = Path(args.workload)
    if not wpath.exists():
        print(f"sampling the workload once: {args.passages} passages x {args.k} self-edits -> {wpath}", flush=True)
        wl = P.run_path({"kind": "generate", "name": "generate", "model": args.model, "threads": args.threads,
                         "data": args.data, "passages": args.passages, "k": args.k, "seed": args.seed,
                         "max_new_tokens": args.max_new_tokens}, True)
        wpath.parent.mkdir(parents=True, exist_ok=True)
        wpath.write_text(json.dumps(wl, indent=1) + "\n")
    wl = json.loads(wpath.read_text())
    jobs = round_jobs(wl)
    inner = InnerLoopConfig(**({"epochs": args.epochs} if args.epochs else {}))
    ev = K.reward_eval_config(EvalConfig())
    mcfg = ModelConfig(name=args.model)
    resident = Resident.load(mcfg)
    base, _ = _base_grades(resident.model, resident.tok, resident.chat, jobs, ev)
    machine = M.machine_info(args.threads)
    print(f"CPU: {machine['cpu_model']} ({machine['logical_cpus']} logical, flags {' '.join(machine['cpu_flags'])}); "
          f"load average at start {machine['load_avg_at_start']}", flush=True)
    loop = K.QAInnerLoop(inner, ev)
    print(f"{len(jobs)} inner-loop jobs in {len(job_batches(jobs, loop.adapters_per_batch))} batches", flush=True)

    def rewards(res):
        return {j.key: res[j.key]["metrics"][ev.reward] - base[j.passage_ids[0]][ev.reward] for j in jobs}

    def tiebreaks(res):  # the log-probs that order equal rewards (restem.tie_break)
        return {j.key: res[j.key]["metrics"].get("logprob") for j in jobs}

    paths = {}
    res: dict = {}
    t = time.perf_counter()
    run_inner_jobs(loop, resident.model, resident.tok, resident.gen, resident.chat, jobs,
                   lambda j, r: res.__setitem__(j.key, r), executor=LocalExecutor(resident))
    paths["local"] = {"seconds": time.perf_counter() - t, "threads": args.threads, "rewards": rewards(res),
                      "tiebreak": tiebreaks(res)}
    print(f"local: {paths['local']['seconds']:.1f} s", flush=True)

    del resident  # the workers load their own copies
    per = args.threads // args.workers
    for kind in args.kinds:
        if kind == "ray" and importlib.util.find_spec("ray") is None:
            print("ray: not installed (pip install 'seal[ray]'), skipped", flush=True)
            continue
        t = time.perf_counter()
        ex = make_executor(ExecutorConfig(kind=kind, workers=args.workers, num_cpus=per), mcfg, threads=per)
        start_s = time.perf_counter() - t
        res = {}
        t = time.perf_counter()
        run_inner_jobs(loop, None, None, None, False, jobs, lambda j, r: res.__setitem__(j.key, r), executor=ex)
        secs = time.perf_counter() - t
        ex.close()
        paths[kind] = {"seconds": secs, "start_seconds": start_s, "workers": args.workers, "threads_per_worker": per,
                       "rewards": rewards(res), "tiebreak": tiebreaks(res)}
        print(f"{kind} ({args.workers} workers x {per} threads): {secs:.1f} s (+ {start_s:.1f} s to start)", flush=True)

    local = paths["local"]
    others = [k for k in paths if k != "local"]
    agree = {k: {"max_abs_reward_diff": max(abs(paths[k]["rewards"][j] - local["rewards"][j]) for j in local["rewards"]),
                 **agreement(paths[k], local)} for k in others}
    out = {"command": "scripts/bench_executors.py", "argv": sys.argv[1:], "seed": wl["seed"],
           "config": vars(args), "inner_loop": {"epochs": inner.epochs, "parallel_adapters": inner.parallel_adapters,
                                                "rank": inner.lora.rank, "lr": inner.lr},
           "reward": ev.reward, "jobs": len(jobs),
           "workload": {"file": str(wpath), "hash": W.workload_hash(wl), "data": wl["data"],
                        "data_sha256": wl["data_sha256"], "k": wl["k"], "model": wl["model"],
                        "passage_ids": [p["id"] for p in wl["passages"]]},
           "machine": machine, "load_avg_at_end": list(os.getloadavg()),
           "paths": paths, "speedup_vs_local": {k: local["seconds"] / paths[k]["seconds"] for k in others},
           "speedup_with_start": {k: local["seconds"] / (paths[k]["seconds"] + paths[k]["start_seconds"]) for k in others},
           "agreement": agree, "wall_seconds": time.time() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for k in others:
        print(f"speed-up {k}/local {out['speedup_vs_local'][k]:.2f}x ({out['speedup_with_start'][k]:.2f}x with the start); "
              f"rewards max |diff| {agree[k]['max_abs_reward_diff']:.2g}, same kept on {agree[k]['same_kept']:.0%} of "
              "passages")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
