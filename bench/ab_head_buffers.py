"""A/B of the fused head's scratch buffers (inner_loop._buffer): the head as it was before them (fresh
logits / log-prob tensors per chunk, `old_fwd` below) against the current one, interleaved in one
process over one workload passage's 5 self-edits. Writes results/bench_ab_head_buffers.json.

    python bench/ab_head_buffers.py
"""
import json, time, torch, torch.nn.functional as F
from seal import lora, inner_loop as IL
from seal.bench import make_jobs
from seal.config import InnerLoopConfig, ModelConfig
from seal.models import load_model
torch.set_num_threads(2)
new_fwd = IL._LinearCrossEntropy.forward
def old_fwd(ctx, h, weight, bias, tgt, chunk, workspace):
    nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    grad = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    for i in range(0, h.shape[0], chunk):
        hc = h[i : i + chunk].to(weight.dtype)
        logp = torch.log_softmax(F.linear(hc, weight, bias), -1, dtype=torch.float32)
        tc = tgt[i : i + chunk].unsqueeze(-1)
        nll[i : i + chunk] = -logp.gather(-1, tc).squeeze(-1)
        p = logp.exp_()
        p.scatter_add_(-1, tc, torch.full_like(tc, -1.0, dtype=p.dtype))
        grad[i : i + chunk] = (p.to(weight.dtype) @ weight).float()
    ctx.save_for_backward(grad); ctx.h_dtype = h.dtype
    return nll
wl=json.load(open("bench/workload_round.json")); pid=wl["passages"][0]["id"]
jobs=[j for j in make_jobs(wl) if j.passage_ids[0]==pid]
model,tok=load_model(ModelConfig()); inner=InnerLoopConfig()
T={"new":[], "old":[]}; losses={}
for r in range(3):
    for name,f in (("new",new_fwd),("old",old_fwd)):
        IL._LinearCrossEntropy.forward=staticmethod(f)
        lora.attach(model, inner.lora, len(jobs))
        t=time.perf_counter(); st=IL.train_adapters(model,tok,[j.examples for j in jobs],inner,[j.seed for j in jobs]); T[name].append(time.perf_counter()-t)
        losses[name]=st["final_loss"]; lora.detach(model)
        print(r,name,round(T[name][-1],1),flush=True)
from seal.bench import machine_info, workload_hash
out={"command":"python bench/ab_head_buffers.py","workload":"bench/workload_round.json","workload_hash":workload_hash(wl),
     "passage_id":pid,"inner_loop_config":__import__("dataclasses").asdict(inner),"machine":machine_info(2),
     "seconds":T,"best":{k:min(v) for k,v in T.items()},"old_over_new_best":min(T["old"])/min(T["new"]),
     "old_over_new_per_round":[o/n for o,n in zip(T["old"],T["new"])],"final_loss":losses}
json.dump(out,open("results/bench_ab_head_buffers.json","w"),indent=1)
print(out["best"], "old/new best %.3f"%out["old_over_new_best"], "per round", [round(x,3) for x in out["old_over_new_per_round"]])
