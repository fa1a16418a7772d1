"""A newcomer's fine-tune on the development CT: 10 whole axial slices at one end of the
liver labelled, the liver's other slices scored (benchmarks/results/finetune_layers/).

    python benchmarks/results/finetune_layers/sparse_case.py CONVERTED/ircadb/3Dircadb1.1 OUT

writes OUT/labels10.nii.gz (the ground truth in slices z = 106, 108, ..., 124 of the
converted case, zero elsewhere) and OUT/roi_unlabelled.nii.gz (the liver below z = 105),
then prints the commands that fine-tune with each ``layers`` (4 minutes, no early
stop), segment and score. Labels derived from 3D-IRCADb: keep OUT out of the repository.
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

case, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
vessels = nib.load(case / "vessels.nii.gz")
liver = np.asarray(nib.load(case / "liver.nii.gz").dataobj) > 0
v = np.asarray(vessels.dataobj) > 0
slices = list(range(106, 125, 2))  # the file's third axis is the tool's z
labels = np.zeros(v.shape, np.uint8)
labels[:, :, slices] = v[:, :, slices]
roi = liver.copy()
roi[:, :, 105:] = False
nib.save(nib.Nifti1Image(labels, vessels.affine, vessels.header), out / "labels10.nii.gz")
nib.save(
    nib.Nifti1Image(roi.astype(np.uint8), vessels.affine, vessels.header),
    out / "roi_unlabelled.nii.gz",
)
image, gt = case / "image.nii.gz", case / "vessels.nii.gz"
score = f"{gt} --roi {out}/roi_unlabelled.nii.gz"
print(f"""
export NAPARI_TOPO_MODELS={out}/models
napari-topo segment {image} --out {out}/base
napari-topo evaluate {out}/base/image_mask.nii.gz {score}
for L in all decoder; do
  python -c "import nibabel as nib, numpy as np; from napari_topo.data.io import read_volume; \\
from napari_topo.training.finetune import finetune, save_finetuned; \\
i = read_volume('{image}'); l = read_volume('{out}/labels10.nii.gz'); \\
m, c = finetune(np.asarray(i.data), np.asarray(l.data), 'unet-dice', spacing=i.spacing, \\
minutes=4, patience=100, layers='$L', name='sparse-$L', device='cpu', threads=2); \\
save_finetuned(m, c)"
  napari-topo segment {image} --model sparse-$L --out {out}/seg_$L
  napari-topo evaluate {out}/seg_$L/image_mask.nii.gz {score}
done""")
