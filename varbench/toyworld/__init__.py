"""The toyworld: a miniature, procedurally drawn world of subjects and contexts.

Eight classes (dogs and cats, backpacks, teapots, vases, cans, sneakers, candles), each
with endless seeded instances that differ in colours, pattern and part shapes, drawn at
64x64 px into eighteen DreamBench-style contexts ("in the jungle", "on the beach", ...)
with DreamBench's property and accessory modifiers ("a red {}", "a {} wearing pink
glasses"). Small backbones are pretrained on it so that every method and metric means
something on a CPU; the `toyworld` dataset holds its held-out subjects.

Modules, one concept each:
- `canvas`: shapes as signed distances, painted on a 64x64 canvas (all pixel maths),
- `instances`: what one instance of a class is, and how it is drawn from its seed,
- `animals`, `objects`: the classes' drawings,
- `contexts`: the backgrounds, `modifiers`: properties and accessories,
- `world`: scenes, rendering, captions, prompt templates, the pretraining sampler,
- `dataset`: the `toyworld` Dataset of held-out subjects.

Every pixel is the same on every machine: numpy with explicitly seeded Generators and
only exactly rounded arithmetic in pixel decisions (see `canvas`).
"""
