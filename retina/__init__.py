"""RetinaNet trainer for the focal-loss ablations: config, anchors, boxes, losses, model, data, training."""
