"""The detector, as the paper builds it: backbone, feature pyramid, subnets, anchors, box coding and
matching, losses, and the RetinaNet that puts them together (``retinanet.py``)."""
