"""The engine: what SEAL does with any task, knowing none of them.

`task` (the `Task` protocol a domain implements), `jobs` (inner-loop jobs run in batches, the one
place updates are applied), `restem` (the ReSTEM round skeleton: sample, score, keep, SFT),
`table` (the evaluation skeleton behind `seal evaluate` and `seal arc evaluate`), `racing`
(successive halving of self-edits), `executors` (local, process and Ray workers) and
`sft_distributed` (the M-step under `accelerate launch`). It imports from `seal.training` and the
foundation (`seal.config`, `seal.runs`, `seal.stats`), never from a domain or application:
what it needs from a domain comes through the `Task` protocol or the inner loop a task hands over.
"""
