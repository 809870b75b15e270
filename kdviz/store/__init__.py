"""`Run`: a capture result on disk (Zarr v3 arrays + ``meta.json``), written atomically and read lazily.

Layout of ``NAME.kdviz/`` (docs/architecture.md):
  meta.json                      schema, models, layer map, class names / tokens, capture settings
  inputs/labels                  [N] or [N, T] int64
  inputs/thumbnails              [N, h, w] or [N, h, w, 3] uint8
  inputs/token_ids, attention_mask   [N, T]
  {teacher,student}/logits       [N, C] float32 (classification) or [K, T, V] (kept LM subset)
  {teacher,student}/attn/<i>     [N, H, T, T] float16, one chunk per sample
  {teacher,student}/feat/<name>  [N, ...] float32
  {teacher,student}/spatial/<name>   [N, h, w] float32, attention-transfer maps of CNN features
  {teacher,student}/tokens/<stat>    [N, T] or [N, T, k] per-token statistics of language models
  pair/tokens/<stat>             [N, T] per-token divergences between the two models
  attribution/<target>/<method>/{teacher,student}   [M, H, W] or [M, T] float32 maps, with index [M], class [M]
  history/<step>/{student,pair}/…   the student at a training step (kdviz.distill), same layout as the run's own
Only this package (with `kdviz.integrity`, `kdviz.remote` and `kdviz.parts`) touches the disk. `format` reads
the on-disk format, `run` is the read model, `write` the writers and `find` finds runs.
"""

from kdviz.store.find import iter_run_paths
from kdviz.store.format import CHUNK_TARGET_BYTES, META_FILE, READ_ERRORS, SCHEMA_VERSION
from kdviz.store.run import HISTORY, HISTORY_ROLES, LazyArray, ModelSide, Run, RunAtStep, RunInfo, StoredAttribution, history_key, read_rows
from kdviz.store.write import GroupWriter, RunWriter, move_into_place, refuse_existing

__all__ = ["CHUNK_TARGET_BYTES", "HISTORY", "HISTORY_ROLES", "META_FILE", "READ_ERRORS", "SCHEMA_VERSION", "GroupWriter",
           "LazyArray", "ModelSide", "Run", "RunAtStep", "RunInfo", "RunWriter", "StoredAttribution", "history_key",
           "iter_run_paths", "move_into_place", "read_rows", "refuse_existing"]
