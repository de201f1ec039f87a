"""``SyntheticHands``: rendered MANO-format hands with exact annotations, generated on the CPU.

Every sample is drawn from its own random stream, seeded by (seed, split, index), so a sample is the
same whatever the access order, the batch it is generated in or the DataLoader worker generating it.
The hand is the project's procedural MANO-format model ``handops.mano.synthetic_model(model_seed)``
evaluated by ``handops.ManoLayer`` (never a downloaded model) and drawn by the software rasteriser of
:mod:`handops_models.data.render`.

What a sample holds (the dictionary of :mod:`handops_models.data.sample`):

* **Subject** — ``num_subjects`` identities, each with its own betas ~ N(0, 1) (clipped to +-2.5) drawn
  from (seed, subject). ``split`` divides the *subjects* (never the samples) by a seeded permutation in
  the proportions ``split_fractions`` (train, val, test); each split has at least one subject, so test
  subjects are never seen in training. A sample picks one of its split's subjects uniformly.
* **Pose** — ``pose_mode="anatomical"`` (default): per long finger a curl level (the hand's overall
  curl, or with probability 0.35 the finger's own: pointing, pinching, counting gestures) mapped to
  flexion angles inside anatomical ranges (MCP -15..90 deg, PIP 0..105, DIP 0..80 and correlated
  with PIP), MCP abduction (spread, less when flexed), a little twist, and a thumb with CMC flexion,
  abduction and opposition and MCP / IP flexion. The flexion axes are the per-joint directions of the
  model's first pose component (``hands_components[0]`` curls every finger, see
  ``handops.mano.synthetic``), abduction axes are ``bone x (little MCP -> index MCP)`` so a positive
  angle moves a finger towards the thumb. ``pose_mode="pca"``: the mean pose plus N(0, 1)
  coefficients on the first eight (designed) pose components. The stored ``pose`` is the flat
  axis-angle (global orientation first), i.e. ``ManoLayer(..., use_pca=False, flat_hand_mean=True)``.
* **Orientation and camera** — with probability ``uniform_view`` (0.3) a uniformly random rotation,
  otherwise the palm or the back of the hand faces the camera, tilted by |N(0, 35 deg)| (at most 80)
  in a random direction; always followed by a uniformly random in-plane rotation. Then a
  pinhole camera with a random field of view (30..60 deg), principal point jittered by up to 2 % of
  the image, and a distance chosen so that the hand's box spans ``fill`` (default 0.45..0.85) of the
  image side (measured orthographically on the mesh; the perspective makes it a little larger), far
  enough that the hand's 3-D size spans at most 1.4 image sides (foreshortened views) and never
  nearer than 12 cm to the closest vertex; the hand centre lands near the image centre, or
  (probability ``truncation``) pushed towards a border so that part of it leaves the image.
* **Appearance** — skin tones from very light to dark (palm side lighter), smooth shading with one
  directional light (wrapped Lambert, ambient, a little Blinn-Phong specular, tinted; evaluated at the
  vertices with smooth normals and interpolated perspective-correctly over the faces, which span a few
  pixels each), then over the whole picture a slight 3-tap lens blur, exposure and sensor noise.
* **Background** (Pillow) — a gradient plus low-frequency colour noise, sometimes a global texture,
  and 3..10 random ellipses, rectangles, triangles, blobs and thin bars, plain, translucent or filled
  with crops of a seeded texture bank (stripes, checkers, rings, blotches); some are skin-coloured
  distractors; with probability 0.4 the background is out of focus (a box blur with the variance of a
  Gaussian of sigma 0.6..2 px).
* **Occluders** — with probability ``occlusion`` one or (35 %) two objects (ellipse, box, triangle,
  blob or a long bar, plain or textured, shaded by a gradient, anti-aliased) in front of the hand,
  centred near a random keypoint and sized from the keypoint box.
* **Visibility** — a keypoint is visible when its pixel (rounded position) is inside the image, not
  covered by an occluder (coverage > 0.5) and not hidden by the hand itself: keypoint depth <=
  z-buffer depth at that pixel + ``margin``, where ``margin = self_occlusion_scale * r +
  self_occlusion_tolerance`` and ``r`` is the keypoint's local tube radius (the mean distance of its
  joint ring of vertices to the joint, at the subject's shape; for a fingertip, a vertex on the rounded
  cap that a slanted view ray enters a little earlier, half the radius of the distal ring). Joints lie
  inside the fingers, about ``r`` behind the surface seen over them; a finger or palm in front of the
  joint puts the surface much further ahead. Defaults 1.25 and 4 mm. The depth is the z-buffer's at the
  keypoint's pixel centre, so near a silhouette or a depth edge the answer is the one of that pixel.
* **Left hands** — ``left_prob`` (default 0: every sample is a right hand, ``is_left`` False) draws
  the mirrored model (``synthetic_model(model_seed, is_right=False)``) for that share of samples.

Images are quantised to multiples of 1/255 (the cache stores uint8), so a cached sample equals a fresh
one exactly. MANO runs in float64 over a batch and is rounded to float32; rendering uses only the
float32 values, so the per-sample output does not depend on the batch it was generated in (up to a
float64-rounding tie, which in practice never happens).

Speed: generation is batched (``generate`` / ``__getitems__``, which DataLoader uses): one float64 MANO
call, one rasterisation and one per-vertex shading of the whole batch, every background / occluder
parameter derived for the batch at once; what stays per sample is what must not depend on the batch
(Pillow drawing of the shapes inside their boxes, the float32 camera stage in numpy). It runs its small
torch ops on one thread (``threads``); DataLoader workers use the other cores. About 1.6-2 ms a sample
at 128 x 128 on one core of this project's machine (``python -m benchmarks.bench_synthetic_data``).

Caching: with ``cache_dir`` the dataset writes its samples once, as shards of ``shard_size`` samples
(one ``.npy`` per array: uint8 images, float32 annotations), into a folder named by a hash of every
generator parameter, the source of the generator (every file of this package, ``render``,
``handops.mano.synthetic``) and the numpy / torch versions, so a stale cache is never read; shards are
written atomically and read back memory-mapped.

Layout: one module per stage of the pipeline, run in this order by ``SyntheticHands._generate``
(``dataset``: arguments, subject splits, shard cache, access), each drawing its numbers from the
per-sample streams of ``stream``:

* scene: ``hand_model`` (the MANO model and what is derived from it, the MANO evaluation), ``poses``,
  ``orientation``, ``camera``;
* appearance: ``shading`` (skin, light, the rendered hand pixels), ``backgrounds`` (with ``shapes`` and
  ``textures``), ``occluders``, ``finishing`` (occluders composited, lens blur, exposure, noise);
* ``visibility``.
"""

from handops_models.data.synthetic.dataset import SyntheticHands, split_subjects
from handops_models.data.synthetic.stream import SPLITS

__all__ = ["SyntheticHands", "split_subjects", "SPLITS"]
