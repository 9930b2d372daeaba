"""How well the toyworld generators follow prompts (`known_answers.prompt_following`, every
class and context, judged by the toyworld CLIP), for the weights in $VARBENCH_TOYWORLD_DIR
or the shipped ones: the check to run after `varbench toyworld train` on a GPU.

    python benchmarks/toyworld_generators_check.py --device cuda [--seeds 2] [--only sd,infinity]
"""
from __future__ import annotations

import argparse
import time

from varbench.toyworld.known_answers import make_scorer, prompt_following, toy_infinity_generator, toy_sd_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=1, help="samples per (class, context) prompt")
    parser.add_argument("--only", default="sd,infinity")
    args = parser.parse_args()
    scorer = make_scorer(args.device)
    generators = {"sd": toy_sd_generator, "infinity": toy_infinity_generator}
    for name in args.only.split(","):
        started = time.perf_counter()
        found = prompt_following(scorer, generators[name](args.device), seeds_per_prompt=args.seeds)
        per_class = ", ".join(f"{cls} {ctx:.2f}/{klass:.2f}" for cls, (ctx, klass) in found.per_class.items())
        print(f"{name}: context {found.context_accuracy:.3f}, class {found.class_accuracy:.3f} over {found.images} images "
              f"({time.perf_counter() - started:.0f} s); per class context/class: {per_class}", flush=True)


if __name__ == "__main__":
    main()
