"""Domains SEAL adapts to. Each module turns its contexts into self-edit prompts, self-edits into
inner-loop training data, and an adapted model into a reward: `knowledge` (SQuAD-style passages,
paper section 4.1) and `arc` (few-shot ARC, paper section 4.2)."""
