"""Zero-shot segmentation benchmarks: MMSegmentation class names, folder layouts and readers.

`open_dataset(name, root, layout="auto")` finds the first layout whose folders exist under `root`
(or under one of the layout's nested roots) and lists the evaluation images. `--root` is
MMSegmentation's `data_root`:

- voc21, voc20: JPEGImages/ SegmentationClass/ ImageSets/Segmentation/val.txt (or VOCdevkit/VOC2012/...);
  sample layout: samples/*_image.png + *_target.png (RGB palette) and misc/*.jpg + *.png
- context60, context59: JPEGImages/ SegmentationClassContext/ ImageSets/SegmentationContext/val.txt
  (or VOCdevkit/VOC2010/...)
- coco_object: images/val2017/ annotations/val2017/*_instanceTrainIds.png (GroupViT/TCL);
  coco-instances layout: val2017/ + annotations/instances_val2017.json, rasterised
- coco_stuff: images/val2017/ annotations/val2017/*_labelTrainIds.png
- ade20k: images/validation/ annotations/validation/ (or ADEChallengeData2016/...);
  sample layout: sampleData/images + sampleData/annotations
- cityscapes: leftImg8bit/val/<city>/ gtFine/val/<city>/*_gtFine_labelTrainIds.png
  (also below tests/data/pseudo_cityscapes_dataset)

- folder: any labelled folder, DIR/images + DIR/masks matched by file stem, with a class file (`open_folder`,
  mgca.evalsets.folder)

Labels come back in the dataset's class indices with 255 for void; ADE20K, VOC20 and Context59
use reduce_zero_label (0 -> 255, k -> k-1). A wrong root raises DatasetError naming the missing folder.
"""
from .folder import FolderSource, open_folder
from .readers import DatasetError, Item, Sample, SegmentationDataset, get_spec, open_dataset, read_label
from .specs import DATASETS, DatasetSpec, Layout, Part

__all__ = [
    "DATASETS", "DatasetError", "DatasetSpec", "FolderSource", "Item", "Layout", "Part", "Sample",
    "SegmentationDataset", "get_spec", "open_dataset", "open_folder", "read_label",
]
