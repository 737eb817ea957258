"""Evaluation: prediction, pycocotools' COCO AP, and Figure 4's loss distribution."""
