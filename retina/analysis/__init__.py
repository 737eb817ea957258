"""Analyses of trained detectors beyond the COCO metrics (Figure 4: the loss distribution)."""
