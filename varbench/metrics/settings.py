"""The `metrics:` section of a protocol.

The modes and what each one computes are described in `varbench.metrics.modes`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from varbench.hashing import content_hash
from varbench.metrics.encoder_weights import pinned_weights
from varbench.schema import EXECUTION, identity_dict

MODES = ("canonical", "dreammatcher", "kosmosg", "dreambench++")
FIXED_PAIRING_MODES = ("kosmosg", "dreambench++")  # one reference per subject (varbench.metrics.references)


def random_init_backbones(backbones: str) -> bool:
    """Whether metric encoders named `backbones` are random-init: their numbers check the
    pipeline only ("real" and "toyworld" ones are trained)."""
    return backbones not in ("real", "toyworld")


@dataclass
class MetricsConfig:
    # Which evaluator convention (DESIGN.md section 4); every metric row records it.
    mode: Literal["canonical", "dreammatcher", "kosmosg", "dreambench++"] = "canonical"
    # "real": published weights (hub cache or local path); "tiny": random-init
    # encoders of the same families, for tests and the smoke protocol; "random": the real
    # architectures with random weights (rehearsals: real cost, meaningless values);
    # "toyworld": DINO and CLIP trained by varbench on its miniature world
    # (varbench.toyworld.backbones; LPIPS stays random-init there).
    backbones: Literal["real", "tiny", "random", "toyworld"] = "real"
    div: bool = True  # mean pairwise LPIPS among the images of one prompt
    # class-prompt images per subject for PRES (0 = off); papers use 4, 1000 bounds the cell
    pres_images: int = field(default=0, metadata={"range": (0, 1000)})
    # images per encoder batch while scoring (bounded so that a typo cannot ask for a batch
    # no GPU holds)
    batch_size: int = field(default=64, metadata={"range": (1, 4096), EXECUTION: "metric_batch_size"})
    # encoder arithmetic on CUDA: fp32, the evaluators' own (default), or bf16 autocast
    # (faster; canonical values move by up to ~2e-3, x100-scale ones by up to ~0.3, more
    # than methods differ by). On CPU the encoders always run in fp32.
    precision: Literal["bf16", "fp32"] = field(default="fp32", metadata={EXECUTION: "metric_precision"})
    # TF32 tensor-core matmuls and convolutions on CUDA while scoring (fp32 inputs rounded
    # to 10-bit mantissas): off by default for the same reason
    tf32: bool = field(default=False, metadata={EXECUTION: "metric_tf32"})
    # kosmosg and dreambench++ compare every image with one fixed reference: the subject's
    # reference image at this index (in the dataset's order). Unused by the other modes.
    # Subjects have a handful of references; an index past a subject's own count is a
    # UserError when its cell is scored, this bound only keeps the number sane.
    reference_index: int = field(default=0, metadata={"range": (0, 1000)})
    # kosmosg / dreambench++: "release" = the photo the evaluator's release keeps for the
    # subject where it names one (Kosmos-G on DreamBench), else reference_index; "index" =
    # always reference_index (varbench.metrics.references)
    reference: Literal["release", "index"] = "release"
    # dreammatcher's CLIP resize: "antialias" = what its evaluator computes when installed
    # today (torchvision >= 0.17 antialiases tensor resizes: the ARBooth release pins no
    # torchvision), "legacy" = DreamMatcher's pinned torchvision 0.14 (no antialiasing)
    clip_resize: Literal["antialias", "legacy"] = "antialias"
    # metrics beyond the standard five, by name ('varbench list metrics'), e.g. [dinov2_s, copy];
    # each adds its rows to every scored cell and enters the score id (none: the id is unchanged)
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.extra:  # an unknown name fails when the protocol loads, not when a cell is scored
            from varbench.metrics.registry import check_extra

            check_extra(self.extra)


def score_identity(config: MetricsConfig) -> dict[str, Any]:
    """What determines a score: the mode and its options and which encoder weights (the
    pinned revisions for real backbones), plus each extra metric's version and weights.
    Not the batch size or precision (execution options), nor the PRES image count (the
    run's: those images are generated). Without extras it is what it was before extras
    existed, so finished scores keep their ids."""
    skipped = ("pres_images", "extra", "reference", "clip_resize")
    identity = {key: value for key, value in identity_dict(config).items() if key not in skipped}
    # mode options enter only the ids of the modes they change (other ids stay as they were)
    if config.mode in FIXED_PAIRING_MODES:
        identity["reference"] = config.reference
    if config.mode == "dreammatcher":
        identity["clip_resize"] = config.clip_resize
    if config.backbones == "real":
        identity["weights"] = pinned_weights()
    if config.backbones == "toyworld":  # retrained toyworld weights make other scores
        from varbench.toyworld.backbones import metric_digests

        identity["weights"] = metric_digests()
    if config.extra:
        from varbench.metrics.registry import extra_identity

        identity["extra"] = extra_identity(config.extra, with_weights=config.backbones == "real")
    return identity


def score_id(config: MetricsConfig) -> str:
    """`<mode>-<hash>` ("dreambench++" spelled "dreambenchpp": ids are folder names)."""
    return f"{config.mode.replace('+', 'p')}-{content_hash(score_identity(config), length=8)}"
