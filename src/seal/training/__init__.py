"""Training: the model and its updates, with no notion of a task.

`models` (loading, dtypes, prompts), `lora` (batched LoRA adapters), `inner_loop` (one update per
job: the test-time training loop), `attention` (padded-batch attention), `generation` and
`generation_vllm` (sampling backends) and `peft_folder` (adapters as plain PEFT folders). It
imports only the foundation (`seal.config`, `seal.runs`, `seal.stats`).
"""
