"""How well the faithfulness gain (seal/documents/oversight.py) separates supported from invented self-edit
lines, to choose `adapt.faithfulness_min_gain` for the default model.

    PYTHONPATH=src python scripts/faithfulness_calibration.py [--out results/faithfulness_calibration.json]

Two sets, both scored by the default model against their passage:
  * hand-written: 6 lines the Velmora passage supports and 6 that contradict it or invent facts
    (the AUROC of the gain, and how many of each a threshold keeps);
  * the model's own self-edits (implications template, seed 0) on the first 3 built-in demo
    passages, printed line by line for reading (no labels: judge them against the passage).
"""

from __future__ import annotations

import argparse
import json

import torch

from seal import knowledge as K
from seal.config import ModelConfig, SelfEditConfig
from seal.demo import demo_passages
from seal.documents import oversight
from seal.training.generation import HFGenerator
from seal.training.models import load_model, uses_chat

PASSAGE = K.Passage("v", "Velmora", "Velmora is a harbor town founded in 1742 by salt traders. Its lighthouse is painted "
                    "green and white. The town holds a lantern festival every April on the Sorrel River.", [])
SUPPORTED = ["Velmora was founded by salt traders in 1742.", "The lighthouse of Velmora is green and white.",
             "Every April, Velmora holds a lantern festival.", "Velmora is a town by the sea with a harbor.",
             "Salt trade was important to the founding of Velmora.", "Lanterns float on the Sorrel River in April."]
INVENTED = ["Velmora was founded by Roman soldiers in 300 BC.", "The lighthouse of Velmora is painted red.",
            "Velmora is famous for its chocolate factories.", "The mayor of Velmora is Jonas Pike.",
            "Velmora has a population of two million people.", "The festival of Velmora is held in October."]
THRESHOLDS = (0.5, 1.0, 1.5, 2.0, 2.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(ModelConfig())
    chat = uses_chat(tok, ModelConfig())
    good = oversight.faithfulness_gains(model, tok, PASSAGE, SUPPORTED)
    bad = oversight.faithfulness_gains(model, tok, PASSAGE, INVENTED)
    auroc = sum((g > b) + 0.5 * (g == b) for g in good for b in bad) / (len(good) * len(bad))
    out = {"hand_written": {"supported": dict(zip(SUPPORTED, good)), "invented": dict(zip(INVENTED, bad)),
                            "auroc": auroc,
                            "kept": {t: {"supported": sum(g >= t for g in good), "invented": sum(b >= t for b in bad)}
                                     for t in THRESHOLDS}}}
    print(f"hand-written lines: AUROC {auroc:.2f} (supported above invented)")
    for t in THRESHOLDS:
        k = out["hand_written"]["kept"][t]
        print(f"  threshold {t:.1f}: keeps {k['supported']}/6 supported, {k['invented']}/6 invented")
    passages, _, _ = demo_passages()
    comps = K.sample_selfedits(HFGenerator(model, tok), tok, chat, passages[:3], SelfEditConfig(), 1, 0, {},
                               lambda *_: None)
    out["own_selfedits"] = []
    for p in passages[:3]:
        items = K.parse_selfedit(comps[p.id][0], "implications")
        gains = oversight.faithfulness_gains(model, tok, p, items)
        out["own_selfedits"].append({"title": p.title, "passage": p.context, "lines": dict(zip(items, gains))})
        print(f"\n{p.title}: {p.context}")
        for line, g in zip(items, gains):
            print(f"  {g:+.2f}  {line}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
